package rotation

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)

func TestDecide(t *testing.T) {
	req := Request([]string{"spec-1"}, []string{"secret-1"})
	// edited differs in what the CR's spec decides; newSecret only in a Secret's value.
	edited := Request([]string{"spec-2"}, []string{"secret-1"})
	newSecret := Request([]string{"spec-1"}, []string{"secret-2"})
	fresh := &Schedule{Issued: t0.Add(-10 * time.Minute), RenewAt: t0.Add(10 * time.Minute), ExpiresAt: t0.Add(20 * time.Minute)}
	recent := &Schedule{Issued: t0.Add(-5 * time.Minute), RenewAt: t0.Add(15 * time.Minute), ExpiresAt: t0.Add(25 * time.Minute)}
	due := &Schedule{Issued: t0.Add(-25 * time.Minute), RenewAt: t0.Add(-time.Minute), ExpiresAt: t0.Add(5 * time.Minute)}
	terminal := &Failure{Request: req, Reason: "InvalidClient", Time: t0.Add(-time.Minute), Attempts: 1}
	retrying := &Failure{Request: req, Reason: "TokenRequestFailed", Time: t0.Add(-time.Second), Attempts: 2, Retry: t0.Add(9 * time.Second)}
	recheck := &Failure{Request: req, Reason: "ProductNotAllocated", Time: t0.Add(-time.Minute), Attempts: 1, Recheck: t0.Add(9 * time.Minute)}
	rechecked := &Failure{Request: req, Reason: "ProductNotAllocated", Time: t0.Add(-10 * time.Minute), Attempts: 1, Recheck: t0}
	// backedOff was retried after its floor: the server asked for a longer wait.
	backedOff := &Failure{Request: req, Reason: "RateLimited", Time: t0.Add(-time.Minute), Attempts: 1, Retry: t0.Add(5 * time.Minute)}
	retryingEarly := &Failure{Request: req, Reason: "TokenRequestFailed", Time: t0.Add(-10 * time.Minute), Attempts: 2, Retry: t0.Add(-9 * time.Minute)}
	retryDue := &Failure{Request: req, Reason: "TokenRequestFailed", Time: t0.Add(-time.Minute), Attempts: 2, Retry: t0.Add(-time.Second)}
	// Failures recorded by a process whose clock ran an hour ahead of this one's.
	retryingAhead := &Failure{Request: req, Reason: "TokenRequestFailed", Time: t0.Add(time.Hour), Attempts: 1, Retry: t0.Add(time.Hour + 5*time.Second)}
	recheckAhead := &Failure{Request: req, Reason: "ProductNotAllocated", Time: t0.Add(time.Hour), Attempts: 1, Recheck: t0.Add(time.Hour + 10*time.Minute)}
	terminalAhead := &Failure{Request: req, Reason: "InvalidClient", Time: t0.Add(time.Hour), Attempts: 1}
	stored := func(m Mark) *Refresh {
		return &Refresh{Hash: "sha256:current", Mark: m, Self: "me", HolderTimeout: time.Minute}
	}
	ours := Mark{Hash: "sha256:current", Holder: "me", Since: t0.Add(-time.Minute), Attempts: 1}
	theirs := Mark{Hash: "sha256:current", Holder: "other", Since: t0.Add(-10 * time.Second), Attempts: 1}
	deadTheirs := Mark{Hash: "sha256:current", Holder: "other", Since: t0.Add(-2 * time.Minute), Attempts: 1}
	// aheadTheirs was set by another process whose clock ran an hour ahead of this one's.
	aheadTheirs := Mark{Hash: "sha256:current", Holder: "other", Since: t0.Add(time.Hour), Attempts: 1}
	resent := Mark{Hash: "sha256:current", Holder: "me", Since: t0.Add(-time.Minute), Attempts: 2}
	stale := Mark{Hash: "sha256:previous", Holder: "other", Since: t0.Add(-10 * time.Second), Attempts: 1}
	login := Destination{Hash: DestinationHash("https://id.example.com/connect/token", "login-id"), ClientID: "login-id", Credential: "login"}
	other := Destination{Hash: DestinationHash("https://id.other.example.net/connect/token", "other-id"), ClientID: "other-id", Credential: "other"}
	// sentTo is the stored token with mark m, sent to was (as the mark says), the
	// request now going to now.
	sentTo := func(m Mark, was, now Destination) *Refresh {
		r := stored(m)
		r.Mark.SentTo, r.To = was, now
		return r
	}
	// ahead was stamped by a clock an hour ahead of this one's: issued, by its word, an
	// hour from now.
	ahead := &Schedule{Issued: t0.Add(time.Hour), RenewAt: t0.Add(time.Hour + 20*time.Minute), ExpiresAt: t0.Add(time.Hour + 30*time.Minute)}
	// skewed was stamped by a clock a second ahead of this one's, within SkewTolerance.
	skewed := &Schedule{Issued: t0.Add(time.Second), RenewAt: t0.Add(20*time.Minute + time.Second), ExpiresAt: t0.Add(30*time.Minute + time.Second)}
	// spending is the stored token with mark m, which another pass of this process is
	// spending right now.
	spending := func(m Mark) *Refresh {
		r := stored(m)
		r.OutHere = true
		return r
	}
	newMark := func(attempts int) Mark {
		return Mark{Hash: "sha256:current", Holder: "me", Since: t0, Attempts: attempts}
	}

	cases := map[string]struct {
		in   Input
		want Decision
	}{
		"a credential without a token asks for one": {
			in: Input{Request: req}, want: Send{},
		},
		"a credential whose token is fresh waits until its renewal time": {
			in: Input{Request: req, Current: fresh}, want: Wait{Until: fresh.RenewAt},
		},
		"a credential whose token is due asks for a new one": {
			in: Input{Request: req, Current: due}, want: Send{},
		},
		"a request refused for good is not sent again, even when the token is due": {
			in: Input{Request: req, Current: due, Failure: terminal}, want: Stop{Failure: *terminal},
		},
		"a refusal the identity server may fix is not sent again before its recheck time": {
			in: Input{Request: req, Current: due, Failure: recheck}, want: Stop{Failure: *recheck},
		},
		"a refusal the identity server may fix is sent again at its recheck time": {
			in: Input{Request: req, Current: due, Failure: rechecked}, want: Send{},
		},
		"a changed secret value (a fixed client secret, a new login) is sent at once after a refusal": {
			in: Input{Request: newSecret, Failure: terminal, Lifetime: 30 * time.Minute}, want: Send{},
		},
		// DESIGN §8: flipping a field back and forth must not buy a fresh budget of
		// attempts per edit, so an edited request waits a third of the lifetime.
		"an edited request waits a third of the token lifetime after a refusal": {
			in:   Input{Request: edited, Failure: terminal, Lifetime: 3 * time.Hour},
			want: Defer{Until: terminal.Time.Add(time.Hour), AfterFailure: true},
		},
		"an edited request waits the fallback floor after a refusal when no lifetime is known": {
			in:   Input{Request: edited, Failure: terminal},
			want: Defer{Until: terminal.Time.Add(UnknownLifetimeFloor), AfterFailure: true},
		},
		"an edited request is sent once a third of the lifetime has passed since the refusal": {
			in: Input{Request: edited, Failure: terminal, Lifetime: 3 * time.Minute}, want: Send{},
		},
		"an edit during a backoff does not end the backoff early": {
			in:   Input{Request: edited, Failure: backedOff, Lifetime: 30 * time.Second},
			want: Defer{Until: backedOff.Retry, AfterFailure: true},
		},
		// The budget must not outlast the token pods have: a renewal that failed late in
		// its life, then an edit that fixes it, still gets a token before that one expires.
		"an edited request after a late failure goes out before the token in the Secret expires": {
			in:   Input{Request: edited, Failure: retrying, Lifetime: 30 * time.Minute, Last: due},
			want: Defer{Until: due.ExpiresAt.Add(-MinRenewMargin), AfterFailure: true},
		},
		"an edited request after a late failure goes out at once when the token in the Secret is about to expire": {
			in:   Input{Request: edited, Failure: retryingEarly, Lifetime: 30 * time.Minute, Last: &Schedule{Issued: t0.Add(-29 * time.Minute), RenewAt: t0.Add(-9 * time.Minute), ExpiresAt: t0.Add(time.Minute)}},
			want: Send{},
		},
		// A refresh token that dies before the access token (Keycloak's
		// refresh_expires_in) is as much a deadline: held to the floor (19 minutes away)
		// the edit would go out with a dead refresh token, and the customer log in again.
		"an edited request after a late failure goes out before the stored refresh token dies, when that comes first": {
			in: Input{Request: edited, Failure: terminal, Lifetime: time.Hour,
				Last:    &Schedule{Issued: t0.Add(-20 * time.Minute), RenewAt: t0.Add(-2 * time.Minute), ExpiresAt: t0.Add(40 * time.Minute)},
				Refresh: &Refresh{Hash: "sha256:current", Self: "me", HolderTimeout: time.Minute, Expires: t0.Add(10 * time.Minute)}},
			want: Defer{Until: t0.Add(8 * time.Minute), AfterFailure: true},
		},
		"an edited request after a late failure waits for the access token's last safe point when the refresh token outlives it": {
			in: Input{Request: edited, Failure: terminal, Lifetime: time.Hour,
				Last:    &Schedule{Issued: t0.Add(-50 * time.Minute), RenewAt: t0.Add(-12 * time.Minute), ExpiresAt: t0.Add(10 * time.Minute)},
				Refresh: &Refresh{Hash: "sha256:current", Self: "me", HolderTimeout: time.Minute, Expires: t0.Add(time.Hour)}},
			want: Defer{Until: t0.Add(8 * time.Minute), AfterFailure: true},
		},
		// ...but that is one request, not one per edit: once a request failed after the
		// point the token was about to expire, edits wait the floor again.
		"edits after the token in the Secret expired wait the floor after the last failure": {
			in:   Input{Request: edited, Failure: terminal, Lifetime: 30 * time.Minute, Last: &Schedule{Issued: t0.Add(-40 * time.Minute), RenewAt: t0.Add(-20 * time.Minute), ExpiresAt: t0.Add(-10 * time.Minute)}},
			want: Defer{Until: terminal.Time.Add(10 * time.Minute), AfterFailure: true},
		},
		// DESIGN §4: whatever the spec says, never renewed sooner than lifetime/3 after
		// issuance. A token requested for something else leaves Current nil, not Last.
		"a changed request waits until a third of the last token's lifetime has passed": {
			in: Input{Request: req, Last: recent}, want: Defer{Until: t0.Add(5 * time.Minute)},
		},
		"a changed request is sent once a third of the last token's lifetime has passed": {
			in: Input{Request: req, Last: fresh}, want: Send{},
		},
		"a changed request waits for the last token's renewal time when its issuance is unknown": {
			in:   Input{Request: req, Last: &Schedule{RenewAt: fresh.RenewAt, ExpiresAt: fresh.ExpiresAt}},
			want: Defer{Until: fresh.RenewAt},
		},
		"a grant's changed request waits without marking its refresh token": {
			in: Input{Request: req, Last: recent, Refresh: stored(Mark{})}, want: Defer{Until: t0.Add(5 * time.Minute)},
		},
		"an interrupted rotation is resumed whatever changed since the last token": {
			in: Input{Request: req, Last: recent, Refresh: stored(ours)}, want: Send{Resume: true, Mark: newMark(2)},
		},
		"a failure still backing off waits for its retry time": {
			in: Input{Request: req, Failure: retrying}, want: Backoff{Until: retrying.Retry},
		},
		// README "Rotating refresh tokens safely" 5: a lost answer's one resend waits for
		// the last safe point; a client secret rotated meanwhile (an external secrets
		// tool) must not send it into the same outage seconds later.
		"a resumed rotation whose client secret changed still waits out the backoff of its last failure": {
			in: Input{Request: newSecret, Failure: retrying, Refresh: stored(ours)}, want: Backoff{Until: retrying.Retry},
		},
		"a resumed rotation whose client secret changed is resent once its backoff has passed": {
			in: Input{Request: newSecret, Failure: retryDue, Refresh: stored(ours)}, want: Send{Resume: true, Mark: newMark(2)},
		},
		"a failure whose retry time has come is retried": {
			in: Input{Request: req, Failure: retryDue}, want: Send{},
		},
		"a fresh token is not renewed early because an old failure is still backing off": {
			in: Input{Request: req, Current: fresh, Failure: retrying}, want: Wait{Until: fresh.RenewAt},
		},
		"a result held in memory is stored before anything else": {
			in: Input{Request: req, Pending: true, Failure: terminal, Refresh: stored(ours)}, want: Persist{},
		},
		"a grant whose token is due marks it and spends it": {
			in: Input{Request: req, Current: due, Refresh: stored(Mark{})}, want: Send{Mark: newMark(1)},
		},
		"a grant whose token is fresh waits": {
			in: Input{Request: req, Current: fresh, Refresh: stored(Mark{})}, want: Wait{Until: fresh.RenewAt},
		},
		"a mark left on an older token is overwritten, not resumed": {
			in: Input{Request: req, Current: due, Refresh: stored(stale)}, want: Send{Mark: newMark(1)},
		},
		"our own unanswered mark is resumed once, counted before the resend": {
			in: Input{Request: req, Current: fresh, Refresh: stored(ours)}, want: Send{Resume: true, Mark: newMark(2)},
		},
		"a resumed rotation still waits out the backoff of its last failure": {
			in: Input{Request: req, Failure: retrying, Refresh: stored(ours)}, want: Backoff{Until: retrying.Retry},
		},
		"another process's recent mark is a live rotation: hold until it times out": {
			in: Input{Request: req, Current: due, Refresh: stored(theirs)}, want: Hold{Until: theirs.Since.Add(time.Minute)},
		},
		"an old mark is still held for a full timeout after this process became leader": {
			in:   Input{Request: req, Current: due, Refresh: stored(deadTheirs), ActiveSince: t0.Add(-10 * time.Second)},
			want: Hold{Until: t0.Add(50 * time.Second)},
		},
		"another process's mark older than the holder timeout is a dead process's: resume": {
			in: Input{Request: req, Current: due, Refresh: stored(deadTheirs)}, want: Send{Resume: true, Mark: newMark(2)},
		},
		"a token sent twice without an answer is never sent a third time": {
			in: Input{Request: req, Current: due, Refresh: stored(resent)}, want: Abandon{},
		},
		// The mark of a rotation still out in another pass of this process names this
		// process, as an interrupted one's does: it is no lost answer to resend.
		"our own mark on a token another pass of this process is spending is held a short while, not resumed": {
			in: Input{Request: req, Current: due, Refresh: spending(ours)}, want: Hold{Until: t0.Add(5 * time.Second), Here: true},
		},
		"our own resend still out in another pass is held, not abandoned": {
			in: Input{Request: req, Current: due, Refresh: spending(resent)}, want: Hold{Until: t0.Add(5 * time.Second), Here: true},
		},
		"a token another pass of this process is about to mark is held": {
			in: Input{Request: req, Current: due, Refresh: spending(Mark{})}, want: Hold{Until: t0.Add(5 * time.Second), Here: true},
		},
		"another process's live mark is held for its timeout, whatever this process is doing": {
			in: Input{Request: req, Current: due, Refresh: spending(theirs)}, want: Hold{Until: theirs.Since.Add(time.Minute)},
		},
		// A token whose answer was lost may be live, and belongs to the client it was
		// sent to (RFC 6749 §6): its resend goes there or nowhere.
		"an interrupted rotation is resumed at the client the token was sent to": {
			in:   Input{Request: req, Current: fresh, Refresh: sentTo(ours, login, login)},
			want: Send{Resume: true, Mark: Mark{Hash: "sha256:current", Holder: "me", Since: t0, Attempts: 2, SentTo: login}},
		},
		"an interrupted rotation is not resumed at another client: nothing is sent": {
			in:   Input{Request: edited, Current: fresh, Failure: retryDue, Lifetime: 30 * time.Minute, Refresh: sentTo(ours, login, other)},
			want: Redirected{SentTo: login},
		},
		"an interrupted rotation is held for another client even while its backoff runs": {
			in:   Input{Request: edited, Failure: retrying, Refresh: sentTo(ours, login, other)},
			want: Redirected{SentTo: login},
		},
		"a mark sent twice is abandoned whatever client the request goes to now": {
			in:   Input{Request: req, Refresh: sentTo(resent, login, other)},
			want: Abandon{},
		},
		"a mark written by an earlier version, with no client, is resumed as before": {
			in:   Input{Request: req, Current: fresh, Refresh: sentTo(ours, Destination{}, other)},
			want: Send{Resume: true, Mark: Mark{Hash: "sha256:current", Holder: "me", Since: t0, Attempts: 2, SentTo: other}},
		},
		"a first send records the client it goes to": {
			in:   Input{Request: req, Current: due, Refresh: sentTo(Mark{}, Destination{}, other)},
			want: Send{Mark: Mark{Hash: "sha256:current", Holder: "me", Since: t0, Attempts: 1, SentTo: other}},
		},
		// Nothing stored is trusted to be in the past. A token issued, by its word, more
		// than SkewTolerance after now may have been issued most of a lifetime before
		// this process could first act: it is renewed at once.
		"a token stamped by a clock an hour ahead is renewed at once": {
			in:   Input{Request: req, Current: ahead, Last: ahead, ActiveSince: t0.Add(-5 * time.Minute)},
			want: Send{},
		},
		"a grant's token stamped by a clock an hour ahead is renewed at once": {
			in:   Input{Request: req, Current: ahead, Last: ahead, Refresh: stored(Mark{}), ActiveSince: t0.Add(-5 * time.Minute)},
			want: Send{Mark: newMark(1)},
		},
		"a token stamped by a clock an hour ahead is renewed at once while this process does not know when it could first act": {
			in:   Input{Request: req, Current: ahead, Last: ahead},
			want: Send{},
		},
		"a changed request is not held to the request budget of a token stamped by a clock an hour ahead": {
			in:   Input{Request: req, Last: ahead, ActiveSince: t0.Add(-5 * time.Minute)},
			want: Send{},
		},
		"an edit after a failure goes out at once when the token was stamped by a clock an hour ahead": {
			in:   Input{Request: edited, Failure: terminal, Lifetime: 30 * time.Minute, Last: ahead, ActiveSince: t0.Add(-5 * time.Minute)},
			want: Send{},
		},
		// Failure memory and marks keep their rule whatever the token's schedule says.
		"a backoff recorded by a clock ahead still holds a token stamped by that clock, moved back whole to when this process could first act": {
			in:   Input{Request: req, Current: ahead, Last: ahead, Failure: retryingAhead, ActiveSince: t0.Add(-2 * time.Second)},
			want: Backoff{Until: t0.Add(3 * time.Second)},
		},
		"another process's mark stamped by a clock ahead is held a full timeout after this process could first act, though its token was stamped ahead too": {
			in:   Input{Request: req, Current: ahead, Last: ahead, Refresh: stored(aheadTheirs), ActiveSince: t0.Add(-10 * time.Second)},
			want: Hold{Until: t0.Add(50 * time.Second)},
		},
		// A token issued after now by no more than SkewTolerance (ordinary skew between
		// nodes) is not renewed early: it cannot have been issued after this process
		// could first act, so its schedule counts from there at the latest.
		"a token stamped by a clock a second ahead waits for its renewal counted from when this process could first act": {
			in:   Input{Request: req, Current: skewed, Last: skewed, ActiveSince: t0.Add(-5 * time.Minute)},
			want: Wait{Until: t0.Add(15 * time.Minute)},
		},
		"a token stamped by a clock a second ahead is renewed once its renewal, counted from when this process could first act, has come": {
			in:   Input{Request: req, Current: skewed, Last: skewed, ActiveSince: t0.Add(-20 * time.Minute)},
			want: Send{},
		},
		"a grant's token stamped by a clock a second ahead waits for its renewal counted from when this process could first act": {
			in:   Input{Request: req, Current: skewed, Last: skewed, Refresh: stored(Mark{}), ActiveSince: t0.Add(-5 * time.Minute)},
			want: Wait{Until: t0.Add(15 * time.Minute)},
		},
		"a token stamped by a clock a second ahead counts from now when this process does not know when it could first act": {
			in:   Input{Request: req, Current: skewed, Last: skewed},
			want: Wait{Until: t0.Add(20 * time.Minute)},
		},
		"a token stamped by a clock a second ahead counts from now when the clock was stepped back below when this process could first act": {
			in:   Input{Request: req, Current: skewed, Last: skewed, ActiveSince: t0.Add(10 * time.Minute)},
			want: Wait{Until: t0.Add(20 * time.Minute)},
		},
		"a changed request waits a third of the lifetime of a token stamped by a clock a second ahead, counted from when this process could first act": {
			in:   Input{Request: req, Last: skewed, ActiveSince: t0.Add(-5 * time.Minute)},
			want: Defer{Until: t0.Add(5 * time.Minute)},
		},
		"an edit after a failure goes out before a token stamped by a clock a second ahead expires, counted from when this process could first act": {
			in:   Input{Request: edited, Failure: terminal, Lifetime: 30 * time.Minute, Last: skewed, ActiveSince: t0.Add(-25 * time.Minute)},
			want: Defer{Until: t0.Add(3 * time.Minute), AfterFailure: true},
		},
		"another process's mark stamped by a clock ahead is held a full timeout after this process could first act, no longer": {
			in:   Input{Request: req, Current: due, Refresh: stored(aheadTheirs), ActiveSince: t0.Add(-10 * time.Second)},
			want: Hold{Until: t0.Add(50 * time.Second)},
		},
		"another process's mark stamped by a clock ahead is resumed once that timeout has passed": {
			in:   Input{Request: req, Current: due, Refresh: stored(aheadTheirs), ActiveSince: t0.Add(-2 * time.Minute)},
			want: Send{Resume: true, Mark: newMark(2)},
		},
		"another process's mark stamped by a clock ahead is held from now while this process does not know when it could first act": {
			in:   Input{Request: req, Current: due, Refresh: stored(aheadTheirs)},
			want: Hold{Until: t0.Add(time.Minute)},
		},
		// A failure cannot have been recorded after this process could first act: its
		// deadlines keep their distance from it, counted from there at the latest.
		"a backoff recorded by a clock ahead waits its own length counted from when this process could first act": {
			in:   Input{Request: req, Failure: retryingAhead, ActiveSince: t0.Add(-2 * time.Second)},
			want: Backoff{Until: t0.Add(3 * time.Second)},
		},
		"a backoff recorded by a clock ahead is retried once its own length has passed since this process could first act": {
			in: Input{Request: req, Failure: retryingAhead, ActiveSince: t0.Add(-10 * time.Second)}, want: Send{},
		},
		"a backoff recorded by a clock ahead counts from now when this process does not know when it could first act": {
			in: Input{Request: req, Failure: retryingAhead}, want: Backoff{Until: t0.Add(5 * time.Second)},
		},
		"a refusal recorded by a clock ahead is not sent again before its recheck, counted from when this process could first act": {
			in:   Input{Request: req, Failure: recheckAhead, ActiveSince: t0.Add(-5 * time.Minute)},
			want: Stop{Failure: Failure{Request: req, Reason: "ProductNotAllocated", Time: t0.Add(-5 * time.Minute), Attempts: 1, Recheck: t0.Add(5 * time.Minute)}},
		},
		"a refusal recorded by a clock ahead is sent again at its recheck, counted from when this process could first act": {
			in: Input{Request: req, Failure: recheckAhead, ActiveSince: t0.Add(-10 * time.Minute)}, want: Send{},
		},
		"an edited request waits a third of the lifetime after a refusal recorded by a clock ahead, counted from when this process could first act": {
			in:   Input{Request: edited, Failure: terminalAhead, Lifetime: 30 * time.Minute, ActiveSince: t0.Add(-5 * time.Minute)},
			want: Defer{Until: t0.Add(5 * time.Minute), AfterFailure: true},
		},
		// A new login (the callback) puts a refresh token beside an access token that
		// is still fresh, its renewal planned from the previous refresh token: Keycloak's
		// session token of a login without offline_access dies at SSO Session Idle,
		// before that renewal, and waited for the customer would have to log in again.
		"a fresh token is renewed before the stored refresh token dies, when that comes before its renewal": {
			in: Input{Request: req, Current: fresh, Last: fresh,
				Refresh: &Refresh{Hash: "sha256:current", Self: "me", HolderTimeout: time.Minute, Expires: t0.Add(5 * time.Minute)}},
			want: Wait{Until: t0.Add(3 * time.Minute)},
		},
		"a fresh token is renewed at once when the stored refresh token is about to die": {
			in: Input{Request: req, Current: fresh, Last: fresh,
				Refresh: &Refresh{Hash: "sha256:current", Self: "me", HolderTimeout: time.Minute, Expires: t0.Add(time.Minute)}},
			want: Send{Mark: Mark{Hash: "sha256:current", Holder: "me", Since: t0, Attempts: 1}},
		},
		// The stored token came with the access token: its expiry was counted when the
		// renewal was planned (PlanRefresh), which a capped session's last renewal puts
		// past it on purpose. Pulled back, it would come a third of the lifetime later.
		"a fresh token waits for its renewal planned with the stored refresh token, even past that token's death": {
			in: Input{Request: req, Current: fresh, Last: fresh,
				Refresh: &Refresh{Hash: "sha256:current", Self: "me", HolderTimeout: time.Minute, Expires: t0.Add(5 * time.Minute), Planned: true}},
			want: Wait{Until: fresh.RenewAt},
		},
		"a fresh token waits for its renewal when the stored refresh token outlives it": {
			in: Input{Request: req, Current: fresh, Last: fresh,
				Refresh: &Refresh{Hash: "sha256:current", Self: "me", HolderTimeout: time.Minute, Expires: t0.Add(time.Hour)}},
			want: Wait{Until: fresh.RenewAt},
		},
		// Never sooner than the request budget allows after the access token's issuance
		// (lastSafe, as for an edit).
		"a fresh token renewed for a refresh token that dies sooner still waits a third of its lifetime": {
			in: Input{Request: req, Current: recent, Last: recent,
				Refresh: &Refresh{Hash: "sha256:current", Self: "me", HolderTimeout: time.Minute, Expires: t0.Add(3 * time.Minute)}},
			want: Wait{Until: recent.Earliest()},
		},
		"a rejection remembered for this token stops before the mark is looked at": {
			in: Input{Request: req, Failure: terminal, Refresh: stored(resent)}, want: Stop{Failure: *terminal},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			tc.in.Now = t0
			if diff := cmp.Diff(tc.want, Decide(tc.in)); diff != "" {
				t.Errorf("Decide (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMarksRoundTripThroughAnnotations(t *testing.T) {
	cases := map[string]Mark{
		"a first attempt":        {Hash: "sha256:ab", Holder: "host-1a2b", Since: t0, Attempts: 1},
		"the one allowed resend": {Hash: "sha256:ab", Holder: "host-1a2b", Since: t0, Attempts: 2},
		"a send to a client": {Hash: "sha256:ab", Holder: "host-1a2b", Since: t0, Attempts: 1,
			SentTo: Destination{Hash: DestinationHash("https://id.example.com/connect/token", "login-id"), ClientID: "login id with spaces", Credential: "login"}},
		"a send to a client through no known CDCredential": {Hash: "sha256:ab", Holder: "host-1a2b", Since: t0, Attempts: 2,
			SentTo: Destination{Hash: DestinationHash("https://id.example.com/connect/token", "login-id"), ClientID: "login-id"}},
		"no mark at all is empty": {},
	}
	for name, m := range cases {
		t.Run(name, func(t *testing.T) {
			ann := map[string]string{"unrelated": "kept"}
			WriteMark(ann, m)
			if diff := cmp.Diff(m, ReadMark(ann)); diff != "" {
				t.Errorf("mark changed on the way (-want +got):\n%s", diff)
			}
			ClearMark(ann)
			if diff := cmp.Diff(map[string]string{"unrelated": "kept"}, ann); diff != "" {
				t.Errorf("ClearMark left (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAMarkWrittenByAnOlderReleaseIsAFirstAttempt(t *testing.T) {
	ann := map[string]string{
		"cd.credops.io/rotation-in-flight": "sha256:ab",
		"cd.credops.io/rotation-holder":    "host-1a2b@2026-11-29T10:00:00Z",
	}
	want := Mark{Hash: "sha256:ab", Holder: "host-1a2b", Since: t0, Attempts: 1}
	if diff := cmp.Diff(want, ReadMark(ann)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// An earlier version clears and rewrites marks without knowing the annotation that says
// where a token was sent: one it left behind belongs to another mark, and is not read as
// this one's.
func TestWhereATokenWasSentIsReadOnlyForTheMarkThatSentIt(t *testing.T) {
	login := Destination{Hash: DestinationHash("https://id.example.com/connect/token", "login-id"), ClientID: "login-id", Credential: "login"}
	ann := map[string]string{}
	WriteMark(ann, Mark{Hash: "sha256:ab", Holder: "new", Since: t0, Attempts: 1, SentTo: login})
	// The earlier version resumes the mark: it rewrites the holder, keeps the rest.
	ann["cd.credops.io/rotation-holder"] = "old@2026-11-29T10:12:00Z"
	ann["cd.credops.io/rotation-attempt"] = "2"
	want := Mark{Hash: "sha256:ab", Holder: "old", Since: t0.Add(12 * time.Minute), Attempts: 2}
	if diff := cmp.Diff(want, ReadMark(ann)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// The mark's first three annotations keep the format an earlier version reads: where
// the token was sent is an annotation of its own, which that release ignores.
func TestAMarkThatSaysWhereItWasSentReadsTheSameToAnEarlierVersion(t *testing.T) {
	plain := Mark{Hash: "sha256:ab", Holder: "host-1a2b", Since: t0, Attempts: 2}
	sent := plain
	sent.SentTo = Destination{Hash: DestinationHash("https://id.example.com/connect/token", "login-id"), ClientID: "login-id", Credential: "login"}
	a, b := map[string]string{}, map[string]string{}
	WriteMark(a, plain)
	WriteMark(b, sent)
	delete(b, "cd.credops.io/rotation-sent-to")
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("annotations an earlier version reads (-without +with SentTo):\n%s", diff)
	}
}
