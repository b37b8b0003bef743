package controllers

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// echoIssuer answers a refresh with the refresh token it was sent: Okta with
// "Rotate token after every use" off ("otherwise the same token again", README
// Providers), and any non-rotating server that echoes refresh_token back.
type echoIssuer struct{ *fakeIssuer }

func (e echoIssuer) Refresh(ctx context.Context, ep tokenclient.Endpoint, rt string) (*tokenclient.Token, error) {
	tok, err := e.fakeIssuer.Refresh(ctx, ep, rt)
	if tok != nil {
		tok.RefreshToken = rt
	}
	return tok, err
}

// A non-rotating server that returns the same refresh token in its answer spent
// nothing: its token must never be listed as spent, and the next renewal sends it.
func TestAnEchoedRefreshTokenIsNeverListedAsSpent(t *testing.T) {
	w := newWorld(t)
	w.grants.Tokens = echoIssuer{w.tokens}
	res, err := w.reconcileGrant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if got := w.secret("acme-refresh").Annotations[cdv1.SpentHashesAnnotation]; got != "" {
		t.Errorf("spent-hashes %q after a refresh whose answer carried the same (live) refresh token", got)
	}
	w.clock.Step(res.RequeueAfter)
	_, _ = w.reconcileGrant("acme")
	if diff := cmp.Diff([]string{"refresh-0", "refresh-0"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("refresh tokens sent (-want +got):\n%s", diff)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
}

// deleteAcmeWithDeletePolicy gives acme deletionPolicy Delete and the finalizer, and
// deletes it.
func deleteAcmeWithDeletePolicy(t *testing.T, w *world) {
	g := w.grant("acme")
	w.update(g, func() {
		g.Spec.DeletionPolicy = cdv1.DeletionPolicyDelete
		g.Finalizers = []string{deleteFinalizer}
	})
	if err := w.client.Delete(t.Context(), w.grant("acme")); err != nil {
		t.Fatal(err)
	}
}

func notRevokedWarnings(w *world) []string {
	var out []string
	for _, e := range w.recorded() {
		if strings.Contains(e, cdv1.RefreshTokenNotRevokedReason) {
			out = append(out, e)
		}
	}
	return out
}

// The pass that revoked the refresh token and deleted its Secret is run again before
// the finalizer is seen removed: the removal failed (an outage, the 422 the JSON patch
// is designed to meet), or, the common case, the Secret's delete event requeued the grant
// and the cache has not seen the finalizer's removal yet. The token was revoked: no
// Warning may say it was not.
func TestARevokedTokenIsNotSaidUnrevokedWhenTheDeletionPassRunsAgain(t *testing.T) {
	cases := map[string]func(w *world){
		"the finalizer's removal failed once": func(w *world) {
			failed := false
			w.setFault(func(verb string, obj client.Object) error {
				if verb == "patch" && obj.GetName() == "acme" && !failed {
					failed = true
					return apierrors.NewServiceUnavailable("etcd leader change")
				}
				return nil
			})
		},
		"the cache has not seen the finalizer's removal": func(w *world) {
			w.lag(w.grant("acme"))
		},
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			deleteAcmeWithDeletePolicy(t, w)
			setup(w)
			_, _ = w.reconcileGrant("acme")
			if got := w.grants.Revoker.(*fakeRevoker).revoked; len(got) != 1 || got[0] != "refresh-0" {
				t.Fatalf("setup: revoked %v, want [refresh-0]", got)
			}
			if got := notRevokedWarnings(w); len(got) != 0 {
				t.Fatalf("setup: %v", got)
			}
			_, _ = w.reconcileGrant("acme") // the requeue
			if got := notRevokedWarnings(w); len(got) != 0 {
				t.Errorf("refresh-0 was revoked by the first pass, yet: %q", got)
			}
		})
	}
}

// A Delete grant whose customer never logged in (the link expired, onboarding was
// abandoned) has no refresh token anywhere: its deletion must not warn that a session
// "stays valid at the identity server".
func TestAGrantThatNeverHadATokenIsNotSaidUnrevoked(t *testing.T) {
	w := newWorld(t)
	if err := w.client.Delete(t.Context(), w.secret("acme-refresh")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.reconcileGrant("acme"); err != nil { // AwaitingAuthorization
		t.Fatal(err)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenMissingReason)
	w.recorded()
	deleteAcmeWithDeletePolicy(t, w)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if got := notRevokedWarnings(w); len(got) != 0 {
		t.Errorf("the customer never logged in, yet: %q", got)
	}
}
