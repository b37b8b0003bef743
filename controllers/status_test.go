package controllers

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/statuspatch"
)

func TestAStatusPatchMakesWhatMergeFromMakesOfTheStatus(t *testing.T) {
	at := metav1.NewTime(epoch)
	later := metav1.NewTime(epoch.Add(time.Hour))
	ready := metav1.Condition{Type: cdv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: cdv1.TokenIssuedReason, LastTransitionTime: at}
	for _, tc := range []struct {
		name   string
		before cdv1.CDUserGrantStatus
		edit   func(*cdv1.CDUserGrantStatus)
	}{
		{"a first rotation sets times, counts and a condition", cdv1.CDUserGrantStatus{}, func(s *cdv1.CDUserGrantStatus) {
			s.ExpiresAt, s.RenewalTime, s.RotationCount = &later, &at, 1
			s.Conditions = []metav1.Condition{ready}
		}},
		{"a remembered failure that clears is removed", cdv1.CDUserGrantStatus{LastFailure: &cdv1.FailureStatus{Reason: "X", FailedAttempts: 2}}, func(s *cdv1.CDUserGrantStatus) {
			s.LastFailure = nil
		}},
		{"a routine rotation moves the times and the count", cdv1.CDUserGrantStatus{ExpiresAt: &at, RotationCount: 7, Conditions: []metav1.Condition{ready}}, func(s *cdv1.CDUserGrantStatus) {
			s.ExpiresAt, s.RotationCount = &later, 8
		}},
		{"a remembered failure loses a field and changes another", cdv1.CDUserGrantStatus{LastFailure: &cdv1.FailureStatus{Reason: "X", FailedAttempts: 2, RetryTime: &later}}, func(s *cdv1.CDUserGrantStatus) {
			s.LastFailure = &cdv1.FailureStatus{Reason: "Y", FailedAttempts: 3}
		}},
		{"a failure is remembered", cdv1.CDUserGrantStatus{RotationCount: 3}, func(s *cdv1.CDUserGrantStatus) {
			s.LastFailure = &cdv1.FailureStatus{Reason: "X", FailedAttempts: 1}
		}},
		{"a condition goes, scopes shrink and the count is reset", cdv1.CDUserGrantStatus{RotationCount: 3, GrantedScopes: []string{"a", "b"}, Conditions: []metav1.Condition{ready}}, func(s *cdv1.CDUserGrantStatus) {
			s.RotationCount, s.GrantedScopes, s.Conditions = 0, []string{"a"}, nil
		}},
		{"a time that moves within its second is sent as it was, unlike one that moves a second", cdv1.CDUserGrantStatus{ExpiresAt: &at, RenewalTime: &at}, func(s *cdv1.CDUserGrantStatus) {
			within, next := metav1.NewTime(epoch.Add(400*time.Millisecond)), metav1.NewTime(epoch.Add(time.Second))
			s.ExpiresAt, s.RenewalTime = &within, &next
		}},
		{"empty scopes are left out as encoding/json leaves them, and a string is set", cdv1.CDUserGrantStatus{GrantedScopes: []string{"a"}}, func(s *cdv1.CDUserGrantStatus) {
			s.GrantedScopes, s.Subject = []string{}, "acme@carrier.example"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := grantObj("acme", "acme-refresh")
			before.Status = tc.before
			after := before.DeepCopy()
			tc.edit(&after.Status)
			checkStatusPatch(t, before, after, &before.Status, &after.Status)
		})
	}
}

func TestACredentialsStatusPatchMakesWhatMergeFromMakesOfTheStatus(t *testing.T) {
	at := metav1.NewTime(epoch)
	before := &cdv1.CDCredential{Status: cdv1.CDCredentialStatus{ClientID: "pricing", ExpiresAt: &at, GrantedScopes: []string{"a"}}}
	after := before.DeepCopy()
	later := metav1.NewTime(epoch.Add(time.Hour))
	after.Status.ExpiresAt, after.Status.LastIssuedTime, after.Status.GrantedScopes = &later, &later, nil
	checkStatusPatch(t, before, after, &before.Status, &after.Status)
}

// checkStatusPatch fails t unless the status patch from status bs to as, applied to
// before (which holds bs), makes what client.MergeFrom's patch makes of it for after
// (which holds as): the API server prunes the nulls a JSON patch leaves.
func checkStatusPatch[S any](t *testing.T, before, after client.Object, bs, as *S) {
	t.Helper()
	doc, err := json.Marshal(before)
	if err != nil {
		t.Fatal(err)
	}
	merge, err := client.MergeFrom(before).Data(after)
	if err != nil {
		t.Fatal(err)
	}
	want, err := jsonpatch.MergePatch(doc, merge)
	if err != nil {
		t.Fatal(err)
	}
	got, err := applyStatusPatch(doc, statuspatch.For(before, bs, as))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(withoutNulls(t, want), withoutNulls(t, got)); diff != "" {
		t.Errorf("patched (-MergeFrom +statuspatch):\n%s", diff)
	}
}

// applyStatusPatch applies p to doc, an object as JSON, as the API server does.
func applyStatusPatch[S any](doc []byte, p statuspatch.Patch[S]) ([]byte, error) {
	data, err := p.Data(nil)
	if err != nil {
		return nil, err
	}
	ops, err := jsonpatch.DecodePatch(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", data, err)
	}
	return ops.Apply(doc)
}

// withoutNulls decodes an object and drops its null fields, as the API server prunes
// them from a custom resource.
func withoutNulls(t *testing.T, doc []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		t.Fatalf("%s: %v", doc, err)
	}
	var prune func(any) any
	prune = func(v any) any {
		m, ok := v.(map[string]any)
		if !ok {
			return v
		}
		for k, x := range m {
			if x == nil {
				delete(m, k)
				continue
			}
			m[k] = prune(x)
		}
		return m
	}
	return prune(v)
}

// A pass's status is written when the pass ends, seconds after it read its object: by
// then a CR of its name may be another (deleted and created again), which must not get
// the old one's status. Nor may a first status, set whole, replace one written since
// the pass read the object without any.
func TestAStatusPatchAppliesToTheObjectThePassReadAlone(t *testing.T) {
	at := metav1.NewTime(epoch)
	ready := metav1.Condition{Type: cdv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: cdv1.TokenIssuedReason, LastTransitionTime: at}
	read := grantObj("acme", "acme-refresh")
	read.ResourceVersion = "7"
	cases := map[string]struct {
		before cdv1.CDUserGrantStatus
		// now is the object at the API server when the patch arrives.
		now func(g *cdv1.CDUserGrant)
	}{
		"a routine write to a CR deleted and created again under its name": {
			before: cdv1.CDUserGrantStatus{RotationCount: 1, Conditions: []metav1.Condition{ready}},
			now:    func(g *cdv1.CDUserGrant) { g.UID, g.ResourceVersion = "uid-acme-2", "9" },
		},
		"a first write to a CR deleted and created again under its name": {
			now: func(g *cdv1.CDUserGrant) { g.UID, g.ResourceVersion = "uid-acme-2", "9" },
		},
		"a first write to a CR whose status was written since the pass read it": {
			now: func(g *cdv1.CDUserGrant) {
				g.ResourceVersion = "8"
				g.Status.LastAuthorization = &cdv1.AuthorizationResult{Reason: cdv1.CustomerAuthorizedReason, Time: at}
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			before := read.DeepCopy()
			before.Status = tc.before
			after := before.DeepCopy()
			after.Status.RotationCount++
			after.Status.ExpiresAt = &at
			now := before.DeepCopy()
			tc.now(now)
			doc, err := json.Marshal(now)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := applyStatusPatch(doc, statuspatch.For(before, &before.Status, &after.Status)); err == nil {
				t.Errorf("the patch applied: %s", got)
			}
		})
	}
}

func TestARememberedBackoffNeverEndsInATerminalError(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	list := []metav1.Condition{
		{Type: cdv1.ReadyCondition, Status: metav1.ConditionFalse, Reason: cdv1.TokenRequestFailedReason},
		{Type: cdv1.ReconcilingCondition, Status: metav1.ConditionTrue, Reason: cdv1.TokenRequestFailedReason},
		{Type: cdv1.StalledCondition, Status: metav1.ConditionTrue, Reason: cdv1.RotationInterruptedReason}, // left from an older token
	}
	c := newConditions(&list, 1, now)
	keepFailure(c, rotation.Failure{Reason: cdv1.TokenRequestFailedReason, Attempts: 2, Retry: now.Add(10 * time.Second)}, failureWords{}, 0)
	if err := c.terminal(ctrl.Result{}); err != nil {
		t.Fatalf("a failure that is retried ended in %v, which controller-runtime never requeues", err)
	}
}

func TestAShortLivedTokenIsRetriedWithinAThirdOfItsLifetime(t *testing.T) {
	kinds := map[string]struct {
		reconcile func(w *world) (reconcile.Result, error)
		failure   func(w *world) *cdv1.FailureStatus
	}{
		"a customer's grant": {
			reconcile: func(w *world) (reconcile.Result, error) { return w.reconcileGrant("acme") },
			failure:   func(w *world) *cdv1.FailureStatus { return w.grant("acme").Status.LastFailure },
		},
		"an API client": {
			reconcile: func(w *world) (reconcile.Result, error) { return w.reconcileCred("pricing") },
			failure:   func(w *world) *cdv1.FailureStatus { return w.cred("pricing").Status.LastFailure },
		},
	}
	for name, k := range kinds {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			w.tokens.lifetime = 30 * time.Second
			res, err := k.reconcile(w) // a first token, of 30 s
			if err != nil {
				t.Fatal(err)
			}
			w.clock.Step(res.RequeueAfter)
			w.tokens.failNext(badGateway, badGateway, badGateway, badGateway)
			for i := range 4 {
				if res, err = k.reconcile(w); err != nil {
					t.Fatal(err)
				}
				if res.RequeueAfter > 12*time.Second {
					t.Fatalf("failure %d waits %s: a provider that answers again would find the 30 s token long expired", i+1, res.RequeueAfter)
				}
				w.clock.Step(res.RequeueAfter)
			}
			if f := k.failure(w); f == nil || f.FailedAttempts != 4 {
				t.Errorf("lastFailure %+v, want 4 attempts", f)
			}
		})
	}
}

// BenchmarkARoutineRotationsStatusPatch: go test ./controllers -bench StatusPatch -benchmem
func BenchmarkARoutineRotationsStatusPatch(b *testing.B) {
	at, later := metav1.NewTime(epoch), metav1.NewTime(epoch.Add(time.Hour))
	ready := metav1.Condition{Type: cdv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: cdv1.TokenIssuedReason, Message: "The access token is in Secret acme-token", LastTransitionTime: at}
	before := cdv1.CDUserGrantStatus{ObservedGeneration: 1, Conditions: []metav1.Condition{ready}, ExpiresAt: &at, RenewalTime: &at, LastRotationTime: &at,
		RotationCount: 7, GrantedScopes: []string{"marketplace", "offline_access"}, Subject: "acme@carrier.example", SecretName: "acme-token"}
	after := *before.DeepCopy()
	after.ExpiresAt, after.RenewalTime, after.LastRotationTime, after.RotationCount = &later, &later, &later, 8
	cr := grantObj("acme", "acme-refresh")
	for b.Loop() {
		if _, err := statuspatch.For(cr, &before, &after).Data(nil); err != nil {
			b.Fatal(err)
		}
	}
}

// kubectlWaitReady is `kubectl wait --for=condition=Ready`'s test on a CR
// (k8s.io/kubectl pkg/cmd/wait/condition.go, checkCondition): Ready is True, unless its
// observedGeneration (else status.observedGeneration, when the condition has none) is
// below metadata.generation: kubectl then keeps waiting.
func kubectlWaitReady(obj metav1.Object, observedGeneration int64, conds []metav1.Condition) bool {
	c := meta.FindStatusCondition(conds, cdv1.ReadyCondition)
	if c == nil {
		return false
	}
	og, found := c.ObservedGeneration, c.ObservedGeneration != 0 // omitempty: 0 is absent
	if !found {
		og, found = observedGeneration, observedGeneration != 0
	}
	if found && og < obj.GetGeneration() {
		return false
	}
	return c.Status == metav1.ConditionTrue
}

// kstatusOf is a CR's kstatus as github.com/fluxcd/cli-utils pkg/kstatus/status.Compute
// (v1.2.2; sigs.k8s.io/cli-utils alike) computes it for a kind with no rule of its own,
// which is what Flux's health checks and `kpt live status` report: deletionTimestamp →
// Terminating; status.observedGeneration present and != metadata.generation →
// InProgress; Reconciling=True → InProgress; Stalled=True → Failed; then
// checkReadyCondition: Ready=True → Current, Ready=False or Unknown → InProgress; no
// Ready → Current. cli-utils is no dependency of this module, so the rules are restated.
func kstatusOf(obj metav1.Object, observedGeneration int64, conds []metav1.Condition) string {
	if obj.GetDeletionTimestamp() != nil {
		return "Terminating"
	}
	if observedGeneration != 0 && observedGeneration != obj.GetGeneration() { // omitempty: 0 is absent
		return "InProgress"
	}
	for _, c := range conds {
		switch {
		case c.Type == cdv1.ReconcilingCondition && c.Status == metav1.ConditionTrue:
			return "InProgress"
		case c.Type == cdv1.StalledCondition && c.Status == metav1.ConditionTrue:
			return "Failed"
		}
	}
	if c := meta.FindStatusCondition(conds, cdv1.ReadyCondition); c != nil && c.Status != metav1.ConditionTrue {
		return "InProgress"
	}
	return "Current"
}
