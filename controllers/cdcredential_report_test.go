package controllers

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
)

// An edit deferred after a failure says when it goes in terms of status fields, as
// rotation's tooSoonAfterFailure holds it: a third of the lifetime after the failure at
// the latest, or the end of a backoff that ends later (a retried failure only). It leaves
// status.renewalTime to the token's schedule, which the expiry alert reads.
func TestADeferredEditAfterAFailureNamesTheFieldsThatHoldItsTime(t *testing.T) {
	failed := epoch.Add(time.Minute)
	cases := map[string]struct {
		failure rotation.Failure
		want    string
	}{
		"terminal": {
			rotation.Failure{Reason: cdv1.RefreshTokenRefusedReason, Time: failed, Attempts: 3},
			"The last request failed (RefreshTokenRefused); the spec changed since, and the request for it is sent no later than 10m0s after status.lastFailure.lastFailureTime (at most 3 requests per token lifetime)",
		},
		"retried": {
			rotation.Failure{Reason: cdv1.RefreshTokenRefusedReason, Time: failed, Attempts: 1, Retry: failed.Add(20 * time.Minute)},
			"The last request failed (RefreshTokenRefused); the spec changed since, and the request for it is sent no later than 10m0s after status.lastFailure.lastFailureTime, or at status.lastFailure.retryTime if that is later (at most 3 requests per token lifetime)",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var list []metav1.Condition
			c := newConditions(&list, 1, failed.Add(time.Minute))
			renewal := &metav1.Time{Time: epoch.Add(20 * time.Minute)}
			was := renewal
			reportDeferred(c, deferred{until: failed.Add(10 * time.Minute), afterFailure: true, failure: &tc.failure}, "acme-token", &renewal, 30*time.Minute)
			if got := condition(t, list, cdv1.ReconcilingCondition); got.Status != metav1.ConditionTrue || got.Message != tc.want {
				t.Errorf("Reconciling %s %q, want True %q", got.Status, got.Message, tc.want)
			}
			if renewal != was {
				t.Errorf("renewalTime %v, want %v: the token's schedule", renewal, was)
			}
		})
	}
}

// TestADeferredEditLeavesKubectlWaitWaitingForItsToken: `kubectl apply` of new
// spec.scopes, then `kubectl wait --for=condition=Ready`. The token for the new scopes is
// held back by the request budget (here until a third of the lifetime has passed): Ready
// stays True on the token in the Secret, which still works, but it reports the
// generation that token was issued for, so kubectl wait (which skips a condition whose
// observedGeneration is below metadata.generation) waits for the new token instead of
// letting the next step of a pipeline run against one that lacks the new scopes.
// Reconciling=True, stamped with the new generation, says the work is pending, and keeps
// kstatus InProgress with status.observedGeneration at the new generation. A client
// shared across flows words Ready anew on every pass (reportFlowMisuse): the same holds.
func TestADeferredEditLeavesKubectlWaitWaitingForItsToken(t *testing.T) {
	for name, setup := range map[string]func(t *testing.T) *world{
		"an own client": func(t *testing.T) *world {
			w := newWorld(t)
			if _, err := w.reconcileCred("pricing"); err != nil {
				t.Fatal(err)
			}
			c := w.cred("pricing")
			w.update(c, func() { c.Spec.Scopes = []string{"marketplace"}; c.Generation++ })
			return w
		},
		"a client shared across flows": sharedClientWorld,
	} {
		t.Run(name, func(t *testing.T) {
			w := setup(t)
			w.clock.Step(time.Minute)
			if _, err := w.reconcileCred("pricing"); err != nil {
				t.Fatal(err)
			}
			c := w.cred("pricing")
			if n := w.tokens.ccCount(); n != 1 {
				t.Fatalf("%d token requests, want 1: the edit is deferred", n)
			}
			wantDeferredEdit(t, c, c.Status.ObservedGeneration, c.Status.Conditions)
		})
	}
}

// wantDeferredEdit fails unless obj, generation 2 whose token waits while the token of
// generation 1 is in the Secret, reads as such: Ready=True for generation 1 (kubectl
// wait waits), Reconciling=True for generation 2 (kstatus: InProgress), and
// status.observedGeneration at 2.
func wantDeferredEdit(t *testing.T, obj metav1.Object, observedGeneration int64, conds []metav1.Condition) {
	t.Helper()
	if obj.GetGeneration() != 2 {
		t.Fatalf("generation %d, want 2", obj.GetGeneration())
	}
	ready := condition(t, conds, cdv1.ReadyCondition)
	if kubectlWaitReady(obj, observedGeneration, conds) {
		t.Errorf("generation 2, whose token is not requested yet: `kubectl wait --for=condition=Ready` succeeds (Ready=%s %s, observedGeneration %d: %q)", ready.Status, ready.Reason, ready.ObservedGeneration, ready.Message)
	}
	if ready.Status != metav1.ConditionTrue || ready.ObservedGeneration != 1 {
		t.Errorf("Ready=%s observedGeneration %d, want True for generation 1: the token in the Secret still works", ready.Status, ready.ObservedGeneration)
	}
	if rc := meta.FindStatusCondition(conds, cdv1.ReconcilingCondition); rc == nil || rc.Status != metav1.ConditionTrue || rc.ObservedGeneration != 2 {
		t.Errorf("Reconciling %+v, want True for generation 2: the request for it is pending", rc)
	}
	if observedGeneration != 2 {
		t.Errorf("status.observedGeneration %d, want 2: the operator has seen the edit (Reconciling says what is pending)", observedGeneration)
	}
	if got := kstatusOf(obj, observedGeneration, conds); got != "InProgress" {
		t.Errorf("kstatus %s, want InProgress while the edit's token waits", got)
	}
}

// TestReadyCatchesUpWithTheGenerationOnceItsTokenIsIssued: once the request budget lets
// the deferred edit's token out, Ready reports the new generation and kubectl wait
// returns; kstatus is Current.
func TestReadyCatchesUpWithTheGenerationOnceItsTokenIsIssued(t *testing.T) {
	for name, kind := range map[string]struct {
		pass func(w *world) (ctrl.Result, error)
		edit func(w *world)
		get  func(w *world) (metav1.Object, int64, []metav1.Condition)
	}{
		"CDCredential": {
			pass: func(w *world) (ctrl.Result, error) { return w.reconcileCred("pricing") },
			edit: func(w *world) {
				c := w.cred("pricing")
				w.update(c, func() { c.Spec.Scopes = []string{"marketplace"}; c.Generation++ })
			},
			get: func(w *world) (metav1.Object, int64, []metav1.Condition) {
				c := w.cred("pricing")
				return c, c.Status.ObservedGeneration, c.Status.Conditions
			},
		},
		"CDUserGrant": {
			pass: func(w *world) (ctrl.Result, error) { return w.reconcileGrant("acme") },
			edit: func(w *world) {
				g := w.grant("acme")
				w.update(g, func() { g.Spec.SecretName = "acme-out"; g.Generation++ })
			},
			get: func(w *world) (metav1.Object, int64, []metav1.Condition) {
				g := w.grant("acme")
				return g, g.Status.ObservedGeneration, g.Status.Conditions
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			if _, err := kind.pass(w); err != nil {
				t.Fatal(err)
			}
			w.clock.Step(time.Minute)
			kind.edit(w)
			res, err := kind.pass(w)
			if err != nil {
				t.Fatal(err)
			}
			obj, og, conds := kind.get(w)
			wantDeferredEdit(t, obj, og, conds)

			w.clock.Step(res.RequeueAfter)
			if _, err := kind.pass(w); err != nil {
				t.Fatal(err)
			}
			obj, og, conds = kind.get(w)
			ready := condition(t, conds, cdv1.ReadyCondition)
			if !kubectlWaitReady(obj, og, conds) || ready.ObservedGeneration != 2 || ready.Reason != cdv1.TokenIssuedReason {
				t.Errorf("after the deferred token was issued: Ready=%s %s observedGeneration %d (kubectl wait done: %v), want True TokenIssued for generation 2", ready.Status, ready.Reason, ready.ObservedGeneration, kubectlWaitReady(obj, og, conds))
			}
			if got := kstatusOf(obj, og, conds); got != "Current" {
				t.Errorf("kstatus %s after the deferred token was issued, want Current", got)
			}
		})
	}
}
