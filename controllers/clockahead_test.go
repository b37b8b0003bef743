package controllers

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
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
// Ready. Nothing stored says when the token was really issued: it is renewed at once.
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
	if n := len(w.tokens.refreshes()); n != 2 {
		t.Errorf("after the hand-over: %d refreshes in all, want 2 (renewed at once: lastRotationTime was %s in the future)", n, issued.Sub(w.clock.Now()))
	}
	if res.RequeueAfter > 20*time.Minute {
		t.Errorf("requeue after %s: past 2/3 of the token's 30m lifetime", res.RequeueAfter)
	}
	g := w.grant("acme")
	if got := g.Status.RenewalTime.Time; got.After(w.clock.Now().Add(20 * time.Minute)) {
		t.Errorf("status.renewalTime %s after now: not when the token is renewed", got.Sub(w.clock.Now()))
	}
	if got := g.Status.ExpiresAt.Time; !got.Equal(w.clock.Now().Add(30 * time.Minute)) {
		t.Errorf("status.expiresAt %s after now, want the renewed token's 30m", got.Sub(w.clock.Now()))
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
	if n := w.tokens.ccCount(); n != 2 {
		t.Errorf("after the hand-over: %d requests in all, want 2 (renewed at once: lastIssuedTime was %s in the future)", n, issued.Sub(w.clock.Now()))
	}
	if res.RequeueAfter > 20*time.Minute {
		t.Errorf("requeue after %s: past 2/3 of the token's 30m lifetime", res.RequeueAfter)
	}
	if got := w.cred("pricing").Status.ExpiresAt.Time; !got.Equal(w.clock.Now().Add(30 * time.Minute)) {
		t.Errorf("status.expiresAt %s after now, want the renewed token's 30m", got.Sub(w.clock.Now()))
	}
}

// handOverAhead has a leader whose clock runs an hour ahead store a token (issue, a pass
// of the CR under it) at the real time epoch and die after, into the token's 30-minute
// life; a leader with the right clock is elected then. The token expires at +30m, 12
// minutes after an election at +18m, and nothing stored says so: counted from the
// election, it was renewed at +38m, 8 minutes after it had expired, while the CR said
// Ready.
func (w *world) handOverAhead(issue func(string) (ctrl.Result, error), name string, after time.Duration) {
	w.t.Helper()
	w.clock.SetTime(epoch.Add(time.Hour))
	if _, err := issue(name); err != nil {
		w.t.Fatal(err)
	}
	w.recorded()
	w.clock.SetTime(epoch.Add(after))
	w.restart("me-2")
}

// wantRenewedAhead fails unless the pass recorded why it renewed the token at once: the
// one it replaced was stamped ahead by ahead.
func wantRenewedAhead(t *testing.T, events []string, ahead time.Duration) {
	t.Helper()
	want := "Normal " + cdv1.TokenIssuedReason + " Renewed the token at once: the token it replaces was stamped as issued " + ahead.String() + " after this manager's clock"
	for _, e := range events {
		if strings.HasPrefix(e, want) {
			return
		}
	}
	t.Errorf("events %q, want one beginning %q", events, want)
}

func TestAGrantTokenStampedByAClockAheadIsRenewedAtOnceByTheNextLeader(t *testing.T) {
	w := newWorld(t)
	w.handOverAhead(w.reconcileGrant, "acme", 18*time.Minute)
	res, err := w.reconcileGrant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(w.tokens.refreshes()); n != 2 {
		t.Fatalf("at the election, 18m into the token's 30m life: %d refreshes in all, want 2 (renewed at once, not at election + 20m, after it expired)", n)
	}
	g := w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	now := w.clock.Now()
	if !g.Status.LastRotationTime.Time.Equal(now) || !g.Status.ExpiresAt.Time.Equal(now.Add(30*time.Minute)) {
		t.Errorf("status says a token issued at +%s expiring at +%s, want the renewed one issued now (+%s)",
			g.Status.LastRotationTime.Sub(epoch), g.Status.ExpiresAt.Sub(epoch), now.Sub(epoch))
	}
	if at := now.Add(res.RequeueAfter); !at.Equal(g.Status.RenewalTime.Time) {
		t.Errorf("requeued for +%s, want the renewed token's renewal at +%s", at.Sub(epoch), g.Status.RenewalTime.Sub(epoch))
	}
	wantRenewedAhead(t, w.recorded(), 42*time.Minute)

	// Only once: the token stored now is stamped by this clock.
	w.clock.Step(time.Minute)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if n := len(w.tokens.refreshes()); n != 2 {
		t.Errorf("a minute after the hand-over: %d refreshes in all, want 2", n)
	}
	if events := w.recorded(); len(events) != 0 {
		t.Errorf("a minute after the hand-over: events %q, want none", events)
	}
}

func TestACredentialTokenStampedByAClockAheadIsRenewedAtOnceByTheNextLeader(t *testing.T) {
	w := newWorld(t)
	w.handOverAhead(w.reconcileCred, "pricing", 18*time.Minute)
	res, err := w.reconcileCred("pricing")
	if err != nil {
		t.Fatal(err)
	}
	if n := w.tokens.ccCount(); n != 2 {
		t.Fatalf("at the election, 18m into the token's 30m life: %d requests in all, want 2 (renewed at once, not at election + 20m, after it expired)", n)
	}
	c := w.cred("pricing")
	wantCondition(t, c.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	now := w.clock.Now()
	if !c.Status.LastIssuedTime.Time.Equal(now) || !c.Status.ExpiresAt.Time.Equal(now.Add(30*time.Minute)) {
		t.Errorf("status says a token issued at +%s expiring at +%s, want the renewed one issued now (+%s)",
			c.Status.LastIssuedTime.Sub(epoch), c.Status.ExpiresAt.Sub(epoch), now.Sub(epoch))
	}
	if at := now.Add(res.RequeueAfter); !at.Equal(c.Status.RenewalTime.Time) {
		t.Errorf("requeued for +%s, want the renewed token's renewal at +%s", at.Sub(epoch), c.Status.RenewalTime.Sub(epoch))
	}
	wantRenewedAhead(t, w.recorded(), 42*time.Minute)

	w.clock.Step(time.Minute)
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	if n := w.tokens.ccCount(); n != 2 {
		t.Errorf("a minute after the hand-over: %d requests in all, want 2", n)
	}
}

// A token stamped by a clock a second ahead (ordinary skew between nodes, within
// rotation.SkewTolerance) is not renewed early at a hand-over: it keeps its renewal,
// counted from the election.
func TestATokenStampedByAClockASecondAheadIsNotRenewedEarly(t *testing.T) {
	w := newWorld(t)
	w.clock.SetTime(epoch.Add(time.Second))
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	w.clock.SetTime(epoch)
	w.restart("me-2")
	res, err := w.reconcileGrant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(w.tokens.refreshes()); n != 1 {
		t.Errorf("after the hand-over: %d refreshes in all, want 1 (not renewed early)", n)
	}
	if res.RequeueAfter < 17*time.Minute || res.RequeueAfter > 20*time.Minute {
		t.Errorf("requeue after %s, want the token's own renewal, 17-20m into its 30m life", res.RequeueAfter)
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
// token's real expiry. That token is renewed at once after the hand-over, and may have
// expired already: a lost answer then is resent as for a token past its safe point,
// within rotation.ExpiringRetry.
func TestALostAnswersResendGoesOutBeforeATokenStampedByAClockAheadExpires(t *testing.T) {
	w := newWorld(t)
	w.clock.SetTime(epoch.Add(time.Hour))
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	w.clock.SetTime(epoch.Add(time.Second))
	w.restart("me-2")
	w.tokens.failNext(lostAnswer)
	res, err := w.reconcileGrant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if got := w.tokens.refreshes(); len(got) != 2 {
		t.Fatalf("sent %v after the hand-over, want the token renewed at once", got)
	}
	if res.RequeueAfter > rotation.ExpiringRetry {
		t.Errorf("the lost answer's resend in %s, want within %s: the token it renews may have expired already", res.RequeueAfter, rotation.ExpiringRetry)
	}
	w.clock.Step(res.RequeueAfter)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if got := w.tokens.refreshes(); len(got) != 3 || got[1] != got[2] {
		t.Errorf("sent %v by +%s, want the lost answer's token resent once", got, w.clock.Now().Sub(epoch))
	}
}
