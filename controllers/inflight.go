package controllers

import (
	"context"
	"sync"
)

// inFlight counts the rotations between their in-flight mark and the end of storing
// what came back. A lost leader election stops the manager without waiting for its
// reconciles, and the process exits after Drain: a rotation whose answer was still on
// its way would die with the process, and with it the customer's new refresh token.
//
// It also knows which refresh tokens (by hash) the rotations are spending: the mark on a
// token names this process, so a pass for another grant (one that took the Secret over
// from a grant deleted or replaced while the request was out) would otherwise take it for
// an interrupted rotation of its own and send the token again. Safe for concurrent use.
type inFlight struct {
	mu     sync.Mutex
	n      int
	idle   chan struct{} // closed when n drops to zero
	tokens map[string]int
	// stopped: Drain has begun, and no rotation may begin after it looked.
	stopped bool
}

// begin counts a rotation spending the refresh token with hash token, before it waits
// for its turn in the rate limit and before its mark is written. It reports false, and
// counts nothing, once Drain has begun: the process exits when Drain returns, and a
// rotation Drain did not wait for would die with it, its answer on the way.
func (f *inFlight) begin(token string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return false
	}
	if f.n == 0 {
		f.idle = make(chan struct{})
	}
	f.n++
	if f.tokens == nil {
		f.tokens = map[string]int{}
	}
	f.tokens[token]++
	return true
}

// stop lets no rotation begin from now on.
func (f *inFlight) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = true
}

// end counts it out, once what came back is stored or held (or nothing was sent).
func (f *inFlight) end(token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.n == 0 {
		close(f.idle)
	}
	if f.tokens[token]--; f.tokens[token] <= 0 {
		delete(f.tokens, token)
	}
}

// spending reports whether a rotation of this process is spending the refresh token with
// hash token.
func (f *inFlight) spending(token string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tokens[token] > 0
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
