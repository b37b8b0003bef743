package tokenclient

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

var shareT0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func TestAShareLetsItsBurstGoThenHandsOutTurnsAtItsPace(t *testing.T) {
	s := NewShare(10) // 10 per second, a burst of 10
	for i := range 10 {
		if wait := s.Turn("tenant-a", fmt.Sprint("cr-", i), shareT0); wait != 0 {
			t.Fatalf("request %d of the burst waits %s", i, wait)
		}
	}
	for i, want := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond} {
		if wait := s.Turn("tenant-a", fmt.Sprint("late-", i), shareT0); wait != want {
			t.Errorf("request %d over the share waits %s, want %s", i, wait, want)
		}
	}
}

func TestAWaitingRequesterKeepsItsTurnAndReservesNoOther(t *testing.T) {
	s := NewShare(1)
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
	// The turn is used: a later request of second's takes a new one.
	if wait := s.Turn("ns", "second", shareT0.Add(time.Second)); wait == 0 {
		t.Error("second's turn was used twice")
	}
}

// The point of a share: a namespace that used all of its own leaves every other
// namespace's requests going at once.
func TestOneNamespaceOverItsShareDelaysNoOther(t *testing.T) {
	s := NewShare(5)
	for i := range 1000 {
		s.Turn("hostile", fmt.Sprint("junk-", i), shareT0)
	}
	if wait := s.Turn("hostile", "junk-1000", shareT0); wait < 199*time.Second {
		t.Errorf("the thousand-and-first junk request waits only %s", wait)
	}
	if wait := s.Turn("victim", "renewal", shareT0); wait != 0 {
		t.Errorf("another namespace's renewal waits %s", wait)
	}
}

func TestAShareForgetsIdleNamespacesAndTurnsNobodyCameFor(t *testing.T) {
	s := NewShare(1)
	for i := range 2 * minForgetAt {
		s.Turn(fmt.Sprint("ns-", i), "cr", shareT0)
		s.Turn(fmt.Sprint("ns-", i), fmt.Sprint("waiting-", i), shareT0) // a turn 1 s on, never taken
	}
	// The maps are looked over once they have doubled since the last look: new
	// namespaces asking later bring that about.
	later := shareT0.Add(time.Second + turnsKept + time.Second)
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
	if NewShare(0) != nil {
		t.Error("a share of 0 per second is not nil")
	}
	if wait := s.Turn("ns", "cr", shareT0); wait != 0 {
		t.Errorf("a nil share makes a request wait %s", wait)
	}
}
