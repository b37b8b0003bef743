package controllers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// A grant created with deletionPolicy Delete carries the finalizer. The platform team
// switches it to Retain (to keep the customer's session, e.g. to move the grant) and
// deletes it at once, or while the operator is down, so the edit was never reconciled
// and the finalizer is still on. The spec at deletion says Retain: the refresh token is
// neither revoked nor deleted, a new one still held is stored, and the finalizer goes.
func TestAGrantSwitchedToRetainBeforeItsFinalizerWasDroppedKeepsItsSession(t *testing.T) {
	cases := map[string]struct {
		held      bool
		wantToken string
	}{
		"nothing held: the stored token stays":             {wantToken: "refresh-0"},
		"a new refresh token held: it is stored, not lost": {held: true, wantToken: "refresh-1"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			w.grants.PersistTimeout = time.Second
			stop := advanceWhenWaited(w.clock)
			defer stop()
			g := w.grant("acme")
			w.update(g, func() {
				g.Spec.DeletionPolicy = cdv1.DeletionPolicyDelete
				g.Finalizers = []string{deleteFinalizer} // put there by an earlier pass
			})
			if tc.held {
				w.failStoringNewRefreshTokens()
				if _, err := w.reconcileGrant("acme"); err != nil {
					t.Fatal(err)
				}
				if !w.grants.held.has("uid-acme") {
					t.Fatal("setup: no refresh token held")
				}
			}
			// kubectl patch ... deletionPolicy: Retain && kubectl delete, before any pass ran.
			w.update(g, func() { g.Spec.DeletionPolicy = cdv1.DeletionPolicyRetain })
			if err := w.client.Delete(t.Context(), w.grant("acme")); err != nil {
				t.Fatal(err)
			}
			w.setFault(nil)
			if _, err := w.reconcileGrant("acme"); err != nil {
				t.Fatal(err)
			}
			if got := w.grants.Revoker.(*fakeRevoker).revoked; len(got) != 0 {
				t.Errorf("deletionPolicy is Retain, yet the customer's session was revoked: %v", got)
			}
			s := &corev1.Secret{}
			if err := w.client.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "acme-refresh"}, s); err != nil {
				t.Fatalf("deletionPolicy is Retain, yet the customer's refresh-token Secret is gone: %v", err)
			}
			if got := string(s.Data["refresh_token"]); got != tc.wantToken {
				t.Errorf("the retained Secret holds %q, want %q", got, tc.wantToken)
			}
			if err := w.client.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "acme"}, &cdv1.CDUserGrant{}); !apierrors.IsNotFound(err) {
				t.Errorf("the grant is still there (%v): its finalizer was not removed", err)
			}
		})
	}
}
