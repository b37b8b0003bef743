// Package rotation holds the token protocol of both kinds as pure decisions over typed
// values, with no Kubernetes client: given what is stored (the output Secret's token,
// the refresh token and its in-flight mark, the failure memory in status, a result held
// in memory) Decide says what to do; given the token endpoint's answer Judge says what it
// means. The controllers carry out the decisions and report the outcomes; nothing here
// touches the API server or the network, so every rule has a table test.
//
// The single-use refresh-token protocol (DESIGN §6) in one paragraph: mark the token in
// flight on its Secret before sending it; send it once; store the new refresh token
// first, then the access token, then status; a mark found on the stored token means its
// outcome was never recorded, so the token is sent once more and a rejection then means
// the rotation was interrupted; a token sent twice without an answer is never sent a
// third time.
package rotation

import "time"

// Input is everything a decision depends on, read by the controller before it acts.
type Input struct {
	Now time.Time
	// Request identifies what would be sent now (see Request).
	Request string
	// Current is the schedule of the token in the output Secret, or nil when there is
	// none, it is incomplete, hand-edited, or was issued for another endpoint or client.
	// Its Issued is zero when unknown.
	Current *Schedule
	// Failure is the failure memory from status, nil when the last attempt succeeded.
	Failure *Failure
	// Pending is true when a result that is not fully stored yet is held in memory.
	Pending bool
	// Refresh is the stored refresh token of a CDUserGrant; nil for a CDCredential.
	Refresh *Refresh
	// Last is the schedule of the token in the output Secret whatever it was requested
	// for: Current's, or the one a changed request left behind (Current is nil then).
	// Its Issued is zero when unknown. nil when there is no readable token (none yet, or
	// the output Secret was deleted or hand-edited: it is repaired at once).
	Last *Schedule
	// Lifetime is the lifetime of the last token stored, from status; 0 when unknown.
	Lifetime time.Duration
	// ActiveSince is when this process could first act (it won the leader election);
	// zero when unknown. Another process's mark is waited for a full HolderTimeout after
	// that too: after an API-server outage, the process that set the mark may still be
	// storing its result, and the mark's age says nothing about it. And a time read from
	// storage that lies after Now counts from it (see countsFrom), but for a token issued
	// more than SkewTolerance after Now, which is due at once (Schedule.AsOf).
	ActiveSince time.Time
}

// Refresh is a CDUserGrant's stored refresh token as the decision needs it.
type Refresh struct {
	// Hash of the stored token.
	Hash string
	// Mark is the in-flight mark on its Secret.
	Mark Mark
	// Self is this process, as it writes Mark.Holder.
	Self string
	// HolderTimeout is how long another process's mark is taken for a live rotation.
	HolderTimeout time.Duration
	// To is where the request would send the token now.
	To Destination
	// OutHere says this process has a rotation of the token under way, from before its
	// mark is written until what came back is stored or held: another pass of this
	// process (for a grant that took the Secret over from one deleted or replaced while
	// the request was out) finds this process's own mark on it, which is not the mark
	// of an interrupted rotation.
	OutHere bool
	// Expires is when the stored token itself dies (refresh_expires_in, stored beside
	// it); zero when it has no limit or none is known. The caller counts it as a stored
	// schedule (Schedule.AsOf). A request held past it is refused and the customer must
	// log in again, so the holds that give way before the access token expires give way
	// before this too.
	Expires time.Time
	// Planned says the stored token came with the access token in the output Secret (one
	// rotation stored both): the renewal was planned from its expiry (PlanRefresh), which
	// a fresh token's wait does not count again. A capped session's last renewal is
	// planned past that expiry on purpose; moved back before it, the renewals would come
	// a third of the access token's lifetime apart up to the session's end.
	Planned bool
}

// marked reports whether the stored token carries an in-flight mark: an attempt to spend
// it whose outcome was never recorded.
func (r *Refresh) marked() bool { return r != nil && r.Mark.Hash == r.Hash }

// Decision is what to do next. One of Persist, Stop, Hold, Abandon, Redirected, Wait,
// Defer, Backoff, Send.
type Decision interface{ decision() }

// Persist: a result held in memory is not stored yet; store it before anything else and
// never spend the old refresh token again.
type Persist struct{}

// Stop: this very request was refused for good; report it again and send nothing
// (until Failure.Recheck, when set).
type Stop struct{ Failure Failure }

// Hold: another live process is spending the token, or (Here) a pass of this process
// for another grant, or for this grant's predecessor under its name; come back at Until.
type Hold struct {
	Until time.Time
	Here  bool
}

// Abandon: the stored token was sent twice and no answer arrived either time; it is
// most likely spent and is not sent a third time. The customer must log in again.
type Abandon struct{}

// Redirected: the stored token was sent to another client than the one the request
// goes to now (spec.credentialRef edited meanwhile) and no answer came back: it may be
// live, and only its own client may take it. Nothing is sent, and the resend is not
// counted, until the grant points back at SentTo or a new login replaces the token.
type Redirected struct{ SentTo Destination }

// Wait: the token in the output Secret is fresh until Until.
type Wait struct{ Until time.Time }

// Backoff: the last attempt at this request failed; the next may go out at Until.
type Backoff struct{ Until time.Time }

// Defer: the request changed (an edit of the spec, or of what it references) sooner
// than the request budget allows, at most 3 requests per token lifetime (DESIGN §4, §8);
// the changed request goes out at Until. AfterFailure says the budget counts from a
// failed request (Input.Failure), not from the issuance of the token in the Secret.
type Defer struct {
	Until        time.Time
	AfterFailure bool
}

// Send: ask for a token. For a CDUserGrant, first mark the stored token in flight with
// Mark (the attempt counted), then spend it; Resume says the token was marked before and
// its outcome is unknown, so a rejection means the rotation was interrupted.
type Send struct {
	Resume bool
	Mark   Mark
}

func (Persist) decision()    {}
func (Stop) decision()       {}
func (Hold) decision()       {}
func (Abandon) decision()    {}
func (Redirected) decision() {}
func (Wait) decision()       {}
func (Defer) decision()      {}
func (Backoff) decision()    {}
func (Send) decision()       {}

// policies are checked in order; the first that decides wins. The order is the
// protocol's: a held result first (the spent token must never be sent again), then
// refusals remembered for this very request, then a live rotation (another process's, or
// another pass's of this one), then the resend budget of an interrupted rotation and
// where its resend may go, and only then freshness, the request budget and backoff.
var policies = []func(Input) Decision{
	pendingResult,
	refusedForGood,
	heldByAnother,
	outHere,
	sentTwiceUnanswered,
	sentElsewhere,
	stillFresh,
	tooSoonAfterIssue,
	backingOff,
	tooSoonAfterFailure,
}

// Decide says what to do next.
func Decide(in Input) Decision {
	in = asOfNow(in)
	for _, p := range policies {
		if d := p(in); d != nil {
			return d
		}
	}
	return send(in)
}

func pendingResult(in Input) Decision {
	if in.Pending {
		return Persist{}
	}
	return nil
}

func refusedForGood(in Input) Decision {
	f := in.Failure
	if f == nil || f.Request != in.Request || !f.Terminal() {
		return nil
	}
	if !f.Recheck.IsZero() && !in.Now.Before(f.Recheck) {
		return nil // asked again, in case the identity server fixed it
	}
	return Stop{Failure: *f}
}

func heldByAnother(in Input) Decision {
	r := in.Refresh
	if !r.marked() || r.Mark.Holder == r.Self || r.Mark.Since.IsZero() {
		return nil
	}
	since := r.Mark.Since
	switch {
	case since.After(in.Now):
		// A mark in this process's future was stamped by a clock running ahead (a
		// process on another node, or this node's before it was stepped back): it was
		// set no later than this process could first act (countsFrom). While that is
		// not known yet (a pass before the manager recorded the election) it counts from
		// now, so the mark is held as a live process's may be: taken for a dead one's,
		// the token would be sent again while that process's request may be out.
		since = countsFrom(in.Now, in.ActiveSince)
	case in.ActiveSince.After(since):
		since = in.ActiveSince
	}
	if until := since.Add(r.HolderTimeout); in.Now.Before(until) {
		return Hold{Until: until}
	}
	return nil
}

func sentTwiceUnanswered(in Input) Decision {
	if r := in.Refresh; r.marked() && r.Mark.Attempts >= 2 {
		return Abandon{}
	}
	return nil
}

// outHereRecheck is how soon a pass held by a rotation of this process looks again: the
// rotation ends within a token request and the writes that store its answer, and the
// pass that waits is brought back by nothing else (the store is the operator's own write).
const outHereRecheck = 5 * time.Second

// outHere holds a token this process is spending in another pass. Its mark names this
// process, as the mark of an interrupted rotation of its own does, and heldByAnother
// lets it through; a resend now would present the token a second time while the first
// request is unanswered (a reuse: the customer's whole session revoked). Unmarked, it is
// about to be marked, or was since this pass read it: held all the same.
func outHere(in Input) Decision {
	if r := in.Refresh; r != nil && r.OutHere {
		return Hold{Until: in.Now.Add(outHereRecheck), Here: true}
	}
	return nil
}

// sentElsewhere holds the resend of a marked token that went to another client than the
// one the request goes to now: that client never issued it, so its refusal would say
// nothing of the token (it would be taken for an interrupted rotation, and the revert
// for a token sent twice), and the token would be disclosed to another host. A mark an
// earlier version wrote says nothing of where it went: resumed as before.
func sentElsewhere(in Input) Decision {
	r := in.Refresh
	if !r.marked() || r.Mark.SentTo.Hash == "" || r.Mark.SentTo.Hash == r.To.Hash {
		return nil
	}
	return Redirected{SentTo: r.Mark.SentTo}
}

func stillFresh(in Input) Decision {
	if in.Refresh.marked() {
		return nil // an interrupted rotation is finished before anything else
	}
	if in.Current == nil || in.Current.Due(in.Now) {
		return nil
	}
	until := in.Current.RenewAt
	// The renewal was planned from the refresh token stored when the access token came
	// (PlanRefresh). A new login since (the callback) may have stored one that dies
	// sooner, such as Keycloak's session token of a login without offline_access: the
	// renewal comes before it dies, or the customer must log in again. Never sooner than
	// the request budget allows (Earliest), as for an edit (lastSafe).
	if r := in.Refresh; r != nil && !r.Expires.IsZero() && !r.Planned {
		latest := r.Expires.Add(-MinRenewMargin)
		if e := in.Current.Earliest(); latest.Before(e) {
			latest = e
		}
		if latest.Before(until) {
			until = latest
		}
	}
	if !in.Now.Before(until) {
		return nil
	}
	return Wait{Until: until}
}

// tooSoonAfterIssue holds a changed request (the token in the Secret was requested for
// something else, so Current is nil) until a third of that token's lifetime has passed:
// whatever the spec says, and however often it is edited, a CR is never renewed sooner
// than that after issuance.
func tooSoonAfterIssue(in Input) Decision {
	if in.Refresh.marked() || in.Last == nil {
		return nil // an interrupted rotation is finished before anything else
	}
	if until := in.Last.Earliest(); in.Now.Before(until) {
		return Defer{Until: until}
	}
	return nil
}

// backingOff holds a request whose last attempt failed until its retry time. While the
// stored token is marked, a request changed only in its secret values (a client secret
// rotated by an external secrets tool) is held too: the marked token's one resend waits
// for the point its lost answer set (Retry.ResendLate), and a new client secret says
// nothing about the outage that swallowed the first send.
func backingOff(in Input) Decision {
	f := in.Failure
	if f == nil || !in.Now.Before(f.Retry) {
		return nil
	}
	if f.Request == in.Request || (in.Refresh.marked() && SameSpec(f.Request, in.Request)) {
		return Backoff{Until: f.Retry}
	}
	return nil
}

// tooSoonAfterFailure holds a request whose spec half changed after a failed request
// (SameSpec) until a third of the token lifetime after that failure: an edit must not
// buy a fresh backoff or a fresh budget of attempts, or flipping a field back and forth
// would send one request per edit. Nor does it end a backoff early: the server may have
// asked for it. A request changed only in its secret values (a fixed client secret, a
// customer's new login) goes at once: no one who may only edit the CR can change those;
// unless the stored token is marked, when backingOff held it.
func tooSoonAfterFailure(in Input) Decision {
	f := in.Failure
	if f == nil || f.Request == in.Request || SameSpec(f.Request, in.Request) {
		return nil
	}
	until := f.EditFloor(in.Lifetime)
	// Never past the token pods still have, nor past the refresh token that renews it:
	// a renewal that failed late in its life and an edit that fixes it must not leave
	// the Secret to expire or the customer to log in again. One request, not one per
	// edit: only while no request has failed since that point (the token that lands
	// moves Last on).
	if latest, ok := lastSafe(in); ok && latest.Before(until) && f.Time.Before(latest) {
		until = latest
	}
	if !f.Terminal() && f.Retry.After(until) {
		until = f.Retry
	}
	if in.Now.Before(until) {
		return Defer{Until: until, AfterFailure: true}
	}
	return nil
}

// lastSafe is the last point a request may be held to without losing what it renews:
// MinRenewMargin before the token in the output Secret expires, or before the stored
// refresh token dies (Refresh.Expires) when that comes first; never sooner than the
// request budget allows after that token's issuance (Schedule.Earliest). ok is false
// when neither expiry is known.
func lastSafe(in Input) (latest time.Time, ok bool) {
	var expires, earliest time.Time
	if l := in.Last; l != nil {
		expires, earliest = l.ExpiresAt, l.Earliest()
	}
	if r := in.Refresh; r != nil && !r.Expires.IsZero() && (expires.IsZero() || r.Expires.Before(expires)) {
		expires = r.Expires
	}
	if expires.IsZero() {
		return time.Time{}, false
	}
	latest = expires.Add(-MinRenewMargin)
	if latest.Before(earliest) {
		latest = earliest
	}
	return latest, true
}

func send(in Input) Decision {
	r := in.Refresh
	if r == nil {
		return Send{}
	}
	m := Mark{Hash: r.Hash, Holder: r.Self, Since: in.Now.Truncate(time.Second), Attempts: 1, SentTo: r.To}
	if r.marked() {
		m.Attempts = r.Mark.Attempts + 1
		return Send{Resume: true, Mark: m}
	}
	return Send{Mark: m}
}
