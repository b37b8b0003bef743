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

// countsFrom is when a stored time found after in.Now counts from: ActiveSince, in whole
// seconds as stored times are; Now when that is unknown (a reconciler no manager
// started) or later (the controller moves ActiveSince back to Now, once, when the clock
// is stepped back below it).
func (in Input) countsFrom() time.Time {
	if in.ActiveSince.IsZero() || in.ActiveSince.After(in.Now) {
		return in.Now.Truncate(time.Second)
	}
	return in.ActiveSince.Truncate(time.Second)
}

// asOf is s as it can truly be at now: a schedule issued after now (by a clock ahead of
// this one) is moved back whole to have been issued at from, so that its renewal, its
// expiry and its request-budget floor (Earliest) keep their distance from its issuance.
// A schedule whose issuance is unknown is left as it is: nothing says how far ahead it
// was stamped.
func (s Schedule) asOf(now, from time.Time) Schedule {
	if !s.Issued.After(now) {
		return s
	}
	ahead := s.Issued.Sub(from)
	return Schedule{Issued: from, ExpiresAt: s.ExpiresAt.Add(-ahead), RenewAt: s.RenewAt.Add(-ahead)}
}

// asOfNow is in with the times it read from storage counted as they can truly be
// (see above), for every policy alike.
func asOfNow(in Input) Input {
	from := in.countsFrom()
	if s := in.Current; s != nil && s.Issued.After(in.Now) {
		c := s.asOf(in.Now, from)
		in.Current = &c
	}
	if s := in.Last; s != nil && s.Issued.After(in.Now) {
		l := s.asOf(in.Now, from)
		in.Last = &l
	}
	return in
}
