package controllers

import (
	"strings"
	"testing"
	"time"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/onboarding"
)

// A grant keeps the link it shows while it has more than a minute left, and comes back
// a minute before it expires. With links of a minute or less no link was ever kept:
// every pass of a grant waiting for its customer minted a new one, wrote status and
// came back a second later, for as long as the customer took. The manager refuses such
// an --authorization-link-ttl; an Authorizer given one makes its links MinStateTTL long.
func TestAShortAuthorizationLinkTTLDoesNotRewriteStatusEverySecond(t *testing.T) {
	w := newWorld(t)
	signer, err := onboarding.NewSigner([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	w.grants.Authorizer = &onboarding.Authorizer{Signer: signer, CallbackURL: "https://cb.example.com/callback", StateTTL: time.Minute}
	g := w.grant("acme")
	w.update(g, func() { g.Annotations = map[string]string{cdv1.ReauthorizeAnnotation: epoch.Format(time.RFC3339)} })
	statusWrites := 0
	for i := range 10 {
		res, err := w.reconcileGrant("acme")
		if err != nil {
			t.Fatal(err)
		}
		for _, wr := range w.takeWrites() {
			if strings.HasPrefix(wr, "status ") {
				statusWrites++
			}
		}
		if i == 0 && w.grant("acme").Status.AuthorizationURL == "" {
			t.Fatal("no authorization link offered")
		}
		w.clock.Step(res.RequeueAfter)
	}
	// The first pass writes the token and the first link; then one new link a minute.
	if elapsed := w.clock.Since(epoch); statusWrites > 1+int(elapsed/time.Minute) {
		t.Errorf("%d status writes in 10 passes over %s: a new authorization link on nearly every pass", statusWrites, elapsed)
	}
}
