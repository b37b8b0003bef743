package controllers

import (
	"testing"
	"time"

	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// restart replaces both reconcilers by new ones, as a new process has them: no memory,
// the world's clients, clock and issuer, and the leader election won now (the manager's
// runnable calls Elected).
func (w *world) restart(holder string) {
	g, c := w.grants, w.creds
	w.grants = &CDUserGrantReconciler{Client: g.Client, APIReader: g.APIReader, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Holder: holder, Revoker: &fakeRevoker{}}
	w.creds = &CDCredentialReconciler{Client: c.Client, APIReader: c.APIReader, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Key: c.Key}
	w.grants.Elected(w.clock.Now())
	w.creds.Elected(w.clock.Now())
}

// A process whose clock ran an hour ahead (a node without NTP, a VM clock corrected at
// boot) issued a grant's token; the next process has the right clock. The token really
// expires 30 minutes after it was issued, but the stored schedule says 1h30m from then.
// Taken at its word, pods would hold an expired token for an hour while the grant says
// Ready.
func TestAGrantTokenStampedByAClockAheadIsRenewedWithinItsLifetime(t *testing.T) {
	w := newWorld(t)
	w.clock.SetTime(epoch.Add(time.Hour)) // the first process's clock
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	issued := w.grant("acme").Status.LastRotationTime.Time

	w.clock.SetTime(epoch.Add(time.Second)) // the right clock, a second after the real issuance
	w.restart("me-2")
	res, err := w.reconcileGrant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter > 20*time.Minute {
		t.Errorf("requeue after %s: past 2/3 of the token's 30m lifetime (lastRotationTime is %s in the future)", res.RequeueAfter, issued.Sub(w.clock.Now()))
	}
	if got := w.grant("acme").Status.RenewalTime.Time; got.After(w.clock.Now().Add(20 * time.Minute)) {
		t.Errorf("status.renewalTime %s after now: not when the token is renewed", got.Sub(w.clock.Now()))
	}
	w.clock.SetTime(epoch.Add(31 * time.Minute)) // the token pods hold has expired
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if n := len(w.tokens.refreshes()); n != 2 {
		t.Errorf("a minute after the token really expired: %d refreshes in all, want 2 (renewed)", n)
	}
}

// The same for a CDCredential: its stored schedule was trusted however far in the future
// lastIssuedTime lay.
func TestACredentialTokenStampedByAClockAheadIsRenewedWithinItsLifetime(t *testing.T) {
	w := newWorld(t)
	w.clock.SetTime(epoch.Add(time.Hour))
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	issued := w.cred("pricing").Status.LastIssuedTime.Time

	w.clock.SetTime(epoch.Add(time.Second))
	w.restart("me-2")
	res, err := w.reconcileCred("pricing")
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter > 20*time.Minute {
		t.Errorf("requeue after %s: past 2/3 of the token's 30m lifetime (lastIssuedTime is %s in the future)", res.RequeueAfter, issued.Sub(w.clock.Now()))
	}
	w.clock.SetTime(epoch.Add(31 * time.Minute))
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	if n := w.tokens.ccCount(); n != 2 {
		t.Errorf("a minute after the token really expired: %d requests in all, want 2 (renewed)", n)
	}
}

// ActiveSince anchors stored times from a clock ahead, so it must not move from pass to
// pass, and never lie after now: a clock stepped back below it moves it to now, once.
func TestWhenThisProcessCouldFirstActIsNeverAfterNow(t *testing.T) {
	var a activeSince
	if got := a.since(epoch); !got.IsZero() {
		t.Errorf("before the election: %s, want zero (unknown)", got)
	}
	a.elected(epoch)
	if got := a.since(epoch.Add(time.Hour)); !got.Equal(epoch) {
		t.Errorf("an hour after the election: %s, want the election %s", got, epoch)
	}
	stepped := epoch.Add(-10 * time.Minute) // the clock stepped back below the election
	if got := a.since(stepped); !got.Equal(stepped) {
		t.Errorf("after the clock was stepped back: %s, want now %s", got, stepped)
	}
	if got := a.since(stepped.Add(time.Minute)); !got.Equal(stepped) {
		t.Errorf("a minute later: %s, want %s still (it must not move with every pass)", got, stepped)
	}
}

// Another process's in-flight mark stamped by a clock an hour ahead (that process then
// died) held the grant for an hour and two minutes, though this process won the election
// and a dead process's mark is waited for one HolderTimeout after that (DESIGN §6). The
// access token in the Secret expired meanwhile.
func TestAMarkStampedByAClockAheadHoldsNoLongerThanTheHolderTimeoutAfterTheElection(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	w.clock.SetTime(epoch.Add(25 * time.Minute)) // past the renewal, 5 minutes before expiry
	w.mark("other", epoch.Add(25*time.Minute+time.Hour), 1)
	w.restart("me-2")
	res, err := w.reconcileGrant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter > 2*time.Minute {
		t.Errorf("held for %s; want at most the 2m holder timeout after winning the election (the token expires in 5m)", res.RequeueAfter)
	}
	w.clock.Step(2*time.Minute + time.Second)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if n := len(w.tokens.refreshes()); n != 2 {
		t.Errorf("holder timeout after the election: %d refreshes in all, want 2 (the marked token resent once)", n)
	}
}

// A failure recorded by a process whose clock ran an hour ahead left a retry time an
// hour in the next process's future: a 5-second backoff became an hour with no token.
func TestABackoffRecordedByAClockAheadWaitsItsOwnLength(t *testing.T) {
	w := newWorld(t)
	w.clock.SetTime(epoch.Add(time.Hour))
	w.tokens.failNext(&tokenclient.Error{Kind: tokenclient.KindTransient, StatusCode: 503})
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	f := w.cred("pricing").Status.LastFailure
	if f == nil || f.RetryTime == nil {
		t.Fatalf("no retry time in %+v", f)
	}
	wait := f.RetryTime.Sub(f.LastFailureTime.Time)

	w.clock.SetTime(epoch)
	w.restart("me-2")
	res, err := w.reconcileCred("pricing")
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter > wait {
		t.Errorf("requeue after %s: beyond the failure's own wait of %s (and the 10m backoff cap)", res.RequeueAfter, wait)
	}
	if f := w.cred("pricing").Status.LastFailure; f == nil || f.LastFailureTime.After(w.clock.Now()) || f.RetryTime == nil || f.RetryTime.After(w.clock.Now().Add(wait)) {
		t.Errorf("status.lastFailure %+v: still in the future", f)
	}
	w.clock.Step(res.RequeueAfter)
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	if n := w.tokens.ccCount(); n != 2 {
		t.Errorf("once the backoff has passed: %d requests in all, want 2 (retried)", n)
	}
}

// A renewal whose answer is lost keeps its one resend for the last safe point before the
// token in the Secret expires (DESIGN §6.5). For a token stamped by a clock an hour
// ahead, that point came from the stored expiry: the resend waited an hour past the
// token's real expiry.
func TestALostAnswersResendGoesOutBeforeATokenStampedByAClockAheadExpires(t *testing.T) {
	w := newWorld(t)
	w.clock.SetTime(epoch.Add(time.Hour))
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	w.clock.SetTime(epoch.Add(time.Second))
	w.restart("me-2")
	res, err := w.reconcileGrant("acme")
	if err != nil {
		t.Fatal(err)
	}
	w.clock.Step(res.RequeueAfter) // the renewal, counted from the election
	w.tokens.failNext(lostAnswer)
	if res, err = w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	// The token was issued no later than the election, a second in: it expires by then
	// plus its 30 minutes.
	safe := epoch.Add(time.Second + 30*time.Minute - rotation.MinRenewMargin)
	if at := w.clock.Now().Add(res.RequeueAfter); at.After(safe) {
		t.Errorf("the lost answer's resend at +%s, %s past the last safe point before the token expires", at.Sub(epoch), at.Sub(safe))
	}
	w.clock.Step(res.RequeueAfter)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if got := w.tokens.refreshes(); len(got) != 3 {
		t.Errorf("sent %v by +%s, want the lost answer's token resent once", got, w.clock.Now().Sub(epoch))
	}
}
