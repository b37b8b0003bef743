package rotation

import "time"

// Times read from storage (status, the output Secret's annotations, in-flight marks) were
// stamped by the clock of the process that wrote them. A clock running ahead of this
// one's (a node without NTP, a VM clock corrected at boot), or this node's clock stepped
// back since, leaves them in this process's future; taken at their word, they would put
// off a renewal, a retry or a takeover by as much as that clock was ahead, while the
// token pods hold expires. Nothing stored is trusted to be in the past, and two rules
// say what a time found after Now counts as.
//
// A token's schedule found issued more than SkewTolerance after Now is due at once, and
// its expiry is taken to be Now. Its schedule describes something outside the operator:
// the token pods hold expires its lifetime after its real issuance, which nothing stored
// tells. The election (Input.ActiveSince) bounds it from one side only: the token was
// issued no later than that, and may have been issued most of a lifetime before. A
// leader an hour ahead that issued a 30-minute token and died 18 minutes into its life
// leaves a token that expires 12 minutes after the election; counted from the election,
// it would be renewed 20 minutes after it, and pods would hold an expired token for 8
// while the CR says Ready. Renewing at once costs one request per CR at such a
// hand-over (the token then stored is stamped by this clock), and may come sooner than a
// third of the real lifetime, once; renewing late costs the pods their token. A schedule
// ahead by no more than SkewTolerance keeps the rule below: renewed at once, every token
// stamped by a node a second ahead would be renewed early at every hand-over.
//
// Every other stored time found after Now (failure memory, another process's in-flight
// mark, a token schedule within SkewTolerance) counts from when this process could first
// act (Input.ActiveSince), the latest it can truly have been stamped by a process before
// this one, and keeps its distance from the times stored with it, so the operator never
// waits longer than the rule that stored it would have from then. Those are waits the
// operator chose, not a lifetime it does not know: a backoff or a recheck kept to its
// length after the election spends no more requests than the failure asked for, and a
// mark is never held for less than the holder timeout after the election, for a mark
// released sooner could have its refresh token sent a second time while the first
// request is out (a reuse, which revokes the customer's session). Not from Now itself:
// that moves with every pass, and would put the wait off again each time until the clock
// caught up. A time this process stamped itself before its node's clock was stepped back
// is read by the same rules: acted on sooner than its rule (a request early, once),
// never later.

// SkewTolerance is how far after now a token's stored issuance may lie and still count
// from the election (Schedule.AsOf) rather than make the token due at once: nodes kept
// by NTP differ by milliseconds, up to a second or so (a node just booted, a leap second
// smeared on one node and stepped on another), and stored times are whole seconds, cut
// down on one clock and compared with the other's unrounded now, so a tolerance of a
// second or less would turn on where the second boundary falls. A clock ahead by more
// than this is no longer ordinary skew: nothing then bounds how long ago the token was
// issued.
const SkewTolerance = 5 * time.Second

// countsFrom is when a stored time found after now counts from: activeSince
// (Input.ActiveSince), in whole seconds as stored times are; now when that is unknown (a
// reconciler no manager started) or later (the controller moves ActiveSince back to now,
// once, when the clock is stepped back below it).
func countsFrom(now, activeSince time.Time) time.Time {
	if activeSince.IsZero() || activeSince.After(now) {
		return now.Truncate(time.Second)
	}
	return activeSince.Truncate(time.Second)
}

// IssuedAhead reports whether s was issued more than SkewTolerance after now: stamped by
// a clock running ahead of this one's, so that its token may have expired already (see
// above). A schedule whose issuance is unknown is not: nothing says how far ahead it was
// stamped.
func (s Schedule) IssuedAhead(now time.Time) bool {
	return s.Issued.After(now.Add(SkewTolerance))
}

// AsOf is s as it can truly be at now, activeSince as in Input.ActiveSince. A schedule
// issued more than SkewTolerance after now (IssuedAhead) is due at now and expires then,
// its issuance unknown: its token may already be expired, and is renewed at once. One
// issued after now by less is moved back whole to have been issued when a stored time
// counts from (countsFrom), so that its renewal, its expiry and its request-budget floor
// (Earliest) keep their distance from its issuance. A schedule whose issuance is unknown
// is left as it is: nothing says how far ahead it was stamped. Decide counts the
// schedules it is given so. The controllers count one only to bound a wait by the
// token's expiry (Retry.Expires), never to write it back: the stored expiry is how a
// later pass finds the token's issuance in status.
func (s Schedule) AsOf(now, activeSince time.Time) Schedule {
	if !s.Issued.After(now) {
		return s
	}
	if s.IssuedAhead(now) {
		at := now.Truncate(time.Second)
		return Schedule{ExpiresAt: at, RenewAt: at}
	}
	from := countsFrom(now, activeSince)
	ahead := s.Issued.Sub(from)
	return Schedule{Issued: from, ExpiresAt: s.ExpiresAt.Add(-ahead), RenewAt: s.RenewAt.Add(-ahead)}
}

// AsOf is failure memory f as it can truly be at now, activeSince as in
// Input.ActiveSince: a failure recorded after now (by a clock ahead of this one) is moved
// back whole to have been recorded when a stored time counts from (countsFrom), so its
// retry, its recheck and the edit floor after it (EditFloor) keep their distance from
// it. Decide counts it so; the controllers count it as they read it, so that status,
// conditions and the requeue say what Decide counted, and the memory they write back no
// longer lies in the future. nil stays nil.
func (f *Failure) AsOf(now, activeSince time.Time) *Failure {
	if f == nil || !f.Time.After(now) {
		return f
	}
	from := countsFrom(now, activeSince)
	ahead := f.Time.Sub(from)
	c := *f
	c.Time = from
	if !c.Retry.IsZero() {
		c.Retry = c.Retry.Add(-ahead)
	}
	if !c.Recheck.IsZero() {
		c.Recheck = c.Recheck.Add(-ahead)
	}
	return &c
}

// asOfNow is in with the times it read from storage counted as they can truly be
// (see above), for every policy alike.
func asOfNow(in Input) Input {
	in.Failure = in.Failure.AsOf(in.Now, in.ActiveSince)
	if s := in.Current; s != nil && s.Issued.After(in.Now) {
		c := s.AsOf(in.Now, in.ActiveSince)
		in.Current = &c
	}
	if s := in.Last; s != nil && s.Issued.After(in.Now) {
		l := s.AsOf(in.Now, in.ActiveSince)
		in.Last = &l
	}
	return in
}
