package controllers

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	ctrl "sigs.k8s.io/controller-runtime"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// offerAuthorization shows a grant that needs a customer login where to log in, and
// comes back before that link expires; a grant that needs none shows no link. Without a
// callback server it changes nothing. A stalled grant that offers a link is not
// terminal: it waits for the customer, and its link must be renewed.
func (r *CDUserGrantReconciler) offerAuthorization(grant *cdv1.CDUserGrant, cred *cdv1.CDCredential, res ctrl.Result, err error) (ctrl.Result, error) {
	needed := meta.IsStatusConditionTrue(grant.Status.Conditions, cdv1.ReauthorizationRequiredCondition)
	if r.Authorizer == nil || cred == nil || cred.Status.ClientID == "" || !needed {
		grant.Status.AuthorizationURL = ""
		return res, err
	}
	now := r.Clock.Now()
	// The link this process wrote last, not an older one a lagging cache still shows:
	// the customer may already be holding it.
	current := r.links.current(grant, grant.Status.AuthorizationURL)
	url, expires := r.Authorizer.AuthorizationURL(grant, cred, cred.Status.ClientID, current, now)
	grant.Status.AuthorizationURL = url
	// The grant waits for the customer, not for a retry: a stalled grant still sends
	// nothing, but its link is renewed before it expires.
	refresh := max(expires.Add(-time.Minute).Sub(now), time.Second)
	if res.RequeueAfter == 0 || refresh < res.RequeueAfter {
		res.RequeueAfter = refresh
	}
	return res, nil
}
