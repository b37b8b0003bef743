package controllers

import (
	"sync/atomic"
	"time"
)

// activeSince is when this process could first act: it won the leader election, or
// started without one (rotation.Input.ActiveSince). Another process's in-flight mark is
// waited for a full HolderTimeout after it, and a time read from storage that lies in
// this process's future (stamped by a clock running ahead) counts from it.
type activeSince struct {
	at atomic.Int64 // Unix nanoseconds; 0 until elected
}

// elected records the moment; the manager calls the reconcilers' Elected from a
// leader-election runnable.
func (a *activeSince) elected(at time.Time) { a.at.Store(at.UnixNano()) }

// since is the moment as a pass at now takes it: zero when unknown, and never after now.
// A clock stepped back below it moves it to now, once: left after now it would be no
// anchor (rotation counts from now then, which moves with every pass), and this process
// can first act, in the clock it has now, no later than now.
func (a *activeSince) since(now time.Time) time.Time {
	for {
		at := a.at.Load()
		switch {
		case at == 0:
			return time.Time{}
		case at <= now.UnixNano():
			return time.Unix(0, at)
		case a.at.CompareAndSwap(at, now.UnixNano()):
			return now
		}
	}
}
