package controllers

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// A Keycloak realm with an hour-long access token and the default SSO Session Idle of
// 30 minutes answers a refresh with expires_in 3600 and refresh_expires_in 1800. The
// rotation must spend the refresh token before it dies (renewing at 2/3 of the hour, it
// was refused with invalid_grant and the customer had to log in again), and a restarted
// manager, which has only what was stored, must keep that earlier time. Pods are still
// told the access token's own expiry.
func TestARotationComesBeforeTheRefreshTokenExpiresAcrossARestart(t *testing.T) {
	w := newWorld(t)
	w.tokens.lifetime, w.tokens.refreshLifetime = time.Hour, 30*time.Minute
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	g := w.grant("acme")
	dies := epoch.Add(30 * time.Minute)
	if g.Status.RenewalTime == nil || !g.Status.RenewalTime.Time.Before(dies) {
		t.Fatalf("renewalTime %v, want before the refresh token dies at %s", g.Status.RenewalTime, dies)
	}
	renewAt := g.Status.RenewalTime.Time
	wantExpiry := epoch.Add(time.Hour).Format(time.RFC3339)
	if got := string(w.secret("acme-token").Data[cdv1.ExpiresAtKey]); got != wantExpiry || !g.Status.ExpiresAt.Time.Equal(epoch.Add(time.Hour)) {
		t.Errorf("expires_at %s, status.expiresAt %s; want the access token's expiry %s", got, g.Status.ExpiresAt, wantExpiry)
	}

	// A restarted manager: a new reconciler, nothing in memory.
	w.clock.SetTime(epoch.Add(time.Minute))
	w.grants = &CDUserGrantReconciler{Client: w.client, APIReader: w.client, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Holder: "me-after-restart"}
	res, err := w.reconcileGrant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if want := renewAt.Sub(w.clock.Now()); res.RequeueAfter != want {
		t.Errorf("after a restart: requeue after %s, want %s (the renewal time stored before it)", res.RequeueAfter, want)
	}
	if writes := w.takeWrites(); len(writes) != 0 {
		t.Errorf("a restart with a fresh token wrote %v", writes)
	}

	w.clock.SetTime(renewAt)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if n := len(w.tokens.refreshes()); n != 2 {
		t.Fatalf("at the renewal time, %s before the refresh token dies: %d refreshes in all, want 2", dies.Sub(renewAt), n)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
}

// The same Keycloak realm, and a renewal at ~20 minutes whose answer is lost (a timeout
// after the identity server may have spent the token). The one resend DESIGN §6 allows
// waits for the last safe point before expiry; counted from the access token's expiry
// (58 minutes in), it went out with a refresh token dead since minute 30, was refused,
// and the customer had to log in again. It must come 2 minutes before the refresh token
// dies, and a restarted manager, which has only what was stored, must keep that time:
// the refresh token's expiry is stored with it, in the write that stores the token (the
// four writes of a rotation stay four).
func TestALostAnswersResendComesBeforeTheRefreshTokenDiesAcrossARestart(t *testing.T) {
	w := newWorld(t)
	w.tokens.lifetime, w.tokens.refreshLifetime = time.Hour, 30*time.Minute
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if writes := w.takeWrites(); len(writes) != 4 {
		t.Errorf("a rotation wrote %v, want 4 writes (DESIGN §9)", writes)
	}
	dies := epoch.Add(30 * time.Minute)
	renewAt := w.grant("acme").Status.RenewalTime.Time

	w.clock.SetTime(renewAt)
	w.tokens.failNext(lostAnswer)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	g := w.grant("acme")
	wantResend := dies.Add(-rotation.MinRenewMargin)
	if f := g.Status.LastFailure; f == nil || f.RetryTime == nil || !f.RetryTime.Time.Equal(wantResend) {
		t.Fatalf("after a lost answer %s in: status.lastFailure %+v, want the resend at %s, 2 minutes before the refresh token dies at %s", renewAt.Sub(epoch), g.Status.LastFailure, wantResend, dies)
	}
	if !g.Status.ExpiresAt.Time.Equal(epoch.Add(time.Hour)) {
		t.Errorf("status.expiresAt %s, want the access token's expiry %s", g.Status.ExpiresAt, epoch.Add(time.Hour))
	}

	// A restarted manager: a new reconciler, nothing in memory.
	w.clock.SetTime(renewAt.Add(time.Minute))
	w.grants = &CDUserGrantReconciler{Client: w.client, APIReader: w.client, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Holder: "me-after-restart"}
	// Its passes wait out the other process's in-flight mark, then the backoff, and
	// come back no later than the resend time.
	for w.clock.Now().Before(wantResend) {
		res, err := w.reconcileGrant("acme")
		if err != nil {
			t.Fatal(err)
		}
		if n := len(w.tokens.refreshes()); n != 2 {
			t.Fatalf("after a restart, %s in: %d refreshes in all, want 2 until the resend time", w.clock.Now().Sub(epoch), n)
		}
		next := w.clock.Now().Add(res.RequeueAfter)
		if res.RequeueAfter <= 0 || next.After(wantResend) {
			t.Fatalf("after a restart, %s in: requeue after %s, want a pass no later than the resend %s in, 2 minutes before the refresh token dies",
				w.clock.Now().Sub(epoch), res.RequeueAfter, wantResend.Sub(epoch))
		}
		w.clock.SetTime(next)
	}
	// The resend is answered 503 (the token not spent): the restarted manager, which
	// read the refresh token's expiry back from its Secret, tries again within a minute.
	w.clock.SetTime(wantResend)
	w.tokens.failNext(&tokenclient.Error{Kind: tokenclient.KindTransient, StatusCode: 503})
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	sent := w.tokens.refreshes()
	if len(sent) != 3 || sent[2] != sent[1] {
		t.Fatalf("at the resend time: refreshes %v, want the unanswered token sent once more", sent)
	}
	f := w.grant("acme").Status.LastFailure
	if latest := wantResend.Add(rotation.ExpiringRetry); f == nil || f.RetryTime == nil || f.RetryTime.Time.After(latest) {
		t.Fatalf("after a restart, a failure %s in: status.lastFailure %+v, want a retry no later than %s, before the refresh token dies", wantResend.Sub(epoch), f, latest)
	}
	w.clock.SetTime(f.RetryTime.Time)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if n := len(w.tokens.refreshes()); n != 4 {
		t.Fatalf("at the retry time: %d refreshes in all, want 4", n)
	}
	g = w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	if g.Status.LastFailure != nil {
		t.Errorf("status.lastFailure %+v after the resend was answered", g.Status.LastFailure)
	}
}

// A backoff after repeated failures late in the refresh token's life waits no longer
// than the refresh token's last safe point either, and past it tries at most a minute
// apart, each try by a restarted manager: counted from the access token's expiry, the
// backoff ran past that point towards its 10-minute ceiling, after the refresh token
// had died.
func TestABackoffEndsBeforeTheRefreshTokenDies(t *testing.T) {
	w := newWorld(t)
	w.tokens.lifetime, w.tokens.refreshLifetime = time.Hour, 30*time.Minute
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	dies := epoch.Add(30 * time.Minute)
	safe := dies.Add(-rotation.MinRenewMargin)
	unavailable := &tokenclient.Error{Kind: tokenclient.KindTransient, StatusCode: 503}
	w.clock.SetTime(w.grant("acme").Status.RenewalTime.Time)
	for w.clock.Now().Before(dies.Add(-time.Minute)) {
		// Each try by a restarted manager, which has only what was stored.
		w.grants = &CDUserGrantReconciler{Client: w.client, APIReader: w.client, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Holder: "me"}
		w.tokens.failNext(unavailable)
		if _, err := w.reconcileGrant("acme"); err != nil {
			t.Fatal(err)
		}
		f := w.grant("acme").Status.LastFailure
		if f == nil || f.RetryTime == nil {
			t.Fatalf("%s in: status.lastFailure %+v, want a retry time", w.clock.Now().Sub(epoch), f)
		}
		latest := safe
		if !w.clock.Now().Before(safe) {
			latest = w.clock.Now().Add(rotation.ExpiringRetry)
		}
		if f.RetryTime.Time.After(latest) {
			t.Fatalf("a failure %s in (attempt %d) is retried at %s, want no later than %s: the refresh token dies at %s",
				w.clock.Now().Sub(epoch), f.FailedAttempts, f.RetryTime.Time.Sub(epoch), latest.Sub(epoch), dies.Sub(epoch))
		}
		w.clock.SetTime(f.RetryTime.Time)
	}
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
}

// spec.renewBefore 5m on an hour-long token renews at 25 minutes when the refresh token
// lives 30: the Ready condition says why the renewal is not 55 minutes in, and a
// restarted manager that finds the token fresh says the same (and writes nothing).
func TestARenewBeforeCountedFromTheRefreshTokenIsSaid(t *testing.T) {
	w := newWorld(t)
	w.tokens.lifetime, w.tokens.refreshLifetime = time.Hour, 30*time.Minute
	g := w.grant("acme")
	w.update(g, func() { g.Spec.RenewBefore = &metav1.Duration{Duration: 5 * time.Minute} })
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	g = w.grant("acme")
	if want := epoch.Add(25 * time.Minute); !g.Status.RenewalTime.Time.Equal(want) {
		t.Fatalf("renewalTime %s, want %s", g.Status.RenewalTime, want)
	}
	want := "Access token is in Secret acme-token; the refresh token expires before the access token (refresh_expires_in 30m0s, expires_in 1h0m0s): renewing 5m0s before the refresh token expires"
	if got := meta.FindStatusCondition(g.Status.Conditions, cdv1.ReadyCondition).Message; got != want {
		t.Errorf("Ready says %q, want %q", got, want)
	}
	w.takeWrites()

	w.clock.SetTime(epoch.Add(time.Minute))
	w.grants = &CDUserGrantReconciler{Client: w.client, APIReader: w.client, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Holder: "me-after-restart"}
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if got := meta.FindStatusCondition(w.grant("acme").Status.Conditions, cdv1.ReadyCondition).Message; got != want {
		t.Errorf("after a restart, Ready says %q, want %q", got, want)
	}
	if writes := w.takeWrites(); len(writes) != 0 {
		t.Errorf("a restart with a fresh token wrote %v", writes)
	}
}

// Without spec.renewBefore the default plan renews a third of the lifetime (and jitter)
// before expiry; a refresh token that lives 30 minutes against an hour-long access token
// moves that from ~38 minutes in to ~18, and Ready says why. The words carry no margin,
// which the jitter changes from one renewal to the next: a pass that finds the token
// fresh, in this process or a restarted one, and the next rotation say the same, and the
// fresh passes write nothing.
func TestADefaultPlanMovedEarlierByTheRefreshTokenIsSaid(t *testing.T) {
	w := newWorld(t)
	w.tokens.lifetime, w.tokens.refreshLifetime = time.Hour, 30*time.Minute
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	g := w.grant("acme")
	if dies := epoch.Add(30 * time.Minute); g.Status.RenewalTime == nil || !g.Status.RenewalTime.Time.Before(dies) {
		t.Fatalf("renewalTime %v, want before the refresh token dies at %s", g.Status.RenewalTime, dies)
	}
	want := "Access token is in Secret acme-token; the refresh token expires before the access token (refresh_expires_in 30m0s, expires_in 1h0m0s): renewing before the refresh token expires"
	if got := meta.FindStatusCondition(g.Status.Conditions, cdv1.ReadyCondition).Message; got != want {
		t.Errorf("Ready says %q, want %q", got, want)
	}
	w.takeWrites()

	w.clock.SetTime(epoch.Add(time.Minute))
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	w.grants = &CDUserGrantReconciler{Client: w.client, APIReader: w.client, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Holder: "me-after-restart"}
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if got := meta.FindStatusCondition(w.grant("acme").Status.Conditions, cdv1.ReadyCondition).Message; got != want {
		t.Errorf("after a restart, Ready says %q, want %q", got, want)
	}
	if writes := w.takeWrites(); len(writes) != 0 {
		t.Errorf("passes that found the token fresh wrote %v", writes)
	}

	w.clock.SetTime(w.grant("acme").Status.RenewalTime.Time)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	g = w.grant("acme")
	if g.Status.RotationCount != 2 {
		t.Fatalf("rotationCount %d at the renewal time, want 2", g.Status.RotationCount)
	}
	if got := meta.FindStatusCondition(g.Status.Conditions, cdv1.ReadyCondition).Message; got != want {
		t.Errorf("after the next rotation, Ready says %q, want %q", got, want)
	}
}
