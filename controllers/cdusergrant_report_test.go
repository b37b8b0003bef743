package controllers

import (
	"testing"
	"time"
)

// TestADeferredGrantEditLeavesKubectlWaitWaitingForItsToken: as for a CDCredential
// (TestADeferredEditLeavesKubectlWaitWaitingForItsToken), a grant's edit whose token
// waits, for the request budget or for another process's rotation of the refresh token,
// leaves Ready=True reporting the generation of the token in the Secret, so
// `kubectl wait --for=condition=Ready` waits for the edit's token.
func TestADeferredGrantEditLeavesKubectlWaitWaitingForItsToken(t *testing.T) {
	for name, meanwhile := range map[string]func(w *world){
		"the request budget":                         func(*world) {},
		"another process rotating the refresh token": func(w *world) { w.mark("other-replica", w.clock.Now(), 1) },
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			if _, err := w.reconcileGrant("acme"); err != nil {
				t.Fatal(err)
			}
			w.clock.Step(time.Minute)
			g := w.grant("acme")
			w.update(g, func() { g.Spec.SecretName = "acme-out"; g.Generation++ })
			meanwhile(w)
			if _, err := w.reconcileGrant("acme"); err != nil {
				t.Fatal(err)
			}
			if n := len(w.tokens.refreshes()); n != 1 {
				t.Fatalf("%d refresh tokens sent, want 1: the edit's token waits", n)
			}
			g = w.grant("acme")
			wantDeferredEdit(t, g, g.Status.ObservedGeneration, g.Status.Conditions)
		})
	}
}
