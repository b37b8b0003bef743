package controllers

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
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

// A Keycloak realm (an hour-long access token, refresh tokens of 30 minutes) answers a
// renewal unusably, with a successor and its refresh_expires_in. The successor's life
// was dropped with the rest of the answer: stored without it, the successor was taken to
// live as long as the access token, and when its own send lost its answer the one
// resend DESIGN §6 allows waited for the access token's last safe point (58 minutes in),
// long after the successor had died at ~50: refused, and the customer had to log in
// again. The successor's life is stored with it, and the resend comes 2 minutes before
// it dies.
func TestAnUnusableAnswersSuccessorIsResentBeforeItDies(t *testing.T) {
	w := newWorld(t)
	w.tokens.lifetime, w.tokens.refreshLifetime = time.Hour, 30*time.Minute
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	renewAt := w.grant("acme").Status.RenewalTime.Time
	w.clock.SetTime(renewAt)
	w.tokens.failNext(&tokenclient.Error{Kind: tokenclient.KindInvalidResponse, StatusCode: 200, Description: "no access_token in the answer",
		Token: &tokenclient.Token{RefreshToken: "refresh-x", RefreshLifetime: 30 * time.Minute}})
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	dies := renewAt.Add(30 * time.Minute)
	first := w.grant("acme").Status.LastFailure
	if first == nil || first.RetryTime == nil {
		t.Fatalf("after an unusable answer: status.lastFailure %+v, want a retry time", first)
	}

	// The successor goes after the backoff, and its answer is lost.
	w.clock.SetTime(first.RetryTime.Time)
	w.tokens.failNext(lostAnswer)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if sent := w.tokens.refreshes(); len(sent) != 3 || sent[2] != "refresh-x" {
		t.Fatalf("refreshes %v, want the successor refresh-x sent third", sent)
	}
	want := dies.Add(-rotation.MinRenewMargin)
	if f := w.grant("acme").Status.LastFailure; f == nil || f.RetryTime == nil || !f.RetryTime.Time.Equal(want) {
		t.Fatalf("after the successor's answer was lost %s in: status.lastFailure %+v, want the resend %s in, 2 minutes before the successor dies %s in",
			w.clock.Now().Sub(epoch), f, want.Sub(epoch), dies.Sub(epoch))
	}
}

// An unusable answer's successor in a capped session's last second comes with
// refresh_expires_in 0, as Keycloak rounds what is left down: it dies with the session,
// as an issued answer's successor would, and is stored so, not as a token without a
// limit whose retry may wait for as long as the backoff says.
func TestAnUnusableAnswersSuccessorInASessionsLastSecondDiesWithIt(t *testing.T) {
	w := newWorld(t)
	ends := epoch.Add(time.Second)
	w.storeRefreshLife(rotation.Schedule{Issued: epoch.Add(-3 * time.Minute), ExpiresAt: ends})
	w.tokens.failNext(unusableWith("refresh-x"))
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	life, ok := secrets.RefreshLife(w.secret("acme-refresh"), rotation.Hash("refresh-x"))
	if !ok || !life.ExpiresAt.Equal(ends) {
		t.Errorf("the successor's stored life %+v (stored: %t), want it to end with the session at %s", life, ok, ends)
	}
}
