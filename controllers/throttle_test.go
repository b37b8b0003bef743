package controllers

import (
	"context"
	"errors"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// withShare gives both reconcilers one share of perSecond token requests, split among
// the namespaces asking.
func (w *world) withShare(perSecond float64) *tokenclient.Share {
	s := tokenclient.NewShare(perSecond, 0)
	w.grants.Share, w.creds.Share = s, s
	return s
}

// A renewal due while its namespace's share is used up sends nothing and writes
// nothing: the grant's token still works, and it says what it said. It comes back at
// its turn, and renews then.
func TestARenewalOverItsNamespacesShareWaitsForItsTurnAndWritesNothing(t *testing.T) {
	w := newWorld(t)
	share := w.withShare(1)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	before := w.grant("acme")
	wantCondition(t, before.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	w.clock.SetTime(before.Status.RenewalTime.Time)
	if wait := share.Turn("ns", "uid-another-cr", w.clock.Now()); wait != 0 {
		t.Fatalf("another CR of the namespace waits %s", wait)
	}
	sent, counted := len(w.tokens.refreshes()), throttledCount(t, "ns")

	res, err := w.reconcileGrant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(w.tokens.refreshes()); n != sent {
		t.Errorf("%d refresh requests sent over the namespace's share", n-sent)
	}
	if n := throttledCount(t, "ns") - counted; n != 1 {
		t.Errorf("cdcredops_token_requests_throttled_total{namespace=\"ns\"} rose by %v, want 1", n)
	}
	if writes := w.takeWrites(); len(writes) != 0 {
		t.Errorf("a pass waiting for its turn wrote %v", writes)
	}
	if res.RequeueAfter != time.Second {
		t.Errorf("requeued after %s, want its turn, 1s", res.RequeueAfter)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)

	w.clock.Step(time.Second)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if n := len(w.tokens.refreshes()); n != sent+1 {
		t.Errorf("%d refresh requests at its turn, want 1", n-sent)
	}
	if after := w.grant("acme"); after.Status.RotationCount != before.Status.RotationCount+1 {
		t.Errorf("rotation count %d after its turn, want %d", after.Status.RotationCount, before.Status.RotationCount+1)
	}
}

// A CR's first request over its namespace's share says why nothing has come yet, and
// the word goes once the token has come.
func TestAFirstRequestOverItsNamespacesShareSaysItWaits(t *testing.T) {
	w := newWorld(t)
	share := w.withShare(1)
	share.Turn("ns", "uid-another-cr", w.clock.Now())

	res, err := w.reconcileCred("pricing")
	if err != nil {
		t.Fatal(err)
	}
	if n := w.tokens.ccCount(); n != 0 {
		t.Errorf("%d token requests sent over the namespace's share", n)
	}
	if res.RequeueAfter != time.Second {
		t.Errorf("requeued after %s, want its turn, 1s", res.RequeueAfter)
	}
	cred := w.cred("pricing")
	wantCondition(t, cred.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.ReconcilingReason)
	wantCondition(t, cred.Status.Conditions, cdv1.ReconcilingCondition, metav1.ConditionTrue, cdv1.TokenRequestsThrottledReason)

	w.clock.Step(time.Second)
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	cred = w.cred("pricing")
	wantCondition(t, cred.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	wantNoCondition(t, cred.Status.Conditions, cdv1.ReconcilingCondition, "once the token came")
}

// wantNoCondition fails when conds holds typ, which should have gone by when.
func wantNoCondition(t *testing.T, conds []metav1.Condition, typ, when string) {
	t.Helper()
	if c := meta.FindStatusCondition(conds, typ); c != nil {
		t.Errorf("%s still there %s: %+v", typ, when, c)
	}
}

// A grant refused its grant type is asked again at its recheck time; when that request
// waits for its turn, the grant still says FlowMisuse (the refusal stands until the
// identity server answers otherwise), and says it waits instead of Stalled.
func TestAThrottledRecheckKeepsFlowMisuse(t *testing.T) {
	w := newWorld(t)
	share := w.withShare(1)
	w.tokens.failNext(&tokenclient.Error{Kind: tokenclient.KindGrantTypeNotAllowed, Code: "unauthorized_client", StatusCode: 400})
	if _, err := w.reconcileGrant("acme"); err != nil && !errors.Is(err, reconcile.TerminalError(nil)) {
		t.Fatal(err)
	}
	g := w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.FlowMisuseCondition, metav1.ConditionTrue, cdv1.GrantTypeNotAllowedReason)
	if g.Status.LastFailure == nil || g.Status.LastFailure.RecheckTime == nil {
		t.Fatalf("no recheck time after the refusal: %+v", g.Status.LastFailure)
	}
	w.clock.SetTime(g.Status.LastFailure.RecheckTime.Time)
	share.Turn("ns", "another-cr", w.clock.Now())
	sent := len(w.tokens.refreshes())

	res, err := w.reconcileGrant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(w.tokens.refreshes()); n != sent || res.RequeueAfter != time.Second {
		t.Errorf("the recheck sent %d requests and requeued after %s; want none, and its turn (1s)", n-sent, res.RequeueAfter)
	}
	g = w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.FlowMisuseCondition, metav1.ConditionTrue, cdv1.GrantTypeNotAllowedReason)
	wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.GrantTypeNotAllowedReason)
	wantCondition(t, g.Status.Conditions, cdv1.ReconcilingCondition, metav1.ConditionTrue, cdv1.TokenRequestsThrottledReason)
	wantNoCondition(t, g.Status.Conditions, cdv1.StalledCondition, "while the request is on its way")
}

// A grant awaiting its customer's login is throttled once the token has come: it has a
// refresh token to send, so it no longer says one is missing (nor offers a login).
func TestAThrottledGrantNoLongerSaysItsRefreshTokenIsMissing(t *testing.T) {
	w := newWorld(t)
	share := w.withShare(1)
	w.awaitingLogin()
	s := w.secret("acme-refresh")
	w.update(s, func() { s.Data = map[string][]byte{"refresh_token": []byte("refresh-0")} })
	share.Turn("ns", "another-cr", w.clock.Now())
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if n := len(w.tokens.refreshes()); n != 0 {
		t.Errorf("%d refresh requests sent over the namespace's part", n)
	}
	g := w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenNotCheckedReason)
	wantCondition(t, g.Status.Conditions, cdv1.ReconcilingCondition, metav1.ConditionTrue, cdv1.TokenRequestsThrottledReason)
}

// throttledCount is cdcredops_token_requests_throttled_total of namespace, as scraped.
func throttledCount(t *testing.T, namespace string) float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "cdcredops_token_requests_throttled_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "namespace" && l.GetValue() == namespace {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// A CR deleted while it waits for its turn gives the turn back: the namespace's next
// request takes its place instead of queueing behind a turn nobody will come for.
func TestADeletedCRGivesItsTurnBack(t *testing.T) {
	w := newWorld(t)
	share := w.withShare(1)
	share.Turn("ns", "another-cr", w.clock.Now())
	if res, err := w.reconcileCred("pricing"); err != nil || res.RequeueAfter != time.Second {
		t.Fatalf("pricing's first pass: %v, requeued after %s; want its turn, 1s", err, res.RequeueAfter)
	}
	if err := w.client.Delete(context.Background(), w.cred("pricing")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	if wait := share.Turn("ns", "next-cr", w.clock.Now()); wait != time.Second {
		t.Errorf("the next request waits %s, want the deleted CR's turn, 1s", wait)
	}
}
