package controllers

import (
	"context"
	"testing"
	"testing/synctest"
)

// Drain waits for the rotations in flight as long as its context allows, and counts the
// ones still out when it gives up: their customers may have to log in again.
func TestInFlightWaitsForEveryRotationOrCountsTheOnesStillOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var f inFlight
		if n := f.wait(t.Context()); n != 0 {
			t.Fatalf("wait with nothing in flight = %d, want 0", n)
		}
		f.begin("sha256:a")
		f.begin("sha256:a")
		given, cancel := context.WithCancel(t.Context())
		cancel()
		if n := f.wait(given); n != 2 {
			t.Errorf("wait that gave up = %d, want the 2 still out", n)
		}
		done := make(chan int, 1)
		go func() { done <- f.wait(t.Context()) }()
		for range 2 {
			// Every goroutine of the bubble is blocked: a wait that has not returned
			// is blocked on the rotations, not yet to run.
			synctest.Wait()
			select {
			case n := <-done:
				t.Fatalf("wait returned %d while a rotation was still in flight", n)
			default:
			}
			f.end("sha256:a")
		}
		if n := <-done; n != 0 {
			t.Errorf("wait after both ended = %d, want 0", n)
		}
		f.begin("sha256:a") // in flight again after it was idle: a new wait waits anew
		if n := f.wait(given); n != 1 {
			t.Errorf("wait on a rotation begun after idle = %d, want 1", n)
		}
		f.end("sha256:a")
	})
}

// A pass for another grant asks whether this process is spending a refresh token: from
// before its mark is written until what came back is stored or held, and for as long as
// any of the rotations spending it is out.
func TestInFlightKnowsWhichRefreshTokensItsRotationsSpend(t *testing.T) {
	var f inFlight
	if f.spending("sha256:a") {
		t.Fatal("spending a token before any rotation began")
	}
	f.begin("sha256:a")
	f.begin("sha256:a") // two passes racing for its mark: one write wins, both are out
	f.begin("sha256:b")
	f.end("sha256:a")
	if !f.spending("sha256:a") {
		t.Error("not spending sha256:a while one of its rotations is still out")
	}
	f.end("sha256:a")
	if f.spending("sha256:a") {
		t.Error("still spending sha256:a after both its rotations ended")
	}
	if !f.spending("sha256:b") {
		t.Error("not spending sha256:b, whose rotation is out")
	}
	f.end("sha256:b")
	if n := f.wait(t.Context()); n != 0 {
		t.Errorf("wait after every rotation ended = %d, want 0", n)
	}
}

// Drain stops rotations from beginning before it looks for the ones in flight: the
// process exits once it returns, and one that began after would die with it.
func TestInFlightBeginsNothingOnceStopped(t *testing.T) {
	var f inFlight
	if !f.begin("sha256:a") {
		t.Fatal("a rotation refused before Drain")
	}
	f.stop()
	if f.begin("sha256:b") {
		t.Error("a rotation began after Drain stopped them")
	}
	if f.spending("sha256:b") {
		t.Error("a refused rotation is counted as spending its token")
	}
	f.end("sha256:a")
	if n := f.wait(t.Context()); n != 0 {
		t.Errorf("wait after the one rotation ended = %d, want 0", n)
	}
}
