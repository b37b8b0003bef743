package controllers

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// Edge cases of the request budget (DESIGN §4, §8: at most 3 token requests per lifetime
// for any CR, whatever its spec says), each found by review.

// The pass that stops on a precondition (here a credentialRef naming no CDCredential)
// must not take a rename made in the same edit for done: status keeps naming the Secret
// that holds the token, so the pass after the edit that lifts the stop still sees the
// rename. Otherwise two edits get one refresh, over and over.
func TestARenameMadeWithAnEditThatStopsThePassIsStillHeldToTheRequestBudget(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	w.editForALifetime(func(i int) {
		g := w.grant("acme")
		w.update(g, func() {
			if i%2 == 0 {
				g.Spec.CredentialRef.Name = "nope"
				g.Spec.SecretName = fmt.Sprintf("acme-out-%d", i)
			} else {
				g.Spec.CredentialRef.Name = "login"
			}
			g.Generation++
		})
	}, w.reconcileGrant, "acme")
	if n := len(w.tokens.refreshes()); n > 3 {
		t.Errorf("%d refresh requests in one 30-minute lifetime of edits every 20 s, want at most 3 (DESIGN §4, §8)", n)
	}
}

// Review: the same for a CDCredential, stopped by a secretTemplate that admission lets
// through and ValidateTemplate refuses (a label prefix over 253 characters).

// The same for a CDCredential, stopped by a secretTemplate that admission lets through
// and ValidateTemplate refuses (a label prefix over 253 characters).
func TestACredentialRenameMadeWithAnInvalidTemplateIsStillHeldToTheRequestBudget(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + "." + strings.Repeat("d", 60) + "." + strings.Repeat("e", 20) + "/x"
	w.editForALifetime(func(i int) {
		c := w.cred("pricing")
		w.update(c, func() {
			if i%2 == 0 {
				c.Spec.SecretTemplate = &cdv1.SecretTemplate{Labels: map[string]cdv1.LabelValue{long: "v"}}
				c.Spec.SecretName = fmt.Sprintf("pricing-out-%d", i)
			} else {
				c.Spec.SecretTemplate = nil
			}
			c.Generation++
		})
	}, func(name string) (ctrl.Result, error) {
		res, err := w.reconcileCred(name)
		if errors.Is(err, reconcile.TerminalError(nil)) {
			err = nil // SecretTemplateInvalid is terminal
		}
		return res, err
	}, "pricing")
	if n := w.tokens.ccCount(); n > 3 {
		t.Errorf("%d client-credentials requests in one 30-minute lifetime of edits every 20 s, want at most 3 (DESIGN §4, §8)", n)
	}
}

// The request budget after a failure must not outlast the token pods have: a renewal
// that failed late in the token's life (502s until 10:22 for a token that expires at
// 10:30), then an edit that fixes it, is sent before the token in the Secret expires,
// not a third of the lifetime after the failure.
func TestAnEditAfterALateFailedRenewalGetsATokenBeforeTheOldOneExpires(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	expires := w.cred("pricing").Status.ExpiresAt.Time
	w.clock.SetTime(w.cred("pricing").Status.RenewalTime.Time)
	// The renewal fails (a 502) until 10:22.
	for w.clock.Now().Before(epoch.Add(22 * time.Minute)) {
		w.tokens.failNext(badGateway)
		res, err := w.reconcileCred("pricing")
		if err != nil {
			t.Fatal(err)
		}
		if res.RequeueAfter <= 0 {
			t.Fatalf("no requeue after a 502")
		}
		w.clock.Step(res.RequeueAfter)
	}
	sent := w.tokens.ccCount()
	// The admin edits the spec: the next request must still come before the token expires.
	c := w.cred("pricing")
	w.update(c, func() { c.Spec.Scopes = []string{"pricing:read"}; c.Generation++ })
	res, err := w.reconcileCred("pricing")
	if err != nil {
		t.Fatal(err)
	}
	next := w.clock.Now().Add(res.RequeueAfter)
	if w.tokens.ccCount() == sent && !next.Before(expires) {
		t.Errorf("after the edit at %s no request is sent until %s; the token in pricing-token expires at %s (Reconciling: %q)",
			w.clock.Now().Format("15:04:05"), next.Format("15:04:05"), expires.Format("15:04:05"),
			condition(t, w.cred("pricing").Status.Conditions, cdv1.ReconcilingCondition).Message)
	}
	w.clock.SetTime(expires.Add(time.Second))
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	if w.tokens.ccCount() == sent {
		t.Errorf("the token in pricing-token expired at %s and no request was sent for it", expires.Format("15:04:05"))
	}
}

// A new CDCredential that takes over an orphaned output (its CR was deleted with
// --cascade=orphan) issued for another request gets its first token at once, as a new
// grant does: the orphan's token is not this CR's and does not hold it to the budget.
func TestANewCredentialAdoptingAnOrphanedOutputGetsItsFirstTokenAtOnce(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	out := w.secret("pricing-token")
	out.OwnerReferences = nil // kubectl delete --cascade=orphan
	if err := w.client.Update(t.Context(), out); err != nil {
		t.Fatal(err)
	}
	if err := w.client.Delete(t.Context(), w.cred("pricing")); err != nil {
		t.Fatal(err)
	}
	w.clock.Step(time.Minute)
	fresh := &cdv1.CDCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pricing", UID: "uid-pricing-2", Generation: 1},
		Spec:       cdv1.CDCredentialSpec{Flow: cdv1.FlowClientCredentials, ClientSecretRef: cdv1.ClientSecretReference{Name: "pricing-client"}, Issuer: "https://id.example.com", Scopes: []string{"pricing:read"}},
	}
	if err := w.client.Create(t.Context(), fresh); err != nil {
		t.Fatal(err)
	}
	res, err := w.reconcileCred("pricing")
	if err != nil {
		t.Fatal(err)
	}
	if n := w.tokens.ccCount(); n != 2 {
		c := w.cred("pricing")
		t.Errorf("%d client-credentials requests, want 2: the new CR's first token was not requested (requeue %s); Ready %+v; Reconciling %+v",
			n, res.RequeueAfter, condition(t, c.Status.Conditions, cdv1.ReadyCondition), condition(t, c.Status.Conditions, cdv1.ReconcilingCondition))
	}
	if s := w.secret("pricing-token"); !metav1.IsControlledBy(s, w.cred("pricing")) {
		t.Errorf("the output is still the orphan, with another request's token: owners %v, scope %q", s.OwnerReferences, s.Data[cdv1.ScopeKey])
	}
}
