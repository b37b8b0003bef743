package controllers

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// dropAnsweredReauthorization removes a reauthorization request a stored login already
// answered. The callback removes it once it has stored the new refresh token; when that
// write fails (an API server hiccup), the login still succeeded and the request must not
// keep the grant asking for another one.
func (r *CDUserGrantReconciler) dropAnsweredReauthorization(ctx context.Context, grant *cdv1.CDUserGrant) error {
	if !answeredReauthorization(grant) {
		return nil
	}
	// Guarded: a request made again since this read is not the answered one.
	patch := client.MergeFromWithOptions(grant.DeepCopy(), client.MergeFromWithOptimisticLock{})
	delete(grant.Annotations, cdv1.ReauthorizeAnnotation)
	return r.Patch(ctx, grant, patch)
}

// answeredReauthorization tells whether a grant's reauthorization request was answered:
// status.lastAuthorization is a successful login (CustomerAuthorized) from no earlier
// than the request (the annotation's time, from the requester's clock) and than
// ReauthorizationRequired last turned True (this operator's clock, which also stamps
// logins). Both must hold: a login from before the request does not answer it, whatever
// the requester's clock says. A request whose time cannot be read is never dropped.
func answeredReauthorization(grant *cdv1.CDUserGrant) bool {
	value, requested := grant.Annotations[cdv1.ReauthorizeAnnotation]
	a := grant.Status.LastAuthorization
	waiting := meta.FindStatusCondition(grant.Status.Conditions, cdv1.ReauthorizationRequiredCondition)
	if !requested || a == nil || a.Reason != cdv1.CustomerAuthorizedReason || waiting == nil || waiting.Status != metav1.ConditionTrue {
		return false
	}
	asked, err := time.Parse(time.RFC3339, value)
	return err == nil && !a.Time.Time.Before(asked) && !a.Time.Time.Before(waiting.LastTransitionTime.Truncate(time.Second))
}
