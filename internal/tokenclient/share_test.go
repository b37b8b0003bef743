package tokenclient

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

var shareT0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func TestANamespaceAskingAloneTakesTheWholeRateAtItsPace(t *testing.T) {
	s := NewShare(10, 0)
	for i := range 10 {
		if wait := s.Turn("tenant-a", fmt.Sprint("cr-", i), shareT0); wait != 0 {
			t.Fatalf("request %d of the burst waits %s", i, wait)
		}
	}
	for i, want := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond} {
		if wait := s.Turn("tenant-a", fmt.Sprint("late-", i), shareT0); wait != want {
			t.Errorf("request %d over the rate waits %s, want %s", i, wait, want)
		}
	}
}

// The point of a share: a namespace that floods leaves another namespace's requests
// going at once, and from then on takes half the rate.
func TestANamespaceThatFloodsDelaysNoOther(t *testing.T) {
	s := NewShare(4, 0)
	for i := range 1000 {
		s.Turn("hostile", fmt.Sprint("junk-", i), shareT0)
	}
	s.mu.Lock()
	reserved := len(s.turns)
	s.mu.Unlock()
	if reserved > 40 {
		t.Errorf("the flooding namespace holds %d turns, more than the horizon's (%s at 4/s)", reserved, Horizon)
	}
	goesAtOnce(t, s, "victim")
	// Two namespaces ask now: the flooding one gets 2 a second, its turns further apart.
	s.Turn("hostile", "junk-next", shareT0.Add(5*time.Second))
	if got := s.partOf("hostile"); got != 2 {
		t.Errorf("the flooding namespace's part is %v a second with another asking, want 2", got)
	}
}

// goesAtOnce asks a turn for a renewal of namespace key and fails unless it comes at once.
func goesAtOnce(t *testing.T, s *Share, key string) {
	t.Helper()
	if wait := s.Turn(key, "renewal", shareT0); wait != 0 {
		t.Errorf("a renewal of namespace %s waits %s", key, wait)
	}
}

// partOf is the rate namespace key was last given.
func (s *Share) partOf(key string) rate.Limit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shares[key].limiter.Limit()
}

// Several namespaces flooding at once split the rate with everyone else asking: the
// next namespace still goes at once, and each gets an equal part.
func TestSeveralNamespacesFloodingLeaveEveryOtherItsPart(t *testing.T) {
	s := NewShare(12, 0)
	for i := range 300 {
		for _, ns := range []string{"hostile-1", "hostile-2", "hostile-3"} {
			s.Turn(ns, fmt.Sprint(ns, "/junk-", i), shareT0)
		}
	}
	goesAtOnce(t, s, "victim")
	if got := s.partOf("victim"); got != 3 {
		t.Errorf("the fourth namespace asking gets %v a second, want a quarter of 12", got)
	}
}

func TestTurnsAreReservedNoFurtherThanTheHorizon(t *testing.T) {
	s := NewShare(1, 0)
	for i := range 11 { // the burst, then turns 1 s to 10 s on
		s.Turn("ns", fmt.Sprint("cr-", i), shareT0)
	}
	wait := s.Turn("ns", "past-the-horizon", shareT0)
	if wait < Horizon || wait >= 2*Horizon {
		t.Errorf("a request past the horizon comes back after %s, want within [%s, %s)", wait, Horizon, 2*Horizon)
	}
	s.mu.Lock()
	_, held := s.turns["past-the-horizon"]
	s.mu.Unlock()
	if held {
		t.Error("a request past the horizon holds a turn")
	}
}

func TestAWaitingRequesterKeepsItsTurnAndReservesNoOther(t *testing.T) {
	s := NewShare(1, 0)
	s.Turn("ns", "first", shareT0)
	if wait := s.Turn("ns", "second", shareT0); wait != time.Second {
		t.Fatalf("second waits %s, want 1s", wait)
	}
	// Asked again before its turn (a Secret event brought it back): the time left, and
	// no second reservation, so the next requester's turn is not pushed back.
	if wait := s.Turn("ns", "second", shareT0.Add(400*time.Millisecond)); wait != 600*time.Millisecond {
		t.Errorf("second asked again waits %s, want 600ms", wait)
	}
	if wait := s.Turn("ns", "third", shareT0.Add(400*time.Millisecond)); wait != 1600*time.Millisecond {
		t.Errorf("third waits %s, want 1.6s (its turn after second's)", wait)
	}
	if wait := s.Turn("ns", "second", shareT0.Add(time.Second)); wait != 0 {
		t.Errorf("second at its turn waits %s", wait)
	}
	if wait := s.Turn("ns", "second", shareT0.Add(time.Second)); wait == 0 {
		t.Error("second's turn was used twice")
	}
}

// A CR deleted while it waits gives its turn back: the next one takes its place.
func TestAForgottenTurnGoesToTheNext(t *testing.T) {
	s := NewShare(1, 0)
	s.Turn("ns", "first", shareT0)
	s.Turn("ns", "deleted", shareT0) // its turn at 1 s
	s.Forget("deleted")
	if wait := s.Turn("ns", "next", shareT0); wait != time.Second {
		t.Errorf("the next waits %s, want the forgotten turn, 1s", wait)
	}
}

// A turn nobody came for is no free pass an hour later.
func TestATurnKeptTooLongIsNoFreePass(t *testing.T) {
	s := NewShare(1, 0)
	s.Turn("ns", "first", shareT0)
	s.Turn("ns", "late", shareT0) // its turn at 1 s, never taken
	later := shareT0.Add(time.Hour)
	s.Turn("ns", "another", later) // takes the bucket's one token
	if wait := s.Turn("ns", "late", later); wait == 0 {
		t.Error("a turn kept an hour past its time let a request over the rate go")
	}
}

// Passes read their time before their API reads and ask out of order: a time before
// the last asked is taken as the last, so no stretch of time is counted twice.
func TestAnEarlierTimeCountsNothingTwice(t *testing.T) {
	s := NewShare(1, 0)
	s.Turn("ns", "first", shareT0.Add(time.Second))
	if wait := s.Turn("ns", "second", shareT0); wait != time.Second {
		t.Errorf("a request asked with an earlier time waits %s, want 1s after the last", wait)
	}
}

func TestTheCapBoundsEachNamespace(t *testing.T) {
	for _, tc := range []struct {
		total, perNamespace, want float64
	}{{0, 5, 5}, {100, 5, 5}, {4, 5, 4}} {
		s := NewShare(tc.total, tc.perNamespace)
		s.Turn("ns", "cr", shareT0)
		if got := float64(s.partOf("ns")); got != tc.want {
			t.Errorf("total %v, cap %v: a namespace asking alone gets %v a second, want %v", tc.total, tc.perNamespace, got, tc.want)
		}
	}
}

func TestAShareForgetsIdleNamespacesAndTurnsNobodyCameFor(t *testing.T) {
	s := NewShare(1, 0)
	for i := range 2 * minForgetAt {
		s.Turn(fmt.Sprint("ns-", i), "cr", shareT0)
		s.Turn(fmt.Sprint("ns-", i), fmt.Sprint("waiting-", i), shareT0) // a turn later, never taken
	}
	// The maps are looked over once they have doubled since the last look: new
	// namespaces asking later bring that about.
	later := shareT0.Add(2 * time.Hour)
	for i := range 4 * minForgetAt {
		s.Turn(fmt.Sprint("fresh-", i), "cr", later)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for r := range s.turns {
		t.Errorf("turn of %s kept, though nobody came for it", r)
	}
	for key := range s.shares {
		if !strings.HasPrefix(key, "fresh-") {
			t.Errorf("the share of idle namespace %s is kept", key)
		}
	}
}

func TestANilShareAdmitsEverything(t *testing.T) {
	var s *Share
	if NewShare(0, 0) != nil {
		t.Error("a share of nothing is not nil")
	}
	if wait := s.Turn("ns", "cr", shareT0); wait != 0 {
		t.Errorf("a nil share makes a request wait %s", wait)
	}
	s.Forget("cr")
}
