package rotation

import "time"

// Times read from storage (status, the output Secret's annotations, in-flight marks) were
// stamped by the clock of the process that wrote them. A clock running ahead of this
// one's (a node without NTP, a VM clock corrected at boot), or this node's clock stepped
// back since, leaves them in this process's future; taken at their word, they would put
// off a renewal, a retry or a takeover by as much as that clock was ahead, while the
// token pods hold expires. Nothing stored is trusted to be in the past: a time found
// after Now counts from when this process could first act (Input.ActiveSince), the
// latest it can truly have been stamped by a process before this one, and keeps its
// distance from the times stored with it, so the operator never waits longer than the
// rule that stored it would have from now. Not from Now itself: that moves with every
// pass, and would put the wait off again each time until the clock caught up. A time
// this process stamped itself before its node's clock was stepped back counts from
// there too: acted on sooner than its rule (a request early, once), never later.

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

// AsOf is s as it can truly be at now, activeSince as in Input.ActiveSince: a schedule
// issued after now (by a clock ahead of this one) is moved back whole to have been issued
// when a stored time counts from (countsFrom), so that its renewal, its expiry and its
// request-budget floor (Earliest) keep their distance from its issuance. A schedule whose
// issuance is unknown is left as it is: nothing says how far ahead it was stamped.
// Decide counts the schedules it is given so. The controllers count one only to bound a
// wait by the token's expiry (Retry.Expires), never to write it back: the stored expiry
// is how a later pass finds the token's issuance in status.
func (s Schedule) AsOf(now, activeSince time.Time) Schedule {
	if !s.Issued.After(now) {
		return s
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
