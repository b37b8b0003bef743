package controllers

import (
	"fmt"
	"testing"
	"time"
)

// held counts the names a recently memory holds, past their time or not.
func (t *recently) held() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.until)
}

// A namespace's sweep finalizes a thousand grants within a minute, each remembered for
// ten minutes, and then none is finalized for days: the memory of them must not wait
// for another mark to let them go. A lookup a lifetime later answers no and leaves
// nothing held.
func TestTheMemoryOfRecentDeletionsEmptiesAfterABurstWithoutAnotherMark(t *testing.T) {
	var r recently
	for i := range 1000 {
		now := epoch.Add(time.Duration(i) * 50 * time.Millisecond)
		r.mark(fmt.Sprintf("uid-%d", i), now, now.Add(finalizedRemembered))
	}
	later := epoch.Add(24 * time.Hour)
	if r.has("uid-0", later) {
		t.Fatal("a name is still remembered a day after its time")
	}
	if n := r.held(); n != 0 {
		t.Errorf("a day after a burst of 1000 deletions and a lookup, %d names past their time are still held, want 0", n)
	}
}

// While names keep coming, one a second, the memory holds those of about two lifetimes
// at most, and each answers yes until its time and no after.
func TestTheMemoryOfRecentDeletionsHoldsOnlyRecentNamesWhileMarksKeepComing(t *testing.T) {
	var r recently
	for i := range 3600 {
		now := epoch.Add(time.Duration(i) * time.Second)
		r.mark(fmt.Sprintf("uid-%d", i), now, now.Add(finalizedRemembered))
		if i >= 600 && !r.has(fmt.Sprintf("uid-%d", i-599), now) {
			t.Fatalf("second %d: a name marked 599 s ago is forgotten (remembered for 600 s)", i)
		}
		if i >= 600 && r.has(fmt.Sprintf("uid-%d", i-600), now) {
			t.Fatalf("second %d: a name marked 600 s ago is still remembered", i)
		}
		if n := r.held(); n > 2*600+1 {
			t.Fatalf("second %d: %d names held, want at most two lifetimes' worth", i, n)
		}
	}
}
