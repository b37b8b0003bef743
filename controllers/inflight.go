package controllers

import (
	"context"
	"sync"
)

// inFlight counts the rotations between their in-flight mark and the end of storing
// what came back. A lost leader election stops the manager without waiting for its
// reconciles, and the process exits after Drain: a rotation whose answer was still on
// its way would die with the process, and with it the customer's new refresh token.
// Safe for concurrent use.
type inFlight struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to zero
}

func (f *inFlight) begin() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		f.idle = make(chan struct{})
	}
	f.n++
}

func (f *inFlight) end() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.n == 0 {
		close(f.idle)
	}
}

// wait blocks until no rotation is in flight or ctx is done, and returns how many are
// still in flight.
func (f *inFlight) wait(ctx context.Context) int {
	f.mu.Lock()
	if f.n == 0 {
		f.mu.Unlock()
		return 0
	}
	idle := f.idle
	f.mu.Unlock()
	select {
	case <-idle:
		return 0
	case <-ctx.Done():
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.n
	}
}
