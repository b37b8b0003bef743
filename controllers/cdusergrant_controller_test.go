package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/onboarding"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

var (
	invalidGrant = &tokenclient.Error{Kind: tokenclient.KindInvalidGrant, Code: "invalid_grant", StatusCode: 400}
	lostAnswer   = &tokenclient.Error{Kind: tokenclient.KindTransient, Ambiguous: true, Description: "no answer within the timeout"}
	badGateway   = &tokenclient.Error{Kind: tokenclient.KindTransient, StatusCode: 502, Ambiguous: true}
	forbidden    = apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "x", errors.New(`cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on`))
)

func TestARoutineRotationIsFourWritesInTheProtocolsOrder(t *testing.T) {
	w := newWorld(t)
	res, err := w.reconcileGrant("acme")
	if err != nil {
		t.Fatal(err)
	}
	// Mark, new refresh token, access token, status: DESIGN §9's four writes, in §6's order.
	want := []string{"update acme-refresh", "update acme-refresh", "apply acme-token", "status acme"}
	if diff := cmp.Diff(want, w.takeWrites()); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
	if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "refresh-1" {
		t.Errorf("stored refresh token %q, want refresh-1", got)
	}
	if m := rotation.ReadMark(w.secret("acme-refresh").Annotations); m.Hash != "" {
		t.Errorf("in-flight mark left behind: %+v", m)
	}
	s, _ := rotation.Plan(epoch, 30*time.Minute, 0, "uid-acme")
	if res.RequeueAfter != s.RenewAt.Sub(epoch) {
		t.Errorf("RequeueAfter %s, want %s", res.RequeueAfter, s.RenewAt.Sub(epoch))
	}
	g := w.grant("acme")
	if g.Status.RotationCount != 1 || !g.Status.ExpiresAt.Time.Equal(s.ExpiresAt) || !g.Status.RenewalTime.Time.Equal(s.RenewAt) || g.Status.LastFailure != nil {
		t.Errorf("status %+v", g.Status)
	}
	wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	wantCondition(t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenValidReason)
	wantCondition(t, g.Status.Conditions, cdv1.FlowMisuseCondition, metav1.ConditionFalse, cdv1.FlowCorrectReason)
	out := w.secret("acme-token")
	if string(out.Data[cdv1.AccessTokenKey]) != "access-1" || string(out.Data[cdv1.AuthorizationKey]) != "Bearer access-1" || !metav1.IsControlledBy(out, g) {
		t.Errorf("output Secret %+v", out)
	}
}

func TestAFreshTokenIsNotRotatedAndOnlyChangesRecordEvents(t *testing.T) {
	w := newWorld(t)
	for i := range 4 {
		res, err := w.reconcileGrant("acme")
		if err != nil {
			t.Fatal(err)
		}
		if i < 3 {
			w.clock.Step(res.RequeueAfter)
		}
	}
	events := w.recorded()
	if len(events) != 1 || !strings.Contains(events[0], "Normal "+cdv1.TokenIssuedReason) {
		t.Errorf("events %q, want one TokenIssued for the first token and none for routine rotations", events)
	}
	w.clock.Step(time.Minute) // well before the next renewal
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if writes := w.takeWrites(); len(writes) != 0 {
		t.Errorf("a pass with nothing to do wrote %v", writes)
	}
	if diff := cmp.Diff([]string{"refresh-0", "refresh-1", "refresh-2", "refresh-3"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("each refresh token is sent exactly once (-want +got):\n%s", diff)
	}
}

func TestARestartWithAFreshTokenWritesNothingAndWaitsForTheRenewal(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	renewAt := w.grant("acme").Status.RenewalTime.Time
	w.recorded()
	// A new process: a new reconciler with nothing in memory reads expires_at.
	w.grants = &CDUserGrantReconciler{Client: w.client, APIReader: w.client, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Holder: "me-after-restart"}
	w.clock.Step(time.Minute)
	res, err := w.reconcileGrant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if writes := w.takeWrites(); len(writes) != 0 {
		t.Errorf("a restart with a fresh token wrote %v, want nothing", writes)
	}
	if events := w.recorded(); len(events) != 0 {
		t.Errorf("a restart with a fresh token recorded events %q", events)
	}
	if n := len(w.tokens.refreshes()); n != 1 {
		t.Errorf("%d refreshes, want only the first one", n)
	}
	if want := renewAt.Sub(w.clock.Now()); res.RequeueAfter != want {
		t.Errorf("RequeueAfter %s, want %s (the stored renewal time)", res.RequeueAfter, want)
	}
}

func TestInvalidGrantIsTerminalAndRememberedInStatus(t *testing.T) {
	w := newWorld(t)
	w.tokens.failNext(invalidGrant)
	if _, err := w.reconcileGrant("acme"); !errors.Is(err, reconcile.TerminalError(nil)) {
		t.Fatalf("err %v, want a terminal error", err)
	}
	g := w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenRejectedReason)
	wantCondition(t, g.Status.Conditions, cdv1.StalledCondition, metav1.ConditionTrue, cdv1.RefreshTokenRejectedReason)
	if f := g.Status.LastFailure; f == nil || f.Reason != cdv1.RefreshTokenRejectedReason || f.FailedAttempts != 1 || f.RetryTime != nil {
		t.Errorf("lastFailure %+v, want a terminal RefreshTokenRejected", f)
	}
	// A restarted process (a new reconciler, nothing in memory) sends nothing either.
	w.grants = &CDUserGrantReconciler{Client: w.client, APIReader: w.client, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Holder: "me-after-restart"}
	w.clock.Step(time.Hour)
	if _, err := w.reconcileGrant("acme"); !errors.Is(err, reconcile.TerminalError(nil)) {
		t.Fatalf("err %v, want a terminal error", err)
	}
	if n := len(w.tokens.refreshes()); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
	// A new refresh token is a new request.
	w.login("new-login")
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
}

func TestAnInterruptedRotationSendsTheStoredTokenOnceThenStops(t *testing.T) {
	w := newWorld(t)
	w.mark("dead-process", epoch.Add(-time.Hour), 1)
	w.tokens.failNext(invalidGrant)
	if _, err := w.reconcileGrant("acme"); err == nil {
		t.Fatal("want a terminal error")
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RotationInterruptedReason)
	_, _ = w.reconcileGrant("acme")
	if diff := cmp.Diff([]string{"refresh-0"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("sent (-want +got):\n%s", diff)
	}
}

// TestANewLoginInFlightAtAnotherProcessIsWaitedForNotLeftStalled is chaos seed 774949's
// g-048: the grant had stopped on RotationInterrupted, the customer logged in again, a
// process sent the new token and died before the answer. The next process must wait for
// that mark and then resume, not return the old Stalled state as a terminal error, which
// controller-runtime never requeues: the grant then sat expired until the run ended.
func TestANewLoginInFlightAtAnotherProcessIsWaitedForNotLeftStalled(t *testing.T) {
	w := newWorld(t)
	w.mark("dead-process", epoch.Add(-time.Hour), 1)
	w.tokens.failNext(invalidGrant)
	if _, err := w.reconcileGrant("acme"); err == nil {
		t.Fatal("want a terminal error for the interrupted rotation")
	}
	w.login("new-login")                                // the customer logged in again
	w.mark("other-replica", epoch.Add(-time.Second), 1) // its first send, answer pending
	res, err := w.reconcileGrant("acme")
	if err != nil {
		t.Fatalf("a pass that waits for another process returned %v: it would never be requeued", err)
	}
	if res.RequeueAfter <= 0 {
		t.Fatalf("RequeueAfter %s, want the end of the other process's mark", res.RequeueAfter)
	}
	if c := meta.FindStatusCondition(w.grant("acme").Status.Conditions, cdv1.StalledCondition); c != nil {
		t.Errorf("Stalled %s %s left from the previous token", c.Status, c.Reason)
	}
	w.clock.Step(res.RequeueAfter)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if got := w.tokens.refreshes(); len(got) != 2 || got[1] != "new-login" {
		t.Errorf("sent %v, want the new login's token resent once the mark expired", got)
	}
}

func TestALiveRotationByAnotherProcessIsWaitedFor(t *testing.T) {
	w := newWorld(t)
	w.mark("other-replica", epoch.Add(-30*time.Second), 1)
	res, err := w.reconcileGrant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter != 90*time.Second {
		t.Errorf("RequeueAfter %s, want the 90 s left of the other holder's 2-minute mark", res.RequeueAfter)
	}
	if n := len(w.tokens.refreshes()); n != 0 {
		t.Errorf("sent %d refresh tokens while another process holds the rotation", n)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReconcilingCondition, metav1.ConditionTrue, cdv1.ReconcilingReason)
}

// TestAPassStoppedWhileItQueuesForTheRateLimitHasMarkedNothing is chaos seed 774949's
// g-000: a wave of rotations queued for the token-request rate limit after writing their
// marks; the leader was SIGKILLed with one resend still queued, so its mark counted an
// attempt that never went out, and with the earlier lost request that made two: the
// customer's live session was given up. The turn is now taken before the mark.
func TestAPassStoppedWhileItQueuesForTheRateLimitHasMarkedNothing(t *testing.T) {
	w := newWorld(t)
	limited := tokenclient.New(tokenclient.Options{AllowedHosts: []string{"id.example.com"}, RequestsPerSecond: 0.001, Burst: 1})
	if _, err := limited.Admit(context.Background()); err != nil { // the only turn for 1,000 s
		t.Fatal(err)
	}
	w.grants.Tokens = limited
	stopping, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := w.grants.Reconcile(stopping, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "acme"}})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("the pass returned %v, want the deadline it could not get a turn before", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the pass still queues for its turn past its own deadline, with the token marked %+v",
			rotation.ReadMark(w.secret("acme-refresh").Annotations))
	}
	if m := rotation.ReadMark(w.secret("acme-refresh").Annotations); m.Hash != "" {
		t.Errorf("mark %+v: an attempt counted that never went out", m)
	}
}

func TestALostAnswerKeepsTheMarkAndTheResendIsTheLastPresentation(t *testing.T) {
	cases := map[string]struct {
		second        error
		wantRefreshes int
		wantReason    string
	}{
		"the resend is rejected: the lost attempt spent it": {second: invalidGrant, wantRefreshes: 2, wantReason: cdv1.RotationInterruptedReason},
		"the resend is lost too: never a third time":        {second: lostAnswer, wantRefreshes: 2, wantReason: cdv1.RotationInterruptedReason},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			w.tokens.failNext(lostAnswer, tc.second)
			res, err := w.reconcileGrant("acme")
			if err != nil {
				t.Fatal(err)
			}
			m := rotation.ReadMark(w.secret("acme-refresh").Annotations)
			if m.Hash != rotation.Hash("refresh-0") || m.Attempts != 1 {
				t.Fatalf("mark %+v, want the possibly spent token's, first attempt", m)
			}
			g := w.grant("acme")
			wantCondition(t, g.Status.Conditions, cdv1.ReconcilingCondition, metav1.ConditionTrue, cdv1.TokenRequestFailedReason)
			if g.Status.LastFailure == nil || g.Status.LastFailure.RetryTime == nil {
				t.Fatalf("lastFailure %+v, want a retry time", g.Status.LastFailure)
			}
			for range 3 {
				w.clock.Step(max(res.RequeueAfter, time.Second))
				res, _ = w.reconcileGrant("acme")
			}
			if n := len(w.tokens.refreshes()); n != tc.wantRefreshes {
				t.Errorf("%d refreshes, want %d", n, tc.wantRefreshes)
			}
			wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, tc.wantReason)
		})
	}
}

func TestAServerErrorSpentNothing(t *testing.T) {
	t.Run("after a first send the mark goes", func(t *testing.T) {
		w := newWorld(t)
		w.tokens.failNext(badGateway)
		if _, err := w.reconcileGrant("acme"); err != nil {
			t.Fatal(err)
		}
		if m := rotation.ReadMark(w.secret("acme-refresh").Annotations); m.Hash != "" {
			t.Errorf("mark %+v left after an answer that spent nothing", m)
		}
	})
	t.Run("after a resend the resend budget is given back", func(t *testing.T) {
		w := newWorld(t)
		w.tokens.failNext(lostAnswer, badGateway)
		res, _ := w.reconcileGrant("acme")
		w.clock.Step(res.RequeueAfter)
		res, _ = w.reconcileGrant("acme")
		if m := rotation.ReadMark(w.secret("acme-refresh").Annotations); m.Attempts != 1 {
			t.Fatalf("mark %+v, want the first attempt's again", m)
		}
		w.clock.Step(res.RequeueAfter)
		if _, err := w.reconcileGrant("acme"); err != nil {
			t.Fatal(err)
		}
		wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
		if diff := cmp.Diff([]string{"refresh-0", "refresh-0", "refresh-0"}, w.tokens.refreshes()); diff != "" {
			t.Errorf("sent (-want +got):\n%s", diff)
		}
	})
	// A write to the Secret while the request is out (a label) makes the guarded
	// write that puts the mark back conflict: the mark still goes, or two such answers
	// would give the live token up as sent twice without an answer.
	t.Run("the mark goes though the Secret changed meanwhile", func(t *testing.T) {
		w := newWorld(t)
		w.tokens.failNext(badGateway, badGateway)
		w.grants.Tokens = &whileOut{Issuer: w.tokens, do: func() {
			s := w.secret("acme-refresh")
			w.update(s, func() { s.Labels["team"] = s.ResourceVersion })
		}}
		for range 3 {
			res, err := w.reconcileGrant("acme")
			if err != nil {
				t.Fatal(err)
			}
			if m := rotation.ReadMark(w.secret("acme-refresh").Annotations); m.Hash != "" {
				t.Fatalf("mark %+v left after an answer that spent nothing", m)
			}
			w.clock.Step(res.RequeueAfter)
		}
		wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	})
	t.Run("a new login stored meanwhile is left as it is", func(t *testing.T) {
		w := newWorld(t)
		w.tokens.failNext(badGateway)
		w.loginWhileARefreshIsOut("login-2")
		if _, err := w.reconcileGrant("acme"); err != nil {
			t.Fatal(err)
		}
		s := w.secret("acme-refresh")
		if m := rotation.ReadMark(s.Annotations); m.Hash != "" || string(s.Data["refresh_token"]) != "login-2" {
			t.Errorf("Secret holds %q with mark %+v, want the new login, unmarked", s.Data["refresh_token"], m)
		}
	})
}

// whileOut runs do while each refresh request is out, before it is answered.
type whileOut struct {
	tokenclient.Issuer
	do func()
}

func (o *whileOut) Refresh(ctx context.Context, ep tokenclient.Endpoint, rt string) (*tokenclient.Token, error) {
	o.do()
	return o.Issuer.Refresh(ctx, ep, rt)
}

func TestA503WithRetryAfterWaitsAsToldAndRestoresTheMark(t *testing.T) {
	w := newWorld(t)
	w.tokens.failNext(&tokenclient.Error{Kind: tokenclient.KindRateLimited, StatusCode: 503, RetryAfter: 45 * time.Second, Ambiguous: true})
	res, err := w.reconcileGrant("acme")
	if err != nil || res.RequeueAfter != 45*time.Second {
		t.Fatalf("res %+v err %v, want a 45 s wait", res, err)
	}
	if m := rotation.ReadMark(w.secret("acme-refresh").Annotations); m.Hash != "" {
		t.Errorf("mark %+v left after a refusal that spent nothing", m)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.RateLimitedReason)
}

func TestTransientFailuresBackOffExponentiallyAndTheBackoffSurvivesARestart(t *testing.T) {
	w := newWorld(t)
	w.tokens.failNext(badGateway, badGateway, badGateway)
	var waits []time.Duration
	for range 3 {
		res, err := w.reconcileGrant("acme")
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, res.RequeueAfter)
		// A restart in between: the next attempt still waits for the retry time.
		w.grants = &CDUserGrantReconciler{Client: w.client, APIReader: w.client, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Holder: "me"}
		if _, err := w.reconcileGrant("acme"); err != nil {
			t.Fatal(err)
		}
		w.clock.Step(res.RequeueAfter)
	}
	if n := len(w.tokens.refreshes()); n != 3 {
		t.Errorf("%d refreshes, want 3: a restart does not retry early", n)
	}
	if !(waits[0] >= 5*time.Second && waits[1] >= 2*waits[0]*5/6 && waits[2] >= 2*waits[1]*5/6) {
		t.Errorf("waits %v do not double", waits)
	}
	if f := w.grant("acme").Status.LastFailure; f == nil || f.FailedAttempts != 3 {
		t.Errorf("lastFailure %+v, want 3 attempts", f)
	}
}

func TestAnUnplacedRefusalIsTriedThreeTimesThenStops(t *testing.T) {
	w := newWorld(t)
	dex := &tokenclient.Error{Kind: tokenclient.KindRefused, Code: "invalid_request", StatusCode: 400, Description: "Refresh token is invalid or has already been claimed by another client."}
	w.tokens.failNext(dex, dex, dex, dex)
	for range 5 {
		res, _ := w.reconcileGrant("acme")
		w.clock.Step(max(res.RequeueAfter, time.Minute))
	}
	if n := len(w.tokens.refreshes()); n != 3 {
		t.Errorf("%d refreshes, want 3", n)
	}
	g := w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenRefusedReason)
	wantCondition(t, g.Status.Conditions, cdv1.StalledCondition, metav1.ConditionTrue, cdv1.RefreshTokenRefusedReason)
	if msg := condition(t, g.Status.Conditions, cdv1.ReadyCondition).Message; !strings.Contains(msg, "already been claimed") {
		t.Errorf("message %q does not carry the provider's words", msg)
	}
}

// TestAnEditOfAFieldThatIsNotSentDoesNotResendARefusedToken: the request's identity is
// what is sent, not metadata.generation. An edit of secretTemplate or renewBefore bumps
// the generation; it used to void the failure memory, so a token refused three times got
// three more attempts per edit, without bound (DESIGN §5: never an unbounded loop on one
// token).
func TestAnEditOfAFieldThatIsNotSentDoesNotResendARefusedToken(t *testing.T) {
	w := newWorld(t)
	dex := &tokenclient.Error{Kind: tokenclient.KindRefused, Code: "invalid_request", StatusCode: 400, Description: "Refresh token is invalid or has already been claimed by another client."}
	for range 10 {
		w.tokens.failNext(dex)
	}
	for range 4 {
		res, _ := w.reconcileGrant("acme")
		w.clock.Step(max(res.RequeueAfter, time.Minute))
	}
	if n := len(w.tokens.refreshes()); n != 3 {
		t.Fatalf("%d refreshes before the edits, want 3", n)
	}
	for i := range 5 {
		g := w.grant("acme")
		w.update(g, func() {
			g.Spec.SecretTemplate = &cdv1.SecretTemplate{Labels: map[string]cdv1.LabelValue{"team": cdv1.LabelValue(fmt.Sprint("t", i))}}
			g.Generation++ // the API server bumps it on a spec change; the fake client does not
		})
		if _, err := w.reconcileGrant("acme"); !errors.Is(err, reconcile.TerminalError(nil)) {
			t.Fatalf("edit %d: err %v, want a terminal error", i, err)
		}
	}
	if n := len(w.tokens.refreshes()); n != 3 {
		t.Errorf("%d refreshes after 5 edits of secretTemplate, want still 3", n)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.StalledCondition, metav1.ConditionTrue, cdv1.RefreshTokenRefusedReason)
}

// TestAnEditOfAFieldThatIsNotSentDoesNotResendARejectedToken: DESIGN §6.6, invalid_grant
// is terminal until a new refresh token comes; an edit of renewBefore is not one.
func TestAnEditOfAFieldThatIsNotSentDoesNotResendARejectedToken(t *testing.T) {
	w := newWorld(t)
	w.tokens.failNext(invalidGrant, invalidGrant)
	_, _ = w.reconcileGrant("acme")
	g := w.grant("acme")
	w.update(g, func() {
		g.Spec.RenewBefore = &metav1.Duration{Duration: 5 * time.Minute}
		g.Generation++
	})
	if _, err := w.reconcileGrant("acme"); !errors.Is(err, reconcile.TerminalError(nil)) {
		t.Fatalf("err %v, want a terminal error", err)
	}
	if diff := cmp.Diff([]string{"refresh-0"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("refreshes (-want +got):\n%s", diff)
	}
	g = w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenRejectedReason)
	if c := condition(t, g.Status.Conditions, cdv1.ReadyCondition); c.ObservedGeneration != g.Generation {
		t.Errorf("Ready observedGeneration %d, want %d: the pass saw the edit", c.ObservedGeneration, g.Generation)
	}
}

// TestANewLoginAfterARejectionIsSpentAtOnce: the request budget after a failure holds
// back edits of the CR, not a new refresh token (DESIGN §6.6: wait for a new refresh
// token, then use it). Only a customer's login, or someone who may write the Secret, can
// change it.
func TestANewLoginAfterARejectionIsSpentAtOnce(t *testing.T) {
	w := newWorld(t)
	w.tokens.failNext(invalidGrant)
	_, _ = w.reconcileGrant("acme")
	w.clock.Step(time.Minute)
	w.login("new-login")
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"refresh-0", "new-login"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("refreshes (-want +got):\n%s", diff)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
}

// TestEditsOfTheCredentialSpendAtMostThreeRefreshTokensPerLifetime: as for a
// CDCredential (DESIGN §4, §8), with more at stake: each request spends a single-use
// refresh token, and one edit of a credential changes the request of every grant using
// it. Flipping the credential's clientAuthMethod every 20 seconds for a lifetime used to
// spend a token per flip; now 3: at issuance, then at the first flip at least a third of
// the lifetime after the token before (every other flip asks again for what the stored
// token was issued for, which waits for its renewal as before).
func TestEditsOfTheCredentialSpendAtMostThreeRefreshTokensPerLifetime(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	results := w.editForALifetime(func(i int) {
		c := w.cred("login")
		w.update(c, func() {
			c.Spec.ClientAuthMethod = []cdv1.ClientAuthMethod{cdv1.ClientSecretBasic, cdv1.ClientSecretPost}[i%2]
			c.Generation++
		})
	}, w.reconcileGrant, "acme")
	res := results[len(results)-1]
	if n := len(w.tokens.refreshes()); n != 3 {
		t.Errorf("%d refresh tokens spent in one 30-minute lifetime of edits every 20 s, want 3", n)
	}
	// Tokens issued at 10:00:00, 10:10:20 and 10:20:40; the flip at 10:29:40 waits for
	// a third of the lifetime of the last.
	if want := time.Minute; res.RequeueAfter != want {
		t.Errorf("RequeueAfter %s, want %s", res.RequeueAfter, want)
	}
	g := w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	want := "The spec changed since the token in Secret acme-token was issued; the token for it is requested at status.renewalTime (at most 3 requests per token lifetime)"
	if got := condition(t, g.Status.Conditions, cdv1.ReconcilingCondition); got.Status != metav1.ConditionTrue || got.Message != want {
		t.Errorf("Reconciling %s %q, want True %q", got.Status, got.Message, want)
	}
	if rt := g.Status.RenewalTime; rt == nil || !rt.Time.Equal(epoch.Add(30*time.Minute+40*time.Second)) {
		t.Errorf("renewalTime %v, want 10:30:40, when the token for the edited spec is asked for", rt)
	}
}

// A new spec.secretName starts empty, but the token is still in the Secret status names:
// renaming the output over and over must not request a token per rename (for a grant,
// spend a refresh token per rename). The request for the new name waits for the budget,
// and status keeps naming the Secret that holds the token until then.
func TestRenamingTheOutputSpendsAtMostThreeRefreshTokensPerLifetime(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	results := w.editForALifetime(func(i int) {
		g := w.grant("acme")
		w.update(g, func() { g.Spec.SecretName = fmt.Sprintf("acme-out-%d", i) })
	}, w.reconcileGrant, "acme")
	res := results[len(results)-1]
	if n := len(w.tokens.refreshes()); n != 3 {
		t.Errorf("%d refresh tokens spent in one 30-minute lifetime of renames every 20 s, want 3", n)
	}
	g := w.grant("acme")
	if res.RequeueAfter <= 0 || g.Status.SecretName == g.Spec.SecretName {
		t.Errorf("requeue %s, status.secretName %q for spec.secretName %q: want a wait, naming the Secret that holds the token", res.RequeueAfter, g.Status.SecretName, g.Spec.SecretName)
	}
	if s := w.secret(g.Status.SecretName); len(s.Data["access_token"]) == 0 {
		t.Errorf("status names Secret %s, which holds no token", g.Status.SecretName)
	}
	// Once the budget allows, the token goes to the new name.
	w.clock.Step(res.RequeueAfter)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if got := w.grant("acme").Status.SecretName; got != g.Spec.SecretName {
		t.Errorf("status.secretName %q after the wait, want %q", got, g.Spec.SecretName)
	}
	if s := w.secret(g.Spec.SecretName); len(s.Data["access_token"]) == 0 {
		t.Errorf("Secret %s holds no token after the wait", g.Spec.SecretName)
	}
}

// TestAnEditAfterARefusalWaitsAThirdOfALifetimeAndEarnsNoNewAttempts: an edit of what
// is sent is a new request, so a refusal remembered for the old one does not stop it; but
// it must not buy a fresh budget either, or flipping a field back and forth after a
// refusal would send up to three requests per flip (DESIGN §8). A changed request goes
// out a third of the token lifetime after the last failure (10 minutes here, where no
// lifetime is known: rotation.UnknownLifetimeFloor), and a refusal of it without a
// known cause is terminal at once: the three attempts were spent before the edit.
func TestAnEditAfterARefusalWaitsAThirdOfALifetimeAndEarnsNoNewAttempts(t *testing.T) {
	w := newWorld(t)
	odd := &tokenclient.Error{Kind: tokenclient.KindRefused, StatusCode: 418, Description: "I'm a teapot"}
	for range 20 {
		w.tokens.failNext(odd)
	}
	for range 3 {
		res, _ := w.reconcileGrant("acme")
		w.clock.Step(res.RequeueAfter)
	}
	refused := w.grant("acme").Status.LastFailure.LastFailureTime.Time
	renewal := w.grant("acme").Status.RenewalTime
	var sent []time.Time
	for i := 0; w.clock.Now().Before(refused.Add(31 * time.Minute)); i++ {
		// Every other flip asks again for the refused request, which stays refused.
		c := w.cred("login")
		w.update(c, func() {
			c.Spec.ClientAuthMethod = []cdv1.ClientAuthMethod{cdv1.ClientSecretBasic, cdv1.ClientSecretPost}[i%2]
			c.Generation++
		})
		before := len(w.tokens.refreshes())
		_, _ = w.reconcileGrant("acme")
		if len(w.tokens.refreshes()) > before {
			sent = append(sent, w.clock.Now())
		}
		if i == 0 {
			g := w.grant("acme")
			// Sent 10 minutes after the failure (below): the message says so in terms of
			// status fields, and renewalTime keeps the schedule of the token in the Secret
			// (none here), which the expiry alert reads.
			want := "The last request failed (RefreshTokenRefused); the spec changed since, and the request for it is sent no later than 10m0s after status.lastFailure.lastFailureTime (at most 3 requests per token lifetime)"
			if got := condition(t, g.Status.Conditions, cdv1.ReconcilingCondition); got.Message != want {
				t.Errorf("Reconciling %q, want %q", got.Message, want)
			}
			if !g.Status.RenewalTime.Equal(renewal) {
				t.Errorf("renewalTime %v while the edited request waits, want %v as before the edit: it follows the token in the Secret", g.Status.RenewalTime, renewal)
			}
			wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.RefreshTokenRefusedReason)
			if s := meta.FindStatusCondition(g.Status.Conditions, cdv1.StalledCondition); s != nil {
				t.Errorf("Stalled %+v while the edited request waits: a terminal error is never requeued", s)
			}
		}
		w.clock.Step(20 * time.Second)
	}
	// Each at the first pass at least 10 minutes after the failure before it that asks
	// for another request than the refused one.
	want := []time.Time{refused.Add(10 * time.Minute), refused.Add(20*time.Minute + 20*time.Second), refused.Add(30*time.Minute + 40*time.Second)}
	if diff := cmp.Diff(want, sent); diff != "" {
		t.Errorf("edited requests sent at (-want +got):\n%s", diff)
	}
	if f := w.grant("acme").Status.LastFailure; f == nil || f.FailedAttempts != 6 || f.RetryTime != nil {
		t.Errorf("lastFailure %+v, want terminal after 6 attempts", f)
	}
}

// TestAnExpiredTokenStillAlertsWhileAnEditWaitsAfterAFailure: renewals refused until the
// token in the Secret expired, then an edit of the credential (the fix), which the
// request budget holds back. status.renewalTime keeps the token's schedule while the edit
// waits: cdcredops_token_renewal_timestamp_seconds follows it, and CDTokenExpiresSoon
// (config/prometheus/prometheusrule.yaml) pages only while it is in the past. Moved to
// when the edit goes, an expired token would page nobody until then. Reconciling says
// when the edit goes in terms of status fields, and the requeue keeps to it.
func TestAnExpiredTokenStillAlertsWhileAnEditWaitsAfterAFailure(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	g := w.grant("acme")
	if g.Status.ExpiresAt == nil || g.Status.RenewalTime == nil {
		t.Fatalf("no token: %+v", g.Status)
	}
	expires, renewal := g.Status.ExpiresAt.Time, g.Status.RenewalTime.Time
	// Renewals fail (an answer nobody places: three tries) until the token expired.
	odd := &tokenclient.Error{Kind: tokenclient.KindRefused, StatusCode: 418, Description: "I'm a teapot"}
	for range 20 {
		w.tokens.failNext(odd)
	}
	w.clock.SetTime(expires.Add(-90 * time.Second))
	for range 3 {
		res, _ := w.reconcileGrant("acme")
		w.clock.Step(res.RequeueAfter)
	}
	w.clock.SetTime(expires.Add(time.Minute))
	c := w.cred("login")
	w.update(c, func() {
		c.Spec.ClientAuthMethod = cdv1.ClientSecretBasic
		c.Generation++
	})
	res, _ := w.reconcileGrant("acme")

	g = w.grant("acme")
	now := w.clock.Now()
	if got := g.Status.RenewalTime; got == nil || !got.Time.Equal(renewal) {
		t.Errorf("renewalTime %v while the edit waits, want %s, the schedule of the token in the Secret", got, renewal.Format(time.TimeOnly))
	}
	// CDTokenExpiresSoon: time() - renewal > 120 or (expiration - time() < 60 and time() > renewal)
	rt, exp := g.Status.RenewalTime.Time, g.Status.ExpiresAt.Time
	if !(now.Sub(rt) > 120*time.Second || (exp.Sub(now) < time.Minute && now.After(rt))) {
		t.Errorf("token expired at %s, now %s, renewalTime %s: CDTokenExpiresSoon's expression does not hold for an expired, unrenewed token",
			exp.Format(time.TimeOnly), now.Format(time.TimeOnly), rt.Format(time.TimeOnly))
	}
	want := "The last request failed (RefreshTokenRefused); the spec changed since, and the request for it is sent no later than 10m0s after status.lastFailure.lastFailureTime (at most 3 requests per token lifetime)"
	if got := condition(t, g.Status.Conditions, cdv1.ReconcilingCondition); got.Status != metav1.ConditionTrue || got.Message != want {
		t.Errorf("Reconciling %s %q, want True %q", got.Status, got.Message, want)
	}
	if f := g.Status.LastFailure; f == nil || res.RequeueAfter <= 0 || now.Add(res.RequeueAfter).After(f.LastFailureTime.Add(10*time.Minute)) {
		t.Errorf("requeued after %s with lastFailure %+v: later than Reconciling says", res.RequeueAfter, f)
	}
}

func TestANewRefreshTokenIsHeldThroughAnAPIServerOutage(t *testing.T) {
	w := newWorld(t)
	w.grants.PersistTimeout = 3 * time.Second // then the next reconcile retries
	stop := advanceWhenWaited(w.clock)
	defer stop()
	outage := errors.New("connection refused")
	w.setFault(func(verb string, obj client.Object) error {
		if verb == "update" && obj.GetName() == "acme-refresh" && obj.GetAnnotations()[cdv1.RotationInFlightAnnotation] == "" {
			return outage
		}
		return nil
	})
	for range 2 {
		if _, err := w.reconcileGrant("acme"); err != nil {
			t.Fatal(err)
		}
		wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretWriteFailedReason)
	}
	if diff := cmp.Diff([]string{"refresh-0"}, w.tokens.refreshes()); diff != "" {
		t.Fatalf("the spent token was sent again (-want +got):\n%s", diff)
	}
	w.setFault(nil)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "refresh-1" {
		t.Errorf("stored %q, want refresh-1", got)
	}
	if got := string(w.secret("acme-token").Data[cdv1.AccessTokenKey]); got != "access-1" {
		t.Errorf("access token %q, want access-1", got)
	}
}

// deleteWhileTheFirstRefreshIsOut deletes what objects returns (read then) while the
// grant's first refresh request is out, as a person or a GitOps prune would.
func (w *world) deleteWhileTheFirstRefreshIsOut(t *testing.T, objects func() []client.Object) {
	deleted := false
	w.grants.Tokens = &whileOut{Issuer: w.tokens, do: func() {
		if deleted {
			return
		}
		deleted = true
		for _, o := range objects() {
			if err := w.client.Delete(context.Background(), o); err != nil {
				t.Fatal(err)
			}
		}
	}}
}

// refreshSecretDeletedWhileTheFirstRefreshIsOut deletes acme's refresh-token Secret
// while its first refresh is out, runs that pass, and returns the Secret as it is then.
func (w *world) refreshSecretDeletedWhileTheFirstRefreshIsOut(t *testing.T) *corev1.Secret {
	t.Helper()
	w.grants.PersistTimeout = time.Second
	stop := advanceWhenWaited(w.clock)
	t.Cleanup(stop)
	w.deleteWhileTheFirstRefreshIsOut(t, func() []client.Object { return []client.Object{w.secret("acme-refresh")} })
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{}
	if err := w.client.Get(context.Background(), client.ObjectKey{Namespace: "ns", Name: "acme-refresh"}, s); err != nil {
		t.Fatalf("the refresh-token Secret deleted while the refresh was out was not created again: %v (tokens sent %v)", err, w.tokens.refreshes())
	}
	return s
}

// A refresh-token Secret deleted while its refresh is out (by a person, a GitOps prune)
// is created again, bound to the grant, with the new token: once the old one is spent
// the new one is the customer's only session, and holding it in memory until the Secret
// comes back loses it at the next restart.
func TestARefreshTokenSecretDeletedWhileARefreshIsOutIsCreatedAgainWithTheNewToken(t *testing.T) {
	w := newWorld(t)
	s := w.refreshSecretDeletedWhileTheFirstRefreshIsOut(t)
	if got := string(s.Data["refresh_token"]); got != "refresh-1" {
		t.Errorf("recreated Secret holds %q, want refresh-1", got)
	}
	if !secrets.BoundTo(s, w.grant("acme")) || s.Labels[cdv1.SecretTypeLabel] != cdv1.SecretTypeRefreshToken {
		t.Errorf("recreated Secret is not an opted-in refresh-token Secret bound to acme: labels %v annotations %v", s.Labels, s.Annotations)
	}
	if diff := cmp.Diff([]string{"refresh-0"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("tokens sent (-want +got):\n%s", diff)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
}

// A server that does not rotate (Google) answers a refresh without a new refresh token:
// the token sent stays the customer's session. Its Secret deleted while that refresh is
// out, the grant still there, is created again with that token, not with an empty one
// (which would leave the grant nothing to send: the customer would have to log in again).
func TestANonRotatingTokenSurvivesItsSecretDeletedMidRefresh(t *testing.T) {
	w := newWorld(t)
	w.tokens.noRotate = true
	s := w.refreshSecretDeletedWhileTheFirstRefreshIsOut(t)
	if got := string(s.Data["refresh_token"]); got != "refresh-0" {
		t.Errorf("recreated Secret holds refresh_token %q, want the still-valid refresh-0 (the server did not rotate it)", got)
	}
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenValidReason)
}

// A grant (deletionPolicy Retain: no finalizer) and its refresh-token Secret deleted
// together while a refresh is out (kubectl delete -f of the onboarding manifest, a
// namespace cleanup by label): the Secret is not created again. It would hold the
// customer's live session bound to a UID that is gone, which any grant naming the Secret
// may adopt. Nobody holds the new token any more: it is revoked when the credential has
// a revocationURL, as deletionPolicy Delete revokes one, and the held result is dropped.
func TestASecretDeletedWithItsGrantMidRotationIsNotCreatedAgain(t *testing.T) {
	cases := map[string]struct {
		revocationURL string
		wantRevoked   []string
	}{
		"the credential has a revocationURL: the new token is revoked": {revocationURL: "https://id.example.com/connect/revocation", wantRevoked: []string{"refresh-1"}},
		"no revocationURL: nothing to revoke at":                       {},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			c := w.cred("login")
			w.update(c, func() { c.Spec.RevocationURL = tc.revocationURL })
			w.grants.PersistTimeout = time.Second
			stop := advanceWhenWaited(w.clock)
			defer stop()
			w.deleteWhileTheFirstRefreshIsOut(t, func() []client.Object { return []client.Object{w.grant("acme"), w.secret("acme-refresh")} })
			_, _ = w.reconcileGrant("acme")
			_, _ = w.reconcileGrant("acme") // the grant is gone: storeOrphan
			for _, name := range []string{"acme-refresh", "acme-token"} {
				s := &corev1.Secret{}
				if err := w.client.Get(context.Background(), client.ObjectKey{Namespace: "ns", Name: name}, s); !apierrors.IsNotFound(err) {
					t.Errorf("Secret %s written for a grant deleted mid-rotation: %v, data %q, annotations %v", name, err, s.Data, s.Annotations)
				}
			}
			if diff := cmp.Diff(tc.wantRevoked, w.grants.Revoker.(*fakeRevoker).revoked); diff != "" {
				t.Errorf("revoked (-want +got):\n%s", diff)
			}
			if _, held := w.grants.held.get("uid-acme"); held {
				t.Error("the result of the deleted grant is still held")
			}
		})
	}
}

// A refresh-token Secret deleted while a refresh is out and created again by someone
// else before the new token is stored is judged as any Secret read: a new login in it
// wins, whether it came before the store read the Secret or between that read (which
// found it gone) and the store's create.
func TestARefreshTokenSecretCreatedAgainByANewLoginMidRotationKeepsTheLogin(t *testing.T) {
	for name, beforeTheRead := range map[string]bool{"before the store reads it": true, "between the read and the create": false} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			w.grants.PersistTimeout = time.Second
			stop := advanceWhenWaited(w.clock)
			defer stop()
			relogin := func() {
				s := secrets.NewRefreshSecret(w.grant("acme"))
				optedIn(s, cdv1.SecretTypeRefreshToken)
				secrets.StoreRefreshToken(s, "refresh_token", "login-2")
				if err := w.client.Create(context.Background(), s); err != nil {
					t.Fatal(err)
				}
			}
			w.grants.Tokens = &whileOut{Issuer: w.tokens, do: func() {
				if err := w.client.Delete(context.Background(), w.secret("acme-refresh")); err != nil {
					t.Fatal(err)
				}
				if beforeTheRead {
					relogin()
				}
			}}
			if !beforeTheRead {
				w.grants.APIReader = &goneThen{Reader: w.client, name: "acme-refresh", then: relogin}
			}
			if _, err := w.reconcileGrant("acme"); err != nil {
				t.Fatal(err)
			}
			if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "login-2" {
				t.Errorf("refresh-token Secret holds %q, want the new login login-2 (it wins)", got)
			}
			wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
		})
	}
}

// goneThen is an API reader that runs then, once, right after a read found the Secret
// name gone: someone creates it between that read and the caller's next write.
type goneThen struct {
	client.Reader
	name string
	then func()
	done bool
}

func (g *goneThen) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	err := g.Reader.Get(ctx, key, obj, opts...)
	if _, ok := obj.(*corev1.Secret); ok && key.Name == g.name && apierrors.IsNotFound(err) && !g.done {
		g.done = true
		g.then()
	}
	return err
}

// loginWhileARefreshIsOut makes the customer's new login (refresh token rt, stored as
// the callback stores it: no mark) land in acme's Secret while the grant's next refresh
// request is out.
func (w *world) loginWhileARefreshIsOut(rt string) {
	w.grants.Tokens = &whileOut{Issuer: w.tokens, do: func() {
		s := w.secret("acme-refresh")
		w.update(s, func() {
			s.Data["refresh_token"] = []byte(rt)
			rotation.ClearMark(s.Annotations)
		})
	}}
}

// A new login stored while a refresh is out wins over the refresh's successor: the
// store finds the Secret no longer holding the spent token and leaves it as it is.
func TestANewLoginStoredWhileARefreshIsOutWinsOverItsSuccessor(t *testing.T) {
	w := newWorld(t)
	w.loginWhileARefreshIsOut("login-2")
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "login-2" {
		t.Errorf("refresh-token Secret holds %q, want the new login login-2 (it wins)", got)
	}
}

// Putting the mark back after an answer that spent nothing leaves a mark that is no
// longer this pass's alone: another process that took the mark over (its resend,
// Attempts 2) keeps it, for putting back the mark this pass replaced would give the
// token a third send.
func TestRestoringTheMarkLeavesAnotherProcesssMarkAlone(t *testing.T) {
	w := newWorld(t)
	w.tokens.failNext(badGateway)
	w.grants.Tokens = &whileOut{Issuer: w.tokens, do: func() {
		w.mark("other", w.clock.Now(), 2)
	}}
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	m := rotation.ReadMark(w.secret("acme-refresh").Annotations)
	if m.Holder != "other" || m.Attempts != 2 {
		t.Errorf("mark %+v, want the other process's resend mark (Attempts 2) left as it is", m)
	}
}

// A held access token that expired before it could be written is dropped, never written
// into the output Secret: the next pass asks for a new one.
func TestAHeldAccessTokenThatExpiredIsNotWritten(t *testing.T) {
	w := newWorld(t)
	w.setFault(func(verb string, obj client.Object) error {
		if verb == "apply" && obj.GetName() == "acme-token" {
			return errors.New("connection refused")
		}
		return nil
	})
	_, _ = w.reconcileGrant("acme") // the outage is the pass's error
	if _, ok := w.grants.held.get("uid-acme"); !ok {
		t.Fatal("no access token held")
	}
	w.clock.Step(31 * time.Minute) // past the held token's 30-minute lifetime
	w.setFault(nil)
	_, _ = w.reconcileGrant("acme") // the pass that finds the held token expired
	s := &corev1.Secret{}
	err := w.client.Get(context.Background(), client.ObjectKey{Namespace: "ns", Name: "acme-token"}, s)
	if err == nil && string(s.Data[cdv1.AccessTokenKey]) == "access-1" {
		t.Errorf("output Secret holds access-1, which expired before it was written")
	}
	if client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	}
}

// A new refresh token is written no later than the moment another process may take the
// in-flight mark for a dead holder's and resend the spent token (Since + HolderTimeout):
// a write after it could overwrite that process's outcome. The retrier stops at a
// deadline 5 s earlier, which leaves room for the last backoff (at most 5 s) it may
// have begun before the deadline.
func TestANewRefreshTokenIsNeverWrittenOnceAnotherProcessMayTakeTheMarkOver(t *testing.T) {
	w := newWorld(t)
	w.grants.PersistTimeout = 10 * time.Minute // longer than the holder timeout
	stop := advanceWhenWaited(w.clock)
	defer stop()
	var tries []time.Time
	w.setFault(func(verb string, obj client.Object) error {
		if verb == "update" && obj.GetName() == "acme-refresh" && obj.GetAnnotations()[cdv1.RotationInFlightAnnotation] == "" {
			tries = append(tries, w.clock.Now())
			return errors.New("connection refused")
		}
		return nil
	})
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	m := rotation.ReadMark(w.secret("acme-refresh").Annotations)
	takeover := m.Since.Add(w.grants.holderTimeout())
	if len(tries) < 2 {
		t.Fatalf("%d tries to store the new token, want retries through the outage", len(tries))
	}
	if last := tries[len(tries)-1]; !last.Before(takeover) {
		t.Errorf("the new token was written at %v, %v after another process may take the mark over (%v)", last, last.Sub(takeover), takeover)
	}
}

// A held result whose refresh token is stored and whose access token is not (the output
// Secret could not be written) carries no refresh token: Drain and another grant's pass
// (storeInherited) pass it by, and the access token is written by its grant's next pass.
func TestAHeldAccessTokenWithoutARefreshTokenIsLeftToItsGrant(t *testing.T) {
	w := newWorld(t,
		optedIn(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "beta-refresh", Annotations: map[string]string{cdv1.BoundToAnnotation: "beta/uid-beta"}},
			Data: map[string][]byte{"refresh_token": []byte("beta-0")}}, cdv1.SecretTypeRefreshToken),
		grantObj("beta", "beta-refresh"))
	w.setFault(func(verb string, obj client.Object) error {
		if verb == "apply" && obj.GetName() == "acme-token" {
			return forbidden
		}
		return nil
	})
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	held, ok := w.grants.held.get("uid-acme")
	if !ok || held.refresh != nil || held.access == nil {
		t.Fatalf("held %+v, want only acme's access token (its refresh token stored)", held)
	}
	if _, err := w.reconcileGrant("beta"); err != nil {
		t.Fatal(err)
	}
	if lost := drain(t, w, t.Context()); lost != 0 {
		t.Errorf("Drain counted %d lost for a held access token: no session hangs on it", lost)
	}
	w.setFault(nil)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if got := string(w.secret("acme-token").Data[cdv1.AccessTokenKey]); got != "access-1" {
		t.Errorf("access token %q, want the held access-1 written by acme's next pass", got)
	}
	if diff := cmp.Diff([]string{"refresh-0", "beta-0"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("tokens sent (-want +got):\n%s", diff)
	}
}

func TestASecretWriteTheAPIServerRefusesIsOnTheCRAndNoNewTokenIsRequested(t *testing.T) {
	cases := map[string]struct {
		verb, name string
	}{
		"the new refresh token is forbidden": {verb: "update", name: "acme-refresh"},
		"the output Secret is forbidden":     {verb: "apply", name: "acme-token"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			w.setFault(func(verb string, obj client.Object) error {
				if verb == tc.verb && obj.GetName() == tc.name && obj.GetAnnotations()[cdv1.RotationInFlightAnnotation] == "" {
					return forbidden
				}
				return nil
			})
			res, err := w.reconcileGrant("acme")
			if err != nil {
				t.Fatal(err)
			}
			g := w.grant("acme")
			ready := condition(t, g.Status.Conditions, cdv1.ReadyCondition)
			if ready.Reason != cdv1.SecretWriteFailedReason || !strings.Contains(ready.Message, "Forbidden") || !strings.Contains(ready.Message, "blockOwnerDeletion") {
				t.Errorf("Ready %+v, want SecretWriteFailed with the API server's reason and message", ready)
			}
			if strings.Contains(ready.Message, "refresh-1") || strings.Contains(ready.Message, "access-1") {
				t.Errorf("a token leaked into the condition: %q", ready.Message)
			}
			if events := w.recorded(); len(events) != 1 || !strings.Contains(events[0], "Warning "+cdv1.SecretWriteFailedReason) {
				t.Errorf("events %q, want one SecretWriteFailed warning", events)
			}
			for range 3 {
				w.clock.Step(res.RequeueAfter)
				res, _ = w.reconcileGrant("acme")
			}
			if n := len(w.tokens.refreshes()); n != 1 {
				t.Errorf("%d refreshes while the token could not be stored, want 1", n)
			}
			w.setFault(nil)
			w.clock.Step(res.RequeueAfter)
			if _, err := w.reconcileGrant("acme"); err != nil {
				t.Fatal(err)
			}
			if got := string(w.secret("acme-token").Data[cdv1.AccessTokenKey]); got != "access-1" {
				t.Errorf("access token %q, want the held access-1", got)
			}
			wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
		})
	}
}

func TestAnAnswerWithoutANewRefreshTokenKeepsTheOldOne(t *testing.T) {
	w := newWorld(t)
	w.tokens.noRotate = true
	res, err := w.reconcileGrant("acme")
	if err != nil {
		t.Fatal(err)
	}
	rs := w.secret("acme-refresh")
	if got := string(rs.Data["refresh_token"]); got != "refresh-0" || rotation.ReadMark(rs.Annotations).Hash != "" {
		t.Errorf("stored %q with mark %v, want the old refresh-0 kept and no mark", got, rs.Annotations)
	}
	w.clock.Step(res.RequeueAfter)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"refresh-0", "refresh-0"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("sent (-want +got):\n%s", diff)
	}
}

func TestAGrantThatCannotStartSendsNothingAndSaysWhy(t *testing.T) {
	cases := map[string]struct {
		change  func(w *world)
		ready   string
		stalled bool
		// recheck: waiting on something that may change without an event for the
		// grant, so the pass looks again after missingSecretRecheck.
		recheck bool
		reauth  string
		misuse  string
	}{
		"the credential is missing": {
			change: func(w *world) { _ = w.client.Delete(t.Context(), w.cred("login")) },
			ready:  cdv1.CredentialNotFoundReason, reauth: cdv1.RefreshTokenNotCheckedReason,
		},
		"the credential is a ClientCredentials one": {
			change: func(w *world) {
				w.update(w.grant("acme"), func() {})
				g := w.grant("acme")
				w.update(g, func() { g.Spec.CredentialRef.Name = "pricing" })
			},
			ready: cdv1.UserGrantOnClientCredentialsReason, stalled: true, reauth: cdv1.RefreshTokenNotCheckedReason, misuse: cdv1.UserGrantOnClientCredentialsReason,
		},
		"the refresh-token Secret is missing": {
			change: func(w *world) { _ = w.client.Delete(t.Context(), w.secret("acme-refresh")) },
			ready:  cdv1.AwaitingAuthorizationReason, reauth: cdv1.RefreshTokenMissingReason,
		},
		"the refresh-token key is missing": {
			change: func(w *world) {
				s := w.secret("acme-refresh")
				w.update(s, func() { s.Data = map[string][]byte{"other": []byte("x")} })
			},
			ready: cdv1.AwaitingAuthorizationReason, reauth: cdv1.RefreshTokenMissingReason,
		},
		"the refresh-token Secret is not opted in": {
			change: func(w *world) {
				s := w.secret("acme-refresh")
				w.update(s, func() { delete(s.Labels, cdv1.SecretTypeLabel) })
			},
			ready: cdv1.SecretNotOptedInReason, stalled: true, reauth: cdv1.RefreshTokenNotCheckedReason,
		},
		"the output Secret's name is a user's Secret": {
			change: func(w *world) {
				_ = w.client.Create(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme-token"}, Data: map[string][]byte{"password": []byte("x")}})
			},
			ready: cdv1.SecretNameConflictReason, recheck: true, reauth: cdv1.RefreshTokenNotCheckedReason,
		},
		"the secret template is invalid": {
			change: func(w *world) {
				g := w.grant("acme")
				w.update(g, func() {
					g.Spec.SecretTemplate = &cdv1.SecretTemplate{Labels: map[string]cdv1.LabelValue{"bad key!": "x"}}
				})
			},
			ready: cdv1.SecretTemplateInvalidReason, stalled: true, reauth: cdv1.RefreshTokenNotCheckedReason,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			tc.change(w)
			res, err := w.reconcileGrant("acme")
			if tc.stalled != errors.Is(err, reconcile.TerminalError(nil)) {
				t.Errorf("err %v, terminal want %v", err, tc.stalled)
			}
			if tc.recheck && res.RequeueAfter != missingSecretRecheck {
				t.Errorf("requeue after %s, want %s", res.RequeueAfter, missingSecretRecheck)
			}
			g := w.grant("acme")
			wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, tc.ready)
			if tc.reauth == cdv1.RefreshTokenMissingReason {
				wantCondition(t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, tc.reauth)
			} else {
				wantCondition(t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, tc.reauth)
			}
			if tc.misuse != "" {
				wantCondition(t, g.Status.Conditions, cdv1.FlowMisuseCondition, metav1.ConditionTrue, tc.misuse)
			} else {
				wantCondition(t, g.Status.Conditions, cdv1.FlowMisuseCondition, metav1.ConditionFalse, cdv1.FlowCorrectReason)
			}
			if tc.stalled {
				wantCondition(t, g.Status.Conditions, cdv1.StalledCondition, metav1.ConditionTrue, tc.ready)
			} else if s := meta.FindStatusCondition(g.Status.Conditions, cdv1.StalledCondition); s != nil {
				t.Errorf("Stalled %+v, want none", s)
			}
			if n := len(w.tokens.refreshes()); n != 0 {
				t.Errorf("sent %d refresh tokens", n)
			}
		})
	}
}

func TestARefreshTokenSecretIsBoundToOneGrant(t *testing.T) {
	t.Run("an unbound Secret is bound before anything is sent", func(t *testing.T) {
		w := newWorld(t)
		s := w.secret("acme-refresh")
		w.update(s, func() { delete(s.Annotations, cdv1.BoundToAnnotation) })
		if _, err := w.reconcileGrant("acme"); err != nil {
			t.Fatal(err)
		}
		if got := w.secret("acme-refresh").Annotations[cdv1.BoundToAnnotation]; got != "acme/uid-acme" {
			t.Errorf("binding %q", got)
		}
	})
	t.Run("a second grant naming it sends nothing and the first keeps rotating", func(t *testing.T) {
		w := newWorld(t, grantObj("thief", "acme-refresh"))
		// Waiting, not terminal: acme's deletion may come without an event for thief
		// (another shard's grant, or one whose spec has moved on to another Secret).
		if res, err := w.reconcileGrant("thief"); err != nil || res.RequeueAfter != missingSecretRecheck {
			t.Fatalf("result %+v, err %v; want a recheck after %s", res, err, missingSecretRecheck)
		}
		ready := condition(t, w.grant("thief").Status.Conditions, cdv1.ReadyCondition)
		if ready.Reason != cdv1.RefreshTokenSecretInUseReason || strings.Contains(ready.Message, "refresh-0") {
			t.Errorf("Ready %+v", ready)
		}
		if _, err := w.reconcileGrant("acme"); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"refresh-0"}, w.tokens.refreshes()); diff != "" {
			t.Errorf("sent (-want +got):\n%s", diff)
		}
	})
	t.Run("a grant of another shard, which the cache does not hold, keeps it", func(t *testing.T) {
		// Under --shard-label-selector the cache holds only this shard's grants; judged
		// from it, acme would look gone and thief would spend acme's single-use token.
		w := newWorld(t, grantObj("thief", "acme-refresh"))
		w.grants.Client = shardCache{Client: w.client, otherShard: "acme"}
		if res, err := w.reconcileGrant("thief"); err != nil || res.RequeueAfter != missingSecretRecheck {
			t.Errorf("result %+v, err %v; want a recheck after %s", res, err, missingSecretRecheck)
		}
		if n := len(w.tokens.refreshes()); n != 0 {
			t.Errorf("sent %d refresh tokens", n)
		}
		if got := w.secret("acme-refresh").Annotations[cdv1.BoundToAnnotation]; got != "acme/uid-acme" {
			t.Errorf("binding %q, want acme's", got)
		}
		wantCondition(t, w.grant("thief").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.RefreshTokenSecretInUseReason)
	})
	t.Run("a grant held back by the binding takes it over once the holder is deleted", func(t *testing.T) {
		// The holder's deletion (deletionPolicy Retain) is what frees the Secret; the
		// waiting grant must not have stalled for good on the way.
		w := newWorld(t, grantObj("heir", "acme-refresh"))
		res, err := w.reconcileGrant("heir")
		if err != nil || res.RequeueAfter != missingSecretRecheck {
			t.Fatalf("result %+v, err %v; want a recheck after %s", res, err, missingSecretRecheck)
		}
		wantCondition(t, w.grant("heir").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.RefreshTokenSecretInUseReason)
		_ = w.client.Delete(t.Context(), w.grant("acme"))
		w.clock.Step(res.RequeueAfter)
		if _, err := w.reconcileGrant("heir"); err != nil {
			t.Fatal(err)
		}
		if got := w.secret("acme-refresh").Annotations[cdv1.BoundToAnnotation]; got != "heir/uid-heir" {
			t.Errorf("binding %q, want heir's", got)
		}
		wantCondition(t, w.grant("heir").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
		if s := meta.FindStatusCondition(w.grant("heir").Status.Conditions, cdv1.StalledCondition); s != nil {
			t.Errorf("Stalled %+v, want none", s)
		}
	})
	t.Run("a binding to a grant that no longer exists is taken over", func(t *testing.T) {
		w := newWorld(t, grantObj("heir", "acme-refresh"))
		_ = w.client.Delete(t.Context(), w.grant("acme"))
		if _, err := w.reconcileGrant("heir"); err != nil {
			t.Fatal(err)
		}
		if got := w.secret("acme-refresh").Annotations[cdv1.BoundToAnnotation]; got != "heir/uid-heir" {
			t.Errorf("binding %q, want heir's", got)
		}
	})
}

// shardCache is a manager's cache under --shard-label-selector: the grant otherShard
// belongs to another shard, so the cache does not hold it.
type shardCache struct {
	client.Client
	otherShard string
}

func (c shardCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*cdv1.CDUserGrant); ok && key.Name == c.otherShard {
		return apierrors.NewNotFound(cdv1.GroupVersion.WithResource("cdusergrants").GroupResource(), key.Name)
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

func TestAnAbsurdRenewBeforeIsClampedAndSaidSo(t *testing.T) {
	w := newWorld(t)
	g := w.grant("acme")
	w.update(g, func() { g.Spec.RenewBefore = &metav1.Duration{Duration: 29 * time.Minute} })
	for range 10 {
		res, err := w.reconcileGrant("acme")
		if err != nil {
			t.Fatal(err)
		}
		if res.RequeueAfter < 10*time.Minute {
			t.Fatalf("requeue after %s: sooner than a third of the 30 m lifetime", res.RequeueAfter)
		}
		w.clock.Step(res.RequeueAfter)
	}
	if n := len(w.tokens.refreshes()); n != 10 {
		t.Errorf("%d refreshes in 10 renewal periods", n)
	}
	if msg := condition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition).Message; !strings.Contains(msg, "renewBefore 29m0s") {
		t.Errorf("Ready message %q does not say renewBefore was clamped", msg)
	}
}

// TestAClampedRenewBeforeIsStillSaidAfterARestart: as for a credential, the pass that
// finds a grant's token fresh says the clamp the storing pass said, and a restart with a
// fresh token writes nothing.
func TestAClampedRenewBeforeIsStillSaidAfterARestart(t *testing.T) {
	w := newWorld(t)
	g := w.grant("acme")
	w.update(g, func() { g.Spec.RenewBefore = &metav1.Duration{Duration: 25 * time.Minute} })
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	first := condition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition)
	if !strings.Contains(first.Message, "spec.renewBefore 25m0s") {
		t.Fatalf("the storing pass does not say the clamp: %q", first.Message)
	}
	w.grants = &CDUserGrantReconciler{Client: w.client, APIReader: w.client, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Holder: "me-after-restart"}
	w.clock.Step(time.Minute)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	writes := w.takeWrites()
	if after := condition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition); after.Message != first.Message || len(writes) != 0 {
		t.Errorf("after a restart: Ready %q (was %q), writes %v; want the clamp still said and no write", after.Message, first.Message, writes)
	}
}

func TestAReauthorizationRequestKeepsTheGrantWorking(t *testing.T) {
	w := newWorld(t)
	w.grants.Authorizer = fixedAuthorizer{}
	g := w.grant("acme")
	w.update(g, func() { g.Annotations = map[string]string{cdv1.ReauthorizeAnnotation: epoch.Format(time.RFC3339)} })
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	g = w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	wantCondition(t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.ReauthorizationRequestedReason)
	if g.Status.AuthorizationURL != "https://login.example/authorize" {
		t.Errorf("authorizationURL %q", g.Status.AuthorizationURL)
	}
	w.update(g, func() { delete(g.Annotations, cdv1.ReauthorizeAnnotation) })
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	wantReauthorizationDone(t, w.grant("acme"))
}

// The callback removes the reauthorization request once it has stored the new refresh
// token; when that write fails, the login still succeeded. The controller drops the
// request a successful login answered (status.lastAuthorization.answeredRequest), and
// only that one: a login from before the request does not answer it.
func TestAReauthorizationRequestALoginAnsweredIsDropped(t *testing.T) {
	w := newWorld(t)
	w.grants.Authorizer = fixedAuthorizer{}
	g := w.grant("acme")
	setLastAuthorization(t, w, &cdv1.AuthorizationResult{Time: metav1.NewTime(epoch.Add(-time.Hour)), Reason: cdv1.CustomerAuthorizedReason})
	w.update(g, func() { g.Annotations = map[string]string{cdv1.ReauthorizeAnnotation: epoch.Format(time.RFC3339)} })
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if _, requested := w.grant("acme").Annotations[cdv1.ReauthorizeAnnotation]; !requested {
		t.Fatal("a login from before the request was taken for its answer: the request was dropped")
	}
	w.clock.Step(time.Minute)
	setLastAuthorization(t, w, &cdv1.AuthorizationResult{Time: metav1.NewTime(w.clock.Now()), Reason: cdv1.CustomerAuthorizedReason, AnsweredRequest: epoch.Format(time.RFC3339)})
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	wantReauthorizationDone(t, w.grant("acme"))
}

// wantReauthorizationDone: a grant whose reauthorization request is over keeps no
// request, asks for no login and offers no link.
func wantReauthorizationDone(t *testing.T, g *cdv1.CDUserGrant) {
	t.Helper()
	if v, requested := g.Annotations[cdv1.ReauthorizeAnnotation]; requested {
		t.Errorf("the request (%s) is kept after it was done", v)
	}
	wantCondition(t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenValidReason)
	if g.Status.AuthorizationURL != "" {
		t.Errorf("authorizationURL %q left after the request was done", g.Status.AuthorizationURL)
	}
}

// A login answers the reauthorization request the callback saw, and no other: a request
// made after it is kept whatever the clocks say. Here ReauthorizationRequired was True
// before the customer logged in (the refresh token was rejected) and stays True, with its
// old transition time, when the first rotation with the new token gets no answer; 20 s
// after the login an admin asks for another login from a laptop whose clock is 30 s
// behind the operator's, so the request's time is before the login's.
func TestAReauthorizationRequestedAfterALoginIsKeptWhateverTheRequestersClock(t *testing.T) {
	w := newWorld(t)
	w.grants.Authorizer = fixedAuthorizer{}
	w.tokens.failNext(invalidGrant)
	_, _ = w.reconcileGrant("acme")
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenRejectedReason)

	// The customer logs in: the callback stores the token and records the login, which
	// answered no request (there was none).
	w.clock.Step(time.Minute)
	loginAt := w.clock.Now()
	w.login("refresh-new")
	setLastAuthorization(t, w, &cdv1.AuthorizationResult{Time: metav1.NewTime(loginAt), Reason: cdv1.CustomerAuthorizedReason})
	w.tokens.failNext(lostAnswer)
	_, _ = w.reconcileGrant("acme")
	if c := condition(t, w.grant("acme").Status.Conditions, cdv1.ReauthorizationRequiredCondition); c.Status != metav1.ConditionTrue || c.LastTransitionTime.After(loginAt) {
		t.Fatalf("ReauthorizationRequired %+v after a rotation with no answer, want it still True from before the login: the premise fails", c)
	}

	w.clock.Step(20 * time.Second)
	asked := w.clock.Now().Add(-30 * time.Second).Truncate(time.Second)
	g := w.grant("acme")
	w.update(g, func() { g.Annotations = map[string]string{cdv1.ReauthorizeAnnotation: asked.Format(time.RFC3339)} })
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if _, requested := w.grant("acme").Annotations[cdv1.ReauthorizeAnnotation]; !requested {
		t.Errorf("a reauthorization requested 20 s after the login (stamped %s by a clock 30 s behind) was dropped as answered by the login at %s",
			asked.Format("15:04:05"), loginAt.Format("15:04:05"))
	}
}

// The callback clears the request it answered and then records the login; a request
// made in between, in the same second, is not the answered one and is kept.
func TestAReauthorizationRequestedWhileTheCallbackRecordsItsLoginIsKept(t *testing.T) {
	w := newWorld(t)
	w.grants.Authorizer = fixedAuthorizer{}
	g := w.grant("acme")
	answered := epoch.Format(time.RFC3339)
	w.update(g, func() { g.Annotations = map[string]string{cdv1.ReauthorizeAnnotation: answered} })
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.ReauthorizationRequestedReason)

	// The callback: stores the token, clears the request, a new one lands, the login is
	// recorded.
	w.clock.Step(time.Minute)
	w.login("refresh-new")
	again := w.clock.Now().Format(time.RFC3339)
	w.update(g, func() { g.Annotations = map[string]string{cdv1.ReauthorizeAnnotation: again} })
	setLastAuthorization(t, w, &cdv1.AuthorizationResult{Time: metav1.NewTime(w.clock.Now()), Reason: cdv1.CustomerAuthorizedReason, AnsweredRequest: answered})
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	g = w.grant("acme")
	if v := g.Annotations[cdv1.ReauthorizeAnnotation]; v != again {
		t.Errorf("the request made after the callback cleared the one it answered is %q, want %q kept", v, again)
	}
	wantCondition(t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.ReauthorizationRequestedReason)
}

func setLastAuthorization(t *testing.T, w *world, a *cdv1.AuthorizationResult) {
	t.Helper()
	g := w.grant("acme")
	before := g.DeepCopy()
	g.Status.LastAuthorization = a
	if err := w.client.Status().Patch(t.Context(), g, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
}

// While a reauthorization is pending the grant stays Ready on its old token, so a
// customer who declines the new login would show nowhere but in
// status.lastAuthorization; ReauthorizationRequired says so. A failure from before the
// request is not this request's.
func TestALoginThatFailsDuringAReauthorizationShowsOnReauthorizationRequired(t *testing.T) {
	w := newWorld(t)
	w.grants.Authorizer = fixedAuthorizer{}
	g := w.grant("acme")
	setLastAuthorization := func(a *cdv1.AuthorizationResult) {
		t.Helper()
		g = w.grant("acme")
		before := g.DeepCopy()
		g.Status.LastAuthorization = a
		if err := w.client.Status().Patch(t.Context(), g, client.MergeFrom(before)); err != nil {
			t.Fatal(err)
		}
	}
	setLastAuthorization(&cdv1.AuthorizationResult{Time: metav1.NewTime(epoch.Add(-time.Hour)), Reason: cdv1.AuthorizationDeniedReason, Error: "access_denied", Message: "An old denial"})
	w.update(g, func() { g.Annotations = map[string]string{cdv1.ReauthorizeAnnotation: epoch.Format(time.RFC3339)} })
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if msg := condition(t, w.grant("acme").Status.Conditions, cdv1.ReauthorizationRequiredCondition).Message; strings.Contains(msg, "An old denial") {
		t.Errorf("a denial from before the request shows on it: %q", msg)
	}
	w.clock.Step(time.Minute)
	setLastAuthorization(&cdv1.AuthorizationResult{Time: metav1.NewTime(w.clock.Now()), Reason: cdv1.AuthorizationDeniedReason, Error: "access_denied", Message: "The customer declined"})
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	g = w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	wantCondition(t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.ReauthorizationRequestedReason)
	if msg := condition(t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition).Message; !strings.Contains(msg, "The last login failed (AuthorizationDenied): The customer declined") {
		t.Errorf("ReauthorizationRequired says %q after the customer declined the new login", msg)
	}
}

type fixedAuthorizer struct{}

func (fixedAuthorizer) AuthorizationURL(*cdv1.CDUserGrant, *cdv1.CDCredential, string, string, time.Time) (string, time.Time) {
	return "https://login.example/authorize", epoch.Add(15 * time.Minute)
}

func TestDeletionPolicy(t *testing.T) {
	cases := map[string]struct {
		policy      cdv1.DeletionPolicy
		unbound     bool
		wantRevoked []string
		wantSecret  bool
	}{
		"Retain keeps the customer's refresh token":       {policy: cdv1.DeletionPolicyRetain, wantSecret: true},
		"Delete revokes the refresh token and deletes it": {policy: cdv1.DeletionPolicyDelete, wantRevoked: []string{"refresh-0"}},
		// Only a Secret proven the grant's (it spent its token, or the callback created
		// it) is revoked and deleted: an imported one the grant never spent may be named
		// by another grant too.
		"Delete leaves a Secret the grant never bound": {policy: cdv1.DeletionPolicyDelete, unbound: true, wantSecret: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			g := w.grant("acme")
			w.update(g, func() { g.Spec.DeletionPolicy = tc.policy })
			if tc.unbound {
				s := w.secret("acme-refresh")
				w.update(s, func() { delete(s.Annotations, cdv1.BoundToAnnotation) })
				w.update(g, func() { g.Finalizers = []string{deleteFinalizer} })
			} else {
				w.tokens.failNext(invalidGrant) // so the stored token stays refresh-0
				_, _ = w.reconcileGrant("acme")
			}
			if err := w.client.Delete(t.Context(), w.grant("acme")); err != nil {
				t.Fatal(err)
			}
			if tc.policy == cdv1.DeletionPolicyDelete {
				if _, err := w.reconcileGrant("acme"); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.client.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "acme"}, &cdv1.CDUserGrant{}); !apierrors.IsNotFound(err) {
				t.Errorf("the grant is still there: %v", err)
			}
			err := w.client.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "acme-refresh"}, &corev1.Secret{})
			if exists := err == nil; exists != tc.wantSecret {
				t.Errorf("refresh-token Secret exists %v, want %v", exists, tc.wantSecret)
			}
			if diff := cmp.Diff(tc.wantRevoked, w.grants.Revoker.(*fakeRevoker).revoked); diff != "" {
				t.Errorf("revoked (-want +got):\n%s", diff)
			}
			if err := w.client.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "acme"}, &cdv1.CDUserGrant{}); !apierrors.IsNotFound(err) {
				t.Errorf("the grant is still there (%v): its deletion never ends", err)
			}
		})
	}
}

// The new refresh token held through an outage is the customer's live session, however
// its grant goes: at once, or later when it has a finalizer (foreground deletion with
// `kubectl delete --cascade=foreground` or a GitOps tool, another controller's, or the
// operator's own under deletionPolicy Delete). The Secret that Retain leaves behind must
// hold it, and Delete must revoke it, not the spent one.
func TestANewRefreshTokenHeldForAGrantBeingDeletedIsStoredNotDropped(t *testing.T) {
	cases := map[string]struct {
		policy      cdv1.DeletionPolicy
		foreground  bool
		wantStored  string // what the retained Secret holds; "" when it is deleted
		wantRevoked []string
		storeFails  bool
	}{
		"Retain, gone at once: the Secret holds the live token": {policy: cdv1.DeletionPolicyRetain, wantStored: "refresh-1"},
		"Retain, foreground: the Secret holds the live token":   {policy: cdv1.DeletionPolicyRetain, foreground: true, wantStored: "refresh-1"},
		"Delete revokes the live token, not the spent one":      {policy: cdv1.DeletionPolicyDelete, foreground: true, wantRevoked: []string{"refresh-1"}},
		// The API server refuses the store for good (an admission policy, a quota):
		// the live token is revoked from memory and the deletion ends.
		"Delete, the live token never stored: revoked all the same": {policy: cdv1.DeletionPolicyDelete, storeFails: true, wantRevoked: []string{"refresh-1"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			w.grants.PersistTimeout = time.Second
			stop := advanceWhenWaited(w.clock)
			defer stop()
			g := w.grant("acme")
			w.update(g, func() {
				g.Spec.DeletionPolicy = tc.policy
				if tc.foreground {
					g.Finalizers = append(g.Finalizers, metav1.FinalizerDeleteDependents)
				}
			})
			w.failStoringNewRefreshTokens()
			if _, err := w.reconcileGrant("acme"); err != nil {
				t.Fatal(err)
			}
			if err := w.client.Delete(t.Context(), w.grant("acme")); err != nil {
				t.Fatal(err)
			}
			if !tc.storeFails {
				w.setFault(nil)
			}
			if _, err := w.reconcileGrant("acme"); err != nil {
				t.Fatal(err)
			}
			if tc.foreground { // the garbage collector finishes the deletion
				g = w.grant("acme")
				w.update(g, func() { g.Finalizers = nil })
				if _, err := w.reconcileGrant("acme"); err != nil {
					t.Fatal(err)
				}
			}
			s := &corev1.Secret{}
			err := w.client.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "acme-refresh"}, s)
			if got := string(s.Data["refresh_token"]); (err == nil) != (tc.wantStored != "") || got != tc.wantStored {
				t.Errorf("the refresh-token Secret holds %q (%v), want %q", got, err, tc.wantStored)
			}
			if diff := cmp.Diff(tc.wantRevoked, w.grants.Revoker.(*fakeRevoker).revoked); diff != "" {
				t.Errorf("revoked (-want +got):\n%s", diff)
			}
		})
	}
}

// A grant deleted while its new refresh token is held leaves the Secret with the spent
// token under this process's in-flight mark. A grant that takes the Secret over — the
// same one created again (kubectl replace --force, a GitOps re-sync) or another naming
// it — would take that mark for its own interrupted rotation and send the spent token
// again, losing the customer: the held token is stored first, and is the one it spends.
func TestAGrantTakingOverASecretWhoseNewTokenIsHeldSpendsTheLiveToken(t *testing.T) {
	for name, successor := range map[string]string{
		"the grant created again under the same name": "acme",
		"another grant naming the Secret":             "beta",
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			w.grants.PersistTimeout = time.Second
			stop := advanceWhenWaited(w.clock)
			defer stop()
			w.failStoringNewRefreshTokens()
			if _, err := w.reconcileGrant("acme"); err != nil {
				t.Fatal(err)
			}
			if err := w.client.Delete(t.Context(), w.grant("acme")); err != nil {
				t.Fatal(err)
			}
			if _, err := w.reconcileGrant("acme"); err == nil {
				t.Fatal("storing the deleted grant's token succeeded during the outage")
			}
			g := grantObj(successor, "acme-refresh")
			g.UID = "uid-successor"
			if err := w.client.Create(t.Context(), g); err != nil {
				t.Fatal(err)
			}
			// While the outage lasts the successor sends nothing,
			if _, err := w.reconcileGrant(successor); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{"refresh-0"}, w.tokens.refreshes()); diff != "" {
				t.Errorf("refresh tokens sent during the outage (-want +got):\n%s", diff)
			}
			wantCondition(t, w.grant(successor).Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretWriteFailedReason)
			if f := w.grant(successor).Status.LastFailure; f != nil {
				t.Errorf("the successor remembers a failure %+v of a request it never sent: its first request would wait for the request budget", f)
			}
			// and once it is over it spends the live token.
			w.setFault(nil)
			if _, err := w.reconcileGrant(successor); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{"refresh-0", "refresh-1"}, w.tokens.refreshes()); diff != "" {
				t.Errorf("refresh tokens sent (-want +got):\n%s", diff)
			}
			if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "refresh-2" {
				t.Errorf("the refresh-token Secret holds %q, want refresh-2", got)
			}
			wantCondition(t, w.grant(successor).Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenValidReason)
		})
	}
}

// The grant whose token is held may be gone at the API server while the cache still
// shows it (a pass in the moment before the cache hears of the deletion, such as a
// waiting grant's recheck). Asked of the cache, "is it still there?" says yes, the held
// token is left for a grant that will never store it, and the grant taking the Secret
// over (judged at the API server) finds the spent token under this process's mark.
func TestAHeldTokenIsStoredFirstThoughTheCacheStillShowsItsDeletedGrant(t *testing.T) {
	w := newWorld(t)
	defer w.rotateUnstored()()
	deleted := w.grant("acme")
	if err := w.client.Delete(t.Context(), deleted); err != nil {
		t.Fatal(err)
	}
	g := grantObj("beta", "acme-refresh")
	g.UID = "uid-beta"
	if err := w.client.Create(t.Context(), g); err != nil {
		t.Fatal(err)
	}
	w.setFault(nil)
	w.lag(deleted)
	if _, err := w.reconcileGrant("beta"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"refresh-0", "refresh-1"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("refresh tokens sent (-want +got):\n%s", diff)
	}
}

// A pass reads the grant from a cache that may lag behind the status writes of the
// passes before it; the failure memory it acts on, and writes, is the newest one.
func TestACacheThatHasNotSeenTheLastStatusWriteDoesNotResendARejectedToken(t *testing.T) {
	w := newWorld(t)
	unrotated := w.grant("acme")
	w.tokens.failNext(invalidGrant)
	if _, err := w.reconcileGrant("acme"); !errors.Is(err, reconcile.TerminalError(nil)) {
		t.Fatalf("err %v, want terminal", err)
	}
	rejected := w.grant("acme")
	// The next pass reads a cache that has not seen the rejection yet,
	w.lag(unrotated)
	if _, err := w.reconcileGrant("acme"); !errors.Is(err, reconcile.TerminalError(nil)) {
		t.Fatalf("err %v, want terminal", err)
	}
	// and the one after a cache that holds the rejection but not that pass's write.
	w.lag(rejected)
	if _, err := w.reconcileGrant("acme"); !errors.Is(err, reconcile.TerminalError(nil)) {
		t.Fatalf("err %v, want terminal", err)
	}
	w.lag(&cdv1.CDUserGrant{})
	if _, err := w.reconcileGrant("acme"); !errors.Is(err, reconcile.TerminalError(nil)) {
		t.Fatalf("err %v, want terminal", err)
	}
	if diff := cmp.Diff([]string{"refresh-0"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("the rejected token was sent again (-want +got):\n%s", diff)
	}
	g := w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenRejectedReason)
	if g.Status.LastFailure == nil || g.Status.LastFailure.Reason != cdv1.RefreshTokenRejectedReason {
		t.Errorf("lastFailure %+v, want the rejection", g.Status.LastFailure)
	}
}

// The customer may already hold the authorization link a status write showed; a pass
// on a cache that has not seen that write keeps it rather than minting another.
func TestACacheThatHasNotSeenTheLastStatusWriteKeepsTheAuthorizationLink(t *testing.T) {
	w := newWorld(t)
	links := &mintingAuthorizer{}
	w.grants.Authorizer = links
	unrotated := w.grant("acme")
	w.tokens.failNext(invalidGrant)
	// A grant that offers a link waits for the customer, not for an error.
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	given := w.grant("acme").Status.AuthorizationURL
	if given == "" {
		t.Fatal("a grant whose refresh token was rejected shows no authorization link")
	}
	w.lag(unrotated)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if got := w.grant("acme").Status.AuthorizationURL; got != given || links.minted != 1 {
		t.Errorf("authorizationURL %q after a pass on a lagging cache (%d links minted), want the %q the customer was given", got, links.minted, given)
	}
	// Once the cache holds the writes, nothing is kept for the grant.
	w.lag(&cdv1.CDUserGrant{})
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if w.grants.links.has(w.grant("acme")) {
		t.Error("the written link is still remembered after the cache caught up: one entry per grant, forever")
	}
}

// A login that claimed the link but failed (no refresh token, a refused code) leaves the
// grant waiting, with the link gone from status. The link this process remembers writing
// is that spent one: showing it again would send the customer to "already used".
func TestALinkSpentByAFailedLoginIsNotShownAgain(t *testing.T) {
	w := newWorld(t)
	signer, err := onboarding.NewSigner([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	w.grants.Authorizer = &onboarding.Authorizer{Signer: signer, CallbackURL: "https://cd-callback.example.com/callback"}
	w.tokens.failNext(invalidGrant)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	spent := w.grant("acme").Status.AuthorizationURL
	u, _ := url.Parse(spent)
	st, err := signer.Verify(u.Query().Get("state"), w.clock.Now())
	if err != nil {
		t.Fatalf("the link shown, %q: %v", spent, err)
	}
	// What the callback writes: the claim, then the outcome, and the link leaves status.
	g := w.grant("acme")
	w.update(g, func() {
		metav1.SetMetaDataAnnotation(&g.ObjectMeta, onboarding.UsedStateAnnotation, onboarding.NonceHash(st))
	})
	before := g.DeepCopy()
	g.Status.AuthorizationURL = ""
	g.Status.LastAuthorization = &cdv1.AuthorizationResult{Time: metav1.NewTime(w.clock.Now()), Reason: cdv1.AuthorizationFailedReason, Message: "The identity server issued no refresh token"}
	if err := w.client.Status().Patch(t.Context(), g, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	w.clock.Step(time.Minute)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	shown := w.grant("acme").Status.AuthorizationURL
	if shown == "" {
		t.Fatal("the grant still waits for a login but shows no link")
	}
	if next, _ := url.Parse(shown); next.Query().Get("state") == u.Query().Get("state") {
		t.Errorf("the grant shows the link its failed login spent again: %s", shown)
	}
}

// mintingAuthorizer keeps the link a grant shows and mints a new one only for a grant
// that shows none.
type mintingAuthorizer struct{ minted int }

func (a *mintingAuthorizer) AuthorizationURL(_ *cdv1.CDUserGrant, _ *cdv1.CDCredential, _, current string, _ time.Time) (string, time.Time) {
	if current == "" {
		a.minted++
		current = "https://login.example/authorize?state=" + strconv.Itoa(a.minted)
	}
	return current, epoch.Add(15 * time.Minute)
}

// An unusable answer that still carries a new refresh token leaves that token to store.
// When the API server refuses the first write, a later pass stores it from memory, and
// must then report the answer and come back: a pass that ends without an outcome leaves
// SecretWriteFailed standing with nothing scheduled, and the access token expires.
func TestAnUnusableAnswersRefreshTokenStoredOnALaterPassIsReportedAndRetried(t *testing.T) {
	w := newWorld(t)
	w.tokens.failNext(&tokenclient.Error{Kind: tokenclient.KindInvalidResponse, StatusCode: 200, Description: "no access_token in the answer", Token: &tokenclient.Token{RefreshToken: "refresh-x"}})
	w.setFault(func(verb string, obj client.Object) error {
		if s, ok := obj.(*corev1.Secret); ok && verb == "update" && string(s.Data["refresh_token"]) == "refresh-x" {
			w.fault = nil // once; faults run under w.mu
			return apierrors.NewForbidden(corev1.Resource("secrets"), s.Name, errors.New("refused by a webhook"))
		}
		return nil
	})
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretWriteFailedReason)
	res, err := w.reconcileGrant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "refresh-x" {
		t.Fatalf("the refresh-token Secret holds %q, want the new refresh-x", got)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.InvalidTokenResponseReason)
	if res.RequeueAfter <= 0 {
		t.Fatalf("result %+v: nothing brings the grant back", res)
	}
	w.clock.Step(res.RequeueAfter)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"refresh-0", "refresh-x"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("refresh tokens sent (-want +got):\n%s", diff)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
}

// writtenLinks keeps a link only while a grant shows one: a grant whose customer logged
// in again shows none, and must not keep an entry until it is deleted.
func TestTheWrittenLinkIsForgottenOnceTheGrantShowsNone(t *testing.T) {
	w := newWorld(t)
	w.grants.Authorizer = &mintingAuthorizer{}
	w.tokens.failNext(invalidGrant)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if w.grant("acme").Status.AuthorizationURL == "" {
		t.Fatal("no link offered")
	}
	w.login("refresh-login")
	for i := 0; i < 3; i++ {
		if _, err := w.reconcileGrant("acme"); err != nil {
			t.Fatal(err)
		}
	}
	g := w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenValidReason)
	if g.Status.AuthorizationURL != "" {
		t.Fatalf("link still shown: %q", g.Status.AuthorizationURL)
	}
	if w.grants.links.has(g) {
		t.Error("writtenLinks still holds an entry for a grant that offers no link and whose cache caught up: one entry per onboarded grant, until it is deleted")
	}
}

// credentialOutsideShardCache is a cache that holds only the CRs of the manager's shard: here, no
// CDCredential.
type credentialOutsideShardCache struct{ client.Client }

func (c credentialOutsideShardCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*cdv1.CDCredential); ok {
		return apierrors.NewNotFound(cdv1.GroupVersion.WithResource("cdcredentials").GroupResource(), key.Name)
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

// TestAGrantWhoseCredentialIsInAnotherShardIsNotToldItIsMissing: a sharded manager's
// cache holds only its shard, so a CDCredential left without the grant's shard label is
// not in it. "Not found" would send the platform team looking for an object that
// `kubectl get` shows; the message says what is wrong instead.
func TestAGrantWhoseCredentialIsInAnotherShardIsNotToldItIsMissing(t *testing.T) {
	w := newWorld(t)
	w.grants.Client = credentialOutsideShardCache{w.client}
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	ready := condition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition)
	if ready.Reason != cdv1.CredentialNotFoundReason || !strings.Contains(ready.Message, "exists but is not among this manager's CRs") {
		t.Errorf("Ready %s %q, want it to say the CDCredential lacks the shard label", ready.Reason, ready.Message)
	}
	if n := len(w.tokens.refreshes()); n != 0 {
		t.Errorf("%d refreshes sent without the credential", n)
	}
}

// As for a credential (TestACredentialWhoseOutputNameIsTakenNamesOnlyASecretHoldingItsOwnToken):
// a grant whose default output name is held by a CDCredential's output is
// SecretNameConflict, and its status names no Secret, not the credential's.
func TestAGrantWhoseOutputNameIsTakenNamesNoSecretInStatus(t *testing.T) {
	w := newWorld(t)
	c := w.cred("pricing")
	w.update(c, func() { c.Spec.SecretName = "acme-token"; c.Generation++ })
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	if s := w.secret("acme-token"); !metav1.IsControlledBy(s, w.cred("pricing")) {
		t.Fatalf("acme-token is not the credential's output: %v", s.OwnerReferences)
	}
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	g := w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretNameConflictReason)
	if g.Status.SecretName != "" {
		t.Errorf("status.secretName = %q, want none: acme-token holds the credential's token, not the grant's", g.Status.SecretName)
	}
}

// A grant created before its refresh-token Secret holds a token says RefreshTokenMissing.
// Once the Secret's token was sent, that is false whatever came back: a refusal a login
// does not fix (here the wrong credential set) leaves the token unchecked, not missing,
// and no login is asked for.
func TestRefreshTokenMissingEndsOnceTheSecretsTokenIsSent(t *testing.T) {
	w := newWorld(t)
	w.awaitingLogin()
	s := w.secret("acme-refresh")

	// The user follows the README: puts the customer's refresh token in the Secret.
	w.update(s, func() { s.Data = map[string][]byte{"refresh_token": []byte("refresh-0")} })
	w.tokens.failNext(&tokenclient.Error{Kind: tokenclient.KindGrantTypeNotAllowed, Code: "unauthorized_client", StatusCode: 400})
	if _, err := w.reconcileGrant("acme"); err != nil && !errors.Is(err, reconcile.TerminalError(nil)) {
		t.Fatal(err)
	}
	if got := w.tokens.refreshes(); !cmp.Equal(got, []string{"refresh-0"}) {
		t.Fatalf("refresh tokens sent %v, want the one in the Secret", got)
	}
	g := w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenNotCheckedReason)
	wantCondition(t, g.Status.Conditions, cdv1.FlowMisuseCondition, metav1.ConditionTrue, cdv1.GrantTypeNotAllowedReason)
}

// With the callback server off (the chart's default; install.yaml has no callback
// flags), no grant ever gets an authorization link, and `kubectl cd authorize` would
// wait for one until its timeout. A grant awaiting authorization says that this manager
// offers no login link (cdv1.NoLoginLinkMessage, which the plugin stops on), and what
// to do instead: turn the callback on, or put a refresh token in the Secret.
func TestAGrantAwaitingAuthorizationWithoutACallbackSaysNoLinkComes(t *testing.T) {
	w := newWorld(t)
	s := w.secret("acme-refresh")
	w.update(s, func() { s.Data = map[string][]byte{} })
	if _, err := w.reconcileGrant("acme"); err != nil && !errors.Is(err, reconcile.TerminalError(nil)) {
		t.Fatal(err)
	}
	g := w.grant("acme")
	if g.Status.AuthorizationURL != "" {
		t.Fatalf("authorization URL %q without a callback", g.Status.AuthorizationURL)
	}
	for _, typ := range []string{cdv1.ReadyCondition, cdv1.ReauthorizationRequiredCondition} {
		c := condition(t, g.Status.Conditions, typ)
		for _, words := range []string{cdv1.NoLoginLinkMessage, "--callback-bind-address and --callback-url", "callback.enabled", "put a refresh token under key refresh_token"} {
			if !strings.Contains(c.Message, words) {
				t.Errorf("%s %s message %q does not say %q", typ, c.Reason, c.Message, words)
			}
		}
	}
	wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.AwaitingAuthorizationReason)
}

// A reauthorization asked of a manager without its callback server was ignored: the
// grant said nothing and `kubectl cd reauthorize` waited out its timeout. It is
// ReauthorizationRequested saying no link comes, and the grant keeps rotating.
func TestAReauthorizationRequestWithoutACallbackSaysNoLinkComes(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	g := w.grant("acme")
	w.update(g, func() { g.Annotations = map[string]string{cdv1.ReauthorizeAnnotation: "2026-11-29T10:00:00Z"} })
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	g = w.grant("acme")
	reauth := condition(t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition)
	if reauth.Status != metav1.ConditionTrue || reauth.Reason != cdv1.ReauthorizationRequestedReason || !strings.Contains(reauth.Message, cdv1.NoLoginLinkMessage) {
		t.Errorf("ReauthorizationRequired %s/%s %q, want True/ReauthorizationRequested saying %q", reauth.Status, reauth.Reason, reauth.Message, cdv1.NoLoginLinkMessage)
	}
	wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
}

// awaitingLogin empties acme's refresh-token Secret and runs a pass: the grant says its
// refresh token is missing (ReauthorizationRequired, RefreshTokenMissing).
func (w *world) awaitingLogin() {
	w.t.Helper()
	s := w.secret("acme-refresh")
	w.update(s, func() { s.Data = map[string][]byte{} })
	if _, err := w.reconcileGrant("acme"); err != nil && !errors.Is(err, reconcile.TerminalError(nil)) {
		w.t.Fatal(err)
	}
	wantCondition(w.t, w.grant("acme").Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenMissingReason)
}
