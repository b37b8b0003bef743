package controllers

import (
	"errors"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// A customer who logs in again after a refusal holds a refresh token the identity server
// has just accepted, even while the write of the access token it brought is refused (a
// quota, an admission policy). ReauthorizationRequired must stop saying the customer has
// to log in (no login link is offered again), and Ready names the write: CDTokenExpiresSoon
// leaves a grant alone only while Ready and ReauthorizationRequired both name the refusal,
// so this one pages on call, who can lift the quota. Before, the write's failure kept the
// refusal standing.
func TestALoginAfterARefusalClearsReauthorizationWhileTheOutputWriteFails(t *testing.T) {
	w := newWorld(t)
	w.tokens.failNext(invalidGrant)
	if _, err := w.reconcileGrant("acme"); !errors.Is(err, reconcile.TerminalError(nil)) {
		t.Fatalf("err %v, want a terminal error", err)
	}
	conds := w.grant("acme").Status.Conditions
	// The alert's rule reads the refusal from both conditions.
	wantCondition(t, conds, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.RefreshTokenRejectedReason)
	wantCondition(t, conds, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenRejectedReason)

	w.login("new-login")
	quota := apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "acme-token", errors.New("exceeded quota: secrets"))
	w.setFault(func(verb string, obj client.Object) error {
		if obj.GetName() == "acme-token" {
			return quota
		}
		return nil
	})
	_, _ = w.reconcileGrant("acme")
	if sent := w.tokens.refreshes(); len(sent) != 2 || sent[1] != "new-login" {
		t.Fatalf("sent %v, want the new login's token after the refused one", sent)
	}
	conds = w.grant("acme").Status.Conditions
	wantCondition(t, conds, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretWriteFailedReason)
	wantCondition(t, conds, cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenValidReason)
}
