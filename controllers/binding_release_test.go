package controllers

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/secrets"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// hookIssuer runs hook once, on the first refresh, while that request is out (before
// the token endpoint answers it).
type hookIssuer struct {
	*fakeIssuer
	hook func()
}

func (h *hookIssuer) Refresh(ctx context.Context, e tokenclient.Endpoint, rt string) (*tokenclient.Token, error) {
	if f := h.hook; f != nil {
		h.hook = nil
		f()
	}
	return h.fakeIssuer.Refresh(ctx, e, rt)
}

// Grant acme marks acme-refresh and sends refresh-0. While that request is out, acme's
// spec moves to acme-refresh-2 and beta is edited to name acme-refresh. acme holds no
// successor yet (the answer has not come); the first version of the release rule freed
// the Secret, and beta, in the same process, took acme's mark for its own and sent
// refresh-0 a second time while the first send was still unanswered. The mark holds the
// binding.
func TestABindingIsNotReleasedWhileItsGrantsRefreshIsOut(t *testing.T) {
	w := newWorld(t,
		optedIn(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme-refresh-2"},
			Data: map[string][]byte{"refresh_token": []byte("login-2")}}, cdv1.SecretTypeRefreshToken),
		grantObj("beta", "beta-refresh"))
	w.grants.Tokens = &hookIssuer{fakeIssuer: w.tokens, hook: func() {
		g := w.grant("acme")
		w.update(g, func() { g.Spec.RefreshTokenSecretRef.Name = "acme-refresh-2" })
		b := w.grant("beta")
		w.update(b, func() { b.Spec.RefreshTokenSecretRef.Name = "acme-refresh" })
		if _, err := w.grants.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "beta"}}); err != nil {
			t.Logf("beta: %v", err)
		}
	}}
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Logf("acme: %v", err)
	}
	sent := w.tokens.refreshes()
	n := 0
	for _, s := range sent {
		if s == "refresh-0" {
			n++
		}
	}
	if n > 1 {
		t.Errorf("refresh-0 sent %d times (%v): beta resent acme's token while acme's request was still out", n, sent)
	}
	t.Logf("acme-refresh now: data=%s annotations=%v", w.secret("acme-refresh").Data["refresh_token"], w.secret("acme-refresh").Annotations)
	t.Logf("beta Ready: %+v", condition(t, w.grant("beta").Status.Conditions, cdv1.ReadyCondition))
	t.Logf("acme Ready: %+v", condition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition))
}

// acme rotated acme-refresh and stored its successor (nothing held), then moved to
// acme-refresh-2. The customer's session in acme-refresh ends (the token is removed:
// an empty Secret prepared for beta's customer). beta, now naming acme-refresh, is
// released the Secret by the controller and offered a login link; the callback must
// then be able to store beta's login in it, or the link is a dead end (HTTP 409
// RefreshTokenSecretConflict, "not this grant's refresh-token Secret") for as long as
// acme exists.
func TestALinkTheControllerOffersForAReleasedSecretIsNotRefusedByTheCallback(t *testing.T) {
	w := newWorld(t,
		optedIn(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme-refresh-2"},
			Data: map[string][]byte{"refresh_token": []byte("login-2")}}, cdv1.SecretTypeRefreshToken),
		grantObj("beta", "beta-refresh"))
	w.grants.Authorizer = fixedAuthorizer{}
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	g := w.grant("acme")
	w.update(g, func() { g.Spec.RefreshTokenSecretRef.Name = "acme-refresh-2" })
	s := w.secret("acme-refresh")
	w.update(s, func() { s.Data = map[string][]byte{} })
	b := w.grant("beta")
	w.update(b, func() { b.Spec.RefreshTokenSecretRef.Name = "acme-refresh" })
	_, _ = w.reconcileGrant("beta")
	b = w.grant("beta")
	ready := condition(t, b.Status.Conditions, cdv1.ReadyCondition)
	t.Logf("beta Ready %s/%s, authorizationURL %q", ready.Status, ready.Reason, b.Status.AuthorizationURL)
	if b.Status.AuthorizationURL == "" {
		t.Fatalf("beta, naming a Secret no grant holds, was offered no login link (Ready %s/%s)", ready.Status, ready.Reason)
	}
	// The callback's rule (onboarding.Callback.notWritable, checkTarget and writeRefresh),
	// which cannot see the reconciler's held results.
	elsewhere, err := secrets.BoundElsewhere(context.Background(), w.client, b, w.secret("acme-refresh"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if elsewhere {
		t.Errorf("beta is offered a login link (Ready %s), but the callback refuses to store its login in acme-refresh: bound to acme, which exists and names another Secret", ready.Reason)
	}
}

// Grant acme (deletionPolicy Retain) marks acme-refresh and sends refresh-0. While that
// request is out, acme goes: deleted, its Secret named by beta (a GitOps rename), or
// deleted and created again under its name (kubectl replace --force). The binding is
// to a grant that no longer exists, so the pass that takes the Secret over finds
// acme's mark, with this process as its holder, and took it for an interrupted rotation
// of its own: it resent refresh-0 while the first send was unanswered. It waits now,
// and takes the Secret over with the successor once acme's pass stored it.
func TestARefreshOutForAGoneGrantIsNotResentByTheGrantTakingItsSecretOver(t *testing.T) {
	cases := map[string]struct {
		// takeOver removes acme while its request is out and names the grant that
		// takes acme-refresh over.
		takeOver func(w *world) string
	}{
		"another grant naming the Secret, once acme is deleted": {
			takeOver: func(w *world) string {
				if err := w.client.Delete(context.Background(), w.grant("acme")); err != nil {
					t.Fatal(err)
				}
				return "beta"
			},
		},
		"acme replaced under its name by a new UID": {
			takeOver: func(w *world) string {
				if err := w.client.Delete(context.Background(), w.grant("acme")); err != nil {
					t.Fatal(err)
				}
				g := grantObj("acme", "acme-refresh")
				g.UID = "uid-acme-2"
				if err := w.client.Create(context.Background(), g); err != nil {
					t.Fatal(err)
				}
				return "acme"
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t, grantObj("beta", "acme-refresh"))
			var taker string
			var held reconcile.Result
			var reconciling *metav1.Condition
			w.grants.Tokens = &hookIssuer{fakeIssuer: w.tokens, hook: func() {
				taker = tc.takeOver(w)
				res, err := w.grants.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: taker}})
				if err != nil {
					t.Errorf("%s's pass while acme's request was out: %v", taker, err)
				}
				held = res
				// Read before acme's pass ends: its own status write follows.
				reconciling = meta.FindStatusCondition(w.grant(taker).Status.Conditions, cdv1.ReconcilingCondition)
			}}
			_, _ = w.reconcileGrant("acme") // its status has nowhere to go
			if sent := w.tokens.refreshes(); !slices.Equal(sent, []string{"refresh-0"}) {
				t.Fatalf("sent %v, want refresh-0 once: %s resent the token while acme's request was out", sent, taker)
			}
			if held.RequeueAfter != 5*time.Second {
				t.Errorf("%s's pass while acme's request was out requeued after %v, want 5s (nothing else brings it back)", taker, held.RequeueAfter)
			}
			if reconciling == nil || reconciling.Status != metav1.ConditionTrue {
				t.Errorf("%s while acme's request was out: Reconciling %+v, want True (waiting for that rotation)", taker, reconciling)
			}

			// acme's pass stored the successor: the next pass takes the Secret over. The
			// output Secret of the old UID is the garbage collector's, as at any
			// replacement (the fake API server has none).
			if out := w.secret("acme-token"); metav1.GetControllerOf(out).UID == "uid-acme" {
				if err := w.client.Delete(context.Background(), out); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := w.reconcileGrant(taker); err != nil {
				t.Fatal(err)
			}
			if sent := w.tokens.refreshes(); !slices.Equal(sent, []string{"refresh-0", "refresh-1"}) {
				t.Errorf("sent %v, want refresh-0 then its successor refresh-1", sent)
			}
			g := w.grant(taker)
			wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
			if !secrets.BoundTo(w.secret("acme-refresh"), g) {
				t.Errorf("acme-refresh bound to %+v, want %s (%s)", secrets.BindingOf(w.secret("acme-refresh")), taker, g.UID)
			}
		})
	}
}
