package controllers

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// unusableWith is a 200 the operator cannot use (no access token) that carries a new
// refresh token: the one sent is spent all the same.
func unusableWith(rt string) error {
	return &tokenclient.Error{Kind: tokenclient.KindInvalidResponse, StatusCode: 200, Description: "no access_token in the answer", Token: &tokenclient.Token{RefreshToken: rt}}
}

// An unusable answer that carries a new refresh token spends the one sent: the
// successor is stored, and the failure is the answered request's. The next request,
// with the successor, is a retry of it, not a customer's new login: it waits for the
// backoff, and a second unusable answer counts on.
func TestAnUnusableAnswersSuccessorIsTriedAfterTheBackoff(t *testing.T) {
	w := newWorld(t)
	w.tokens.failNext(unusableWith("refresh-x"))
	for i := range 3 {
		if _, err := w.reconcileGrant("acme"); err != nil {
			t.Fatalf("pass %d: %v", i, err)
		}
	}
	if diff := cmp.Diff([]string{"refresh-0"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("sent in 3 passes (-want +got): the successor must wait for the backoff\n%s", diff)
	}
	if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "refresh-x" {
		t.Errorf("refresh-token Secret holds %q, want the successor refresh-x", got)
	}
	g := w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.InvalidTokenResponseReason)
	wantCondition(t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenValidReason)
	first := g.Status.LastFailure
	if first == nil || first.Reason != cdv1.InvalidTokenResponseReason || first.FailedAttempts != 1 || first.RetryTime == nil {
		t.Fatalf("lastFailure %+v, want one InvalidTokenResponse with a retry time", first)
	}

	// After the backoff the successor goes, and is answered unusably again.
	w.tokens.failNext(unusableWith("refresh-y"))
	w.clock.SetTime(first.RetryTime.Time)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"refresh-0", "refresh-x"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("sent after the backoff (-want +got):\n%s", diff)
	}
	second := w.grant("acme").Status.LastFailure
	if second == nil || second.FailedAttempts != 2 || second.RetryTime == nil || second.RetryTime.Sub(second.LastFailureTime.Time) <= first.RetryTime.Sub(first.LastFailureTime.Time) {
		t.Fatalf("lastFailure after a second unusable answer %+v, want 2 attempts and a longer backoff than the first's %+v", second, first)
	}
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if n := len(w.tokens.refreshes()); n != 2 {
		t.Errorf("%d refreshes sent, want 2: refresh-y waits for the second backoff", n)
	}

	w.clock.SetTime(second.RetryTime.Time)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"refresh-0", "refresh-x", "refresh-y"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("sent (-want +got):\n%s", diff)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
}
