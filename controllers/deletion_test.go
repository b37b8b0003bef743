package controllers

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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

// The finalizer is added and removed from a grant read from the cache. Another
// controller's finalizer (a backup tool's, a policy engine's, foregroundDeletion) that
// the cache does not show yet must survive both: a JSON merge patch replaces
// metadata.finalizers whole. Once the cache has caught up, ours is added or removed.
func TestAddingOrRemovingTheFinalizerKeepsAnotherControllersFinalizer(t *testing.T) {
	const other = "backup.example.com/hold"
	for name, deleting := range map[string]bool{"adding ours": false, "removing ours": true} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			g := w.grant("acme")
			w.update(g, func() {
				g.Spec.DeletionPolicy = cdv1.DeletionPolicyDelete
				if deleting {
					g.Finalizers = []string{deleteFinalizer}
				}
			})
			if deleting {
				if err := w.client.Delete(t.Context(), w.grant("acme")); err != nil {
					t.Fatal(err)
				}
			}
			w.lag(w.grant("acme")) // the cache as of now
			g = w.grant("acme")
			w.update(g, func() { g.Finalizers = append(g.Finalizers, other) }) // another controller
			_, _ = w.reconcileGrant("acme")                                    // a conflict is retried later
			got := &cdv1.CDUserGrant{}
			if err := w.client.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "acme"}, got); err != nil {
				t.Fatalf("the grant is gone (%v): the other controller's finalizer was dropped before it ran", err)
			}
			if !slices.Contains(got.Finalizers, other) {
				t.Fatalf("finalizers %v: the other controller's finalizer was dropped", got.Finalizers)
			}
			w.lag(&cdv1.CDUserGrant{}) // the cache catches up
			if _, err := w.reconcileGrant("acme"); err != nil {
				t.Fatal(err)
			}
			want := []string{other, deleteFinalizer}
			if deleting {
				want = []string{other}
			}
			if diff := cmp.Diff(want, w.grant("acme").Finalizers); diff != "" {
				t.Errorf("finalizers (-want +got):\n%s", diff)
			}
		})
	}
}

// deletionPolicy Delete promises a revocation. When it cannot be attempted, the grant's
// deletion still ends (a namespace being deleted must never wait on it), and a Warning
// says why, so nobody takes a session for revoked that is live at the identity server.
func TestARefreshTokenNotRevokedOnDeletionIsSaid(t *testing.T) {
	cases := map[string]struct {
		setup func(w *world)
		want  string // in the Warning's message
	}{
		// kubectl delete -f of the whole onboarding manifest.
		"the CDCredential is gone": {
			setup: func(w *world) {
				if err := w.client.Delete(w.t.Context(), w.cred("login")); err != nil {
					w.t.Fatal(err)
				}
			},
			want: "CDCredential login was not found",
		},
		"the CDCredential has no revocationURL": {
			setup: func(w *world) {
				c := w.cred("login")
				w.update(c, func() { c.Spec.RevocationURL = "" })
			},
			want: "CDCredential login has no revocationURL",
		},
		// kubectl delete namespace: the namespace controller deletes the Secrets while
		// the grant waits on its finalizer.
		"the refresh-token Secret is gone": {
			setup: func(w *world) {
				if err := w.client.Delete(w.t.Context(), w.secret("acme-refresh")); err != nil {
					w.t.Fatal(err)
				}
			},
			want: "its refresh-token Secret acme-refresh was not found",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			g := w.grant("acme")
			w.update(g, func() {
				g.Spec.DeletionPolicy = cdv1.DeletionPolicyDelete
				g.Finalizers = []string{deleteFinalizer}
			})
			tc.setup(w)
			if err := w.client.Delete(t.Context(), w.grant("acme")); err != nil {
				t.Fatal(err)
			}
			w.recorded()
			if _, err := w.reconcileGrant("acme"); err != nil {
				t.Fatal(err)
			}
			if err := w.client.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "acme"}, &cdv1.CDUserGrant{}); !apierrors.IsNotFound(err) {
				t.Errorf("the grant is still there (%v): its deletion waits on a revocation that cannot be", err)
			}
			if err := w.client.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "acme-refresh"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
				t.Errorf("the refresh-token Secret is still there (%v)", err)
			}
			if got := w.grants.Revoker.(*fakeRevoker).revoked; len(got) != 0 {
				t.Errorf("revoked %v", got)
			}
			evs := w.recorded()
			prefix := "Warning " + cdv1.RefreshTokenNotRevokedReason + " "
			if !slices.ContainsFunc(evs, func(e string) bool { return strings.HasPrefix(e, prefix) && strings.Contains(e, tc.want) }) {
				t.Errorf("no %q event saying %q; events: %v", prefix, tc.want, evs)
			}
		})
	}
}

// A sharded manager's cache holds only its shard's CRs: a grant's CDCredential left
// without the shard label is not in it, yet exists, and the deleted grant's refresh
// token is revoked there.
func TestADeletedGrantsTokenIsRevokedThoughItsCredentialIsOutsideTheShard(t *testing.T) {
	w := newWorld(t)
	g := w.grant("acme")
	w.update(g, func() {
		g.Spec.DeletionPolicy = cdv1.DeletionPolicyDelete
		g.Finalizers = []string{deleteFinalizer}
	})
	if err := w.client.Delete(t.Context(), w.grant("acme")); err != nil {
		t.Fatal(err)
	}
	w.grants.Client = credentialOutsideShardCache{w.client}
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"refresh-0"}, w.grants.Revoker.(*fakeRevoker).revoked); diff != "" {
		t.Errorf("revoked (-want +got):\n%s", diff)
	}
}

// A new refresh token held for a grant whose Secret went first (a namespace being
// deleted) has nowhere to be stored: it is revoked from memory, and nothing claims
// that a token went unrevoked with the Secret.
func TestAHeldTokenWhoseSecretWentFirstIsRevokedAndNotSaidUnrevoked(t *testing.T) {
	w := newWorld(t)
	w.grants.PersistTimeout = time.Second
	stop := advanceWhenWaited(w.clock)
	defer stop()
	g := w.grant("acme")
	w.update(g, func() { g.Spec.DeletionPolicy = cdv1.DeletionPolicyDelete })
	w.failStoringNewRefreshTokens()
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	w.setFault(nil)
	if err := w.client.Delete(t.Context(), w.secret("acme-refresh")); err != nil {
		t.Fatal(err)
	}
	if err := w.client.Delete(t.Context(), w.grant("acme")); err != nil {
		t.Fatal(err)
	}
	w.recorded()
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"refresh-1"}, w.grants.Revoker.(*fakeRevoker).revoked); diff != "" {
		t.Errorf("revoked (-want +got):\n%s", diff)
	}
	if evs := w.recorded(); slices.ContainsFunc(evs, func(e string) bool { return strings.Contains(e, cdv1.RefreshTokenNotRevokedReason) }) {
		t.Errorf("a revoked session is said unrevoked; events: %v", evs)
	}
	if err := w.client.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "acme"}, &cdv1.CDUserGrant{}); !apierrors.IsNotFound(err) {
		t.Errorf("the grant is still there (%v)", err)
	}
}
