package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// slowTokenEndpoint answers once the fake clock has moved on by delay, as an
// overloaded identity server.
type slowTokenEndpoint struct {
	*fakeIssuer
	clock interface{ Step(time.Duration) }
	delay time.Duration
}

func (s slowTokenEndpoint) ClientCredentials(ctx context.Context, ep tokenclient.Endpoint) (*tokenclient.Token, error) {
	s.clock.Step(s.delay)
	return s.fakeIssuer.ClientCredentials(ctx, ep)
}

func (s slowTokenEndpoint) Refresh(ctx context.Context, ep tokenclient.Endpoint, rt string) (*tokenclient.Token, error) {
	s.clock.Step(s.delay)
	return s.fakeIssuer.Refresh(ctx, ep, rt)
}

// A provider whose tokens live 5 s and that takes 6 s to answer (a test identity
// server, an overloaded one): every token expired on arrival, and the pass returned a
// bare error. No condition said why (Ready absent), no failure was remembered, and
// every retry, at controller-runtime's pace, sent another request.
func TestACredentialTokenThatExpiresInFlightIsReportedAndBackedOff(t *testing.T) {
	w := newWorld(t)
	w.tokens.lifetime = 5 * time.Second
	w.creds.Tokens = slowTokenEndpoint{fakeIssuer: w.tokens, clock: w.clock, delay: 6 * time.Second}
	for i := range 3 {
		if _, err := w.reconcileCred("pricing"); err != nil {
			t.Errorf("pass %d returned %q, want the expiry reported in status", i, err)
		}
	}
	if n := w.tokens.ccCount(); n != 1 {
		t.Errorf("%d requests in 3 passes, want 1: the next waits for the backoff", n)
	}
	c := w.cred("pricing")
	checkExpiredInFlight(t, c.Status.Conditions, c.Status.LastFailure)
}

// The same for a grant, whose request spent the customer's refresh token: the
// successor is stored all the same, the grant says its refresh token works, and the
// next attempt, with the successor, waits for the backoff (the successor's write must
// not pass for a new login, which would go at once).
func TestAGrantTokenThatExpiresInFlightIsReportedAndItsSuccessorKept(t *testing.T) {
	w := newWorld(t)
	w.tokens.lifetime = 5 * time.Second
	w.grants.Tokens = slowTokenEndpoint{fakeIssuer: w.tokens, clock: w.clock, delay: 6 * time.Second}
	for i := range 3 {
		if _, err := w.reconcileGrant("acme"); err != nil {
			t.Errorf("pass %d returned %q, want the expiry reported in status", i, err)
		}
	}
	if got := w.tokens.refreshes(); len(got) != 1 {
		t.Errorf("sent %v in 3 passes, want refresh-0 alone: the next waits for the backoff", got)
	}
	if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "refresh-1" {
		t.Errorf("refresh-token Secret holds %q, want the successor refresh-1", got)
	}
	g := w.grant("acme")
	checkExpiredInFlight(t, g.Status.Conditions, g.Status.LastFailure)
	wantCondition(t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenValidReason)

	w.clock.SetTime(g.Status.LastFailure.RetryTime.Time)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if got := w.tokens.refreshes(); len(got) != 2 || got[1] != "refresh-1" {
		t.Errorf("after the backoff sent %v, want refresh-0 then its successor refresh-1", got)
	}
}

func checkExpiredInFlight(t *testing.T, conds []metav1.Condition, f *cdv1.FailureStatus) {
	t.Helper()
	if f == nil {
		t.Fatalf("no failure remembered in status (conditions %v)", conds)
	}
	wantCondition(t, conds, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.InvalidTokenResponseReason)
	if msg := condition(t, conds, cdv1.ReadyCondition).Message; !strings.Contains(msg, "expired before it could be stored: its lifetime (5s) is shorter than the round trip") {
		t.Errorf("Ready message %q does not say the token expired in flight", msg)
	}
	if f == nil || f.Reason != cdv1.InvalidTokenResponseReason || f.RetryTime == nil || f.FailedAttempts != 1 {
		t.Fatalf("lastFailure %+v, want one InvalidTokenResponse with a retry time", f)
	}
}

// Each expiry in flight spends the refresh token sent and stores its successor, so each
// next attempt sends another refresh token: a request that differs from the failed one
// in its secret half only, which alone would pass for a customer's new login and count
// from 1 again. It is a retry of the same request (retriedAs): a chain of such answers
// counts 1, 2, 3, and each backoff is longer than the one before.
func TestRepeatedExpiriesInFlightCountOnAndBackOffFurther(t *testing.T) {
	w := newWorld(t)
	w.tokens.lifetime = 5 * time.Second
	w.grants.Tokens = slowTokenEndpoint{fakeIssuer: w.tokens, clock: w.clock, delay: 6 * time.Second}
	var backoffs []time.Duration
	for attempt := int32(1); attempt <= 3; attempt++ {
		if _, err := w.reconcileGrant("acme"); err != nil {
			t.Fatalf("attempt %d: %v", attempt, err)
		}
		f := w.grant("acme").Status.LastFailure
		if f == nil || f.Reason != cdv1.InvalidTokenResponseReason || f.RetryTime == nil {
			t.Fatalf("attempt %d: lastFailure %+v, want an InvalidTokenResponse with a retry time", attempt, f)
		}
		wait := f.RetryTime.Sub(f.LastFailureTime.Time)
		if f.FailedAttempts != attempt || (len(backoffs) > 0 && wait <= backoffs[len(backoffs)-1]) {
			t.Errorf("expiry in flight %d: failedAttempts %d, backoff %s after %v; want %d attempts and a backoff longer than the one before",
				attempt, f.FailedAttempts, wait, backoffs, attempt)
		}
		backoffs = append(backoffs, wait)
		if n := len(w.tokens.refreshes()); n != int(attempt) {
			t.Fatalf("after expiry %d: %d refreshes sent, want %d", attempt, n, attempt)
		}
		w.clock.SetTime(f.RetryTime.Time)
	}
	if got, want := w.tokens.refreshes(), []string{"refresh-0", "refresh-1", "refresh-2"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("sent %v, want each successor in turn %v", got, want)
	}
}
