package main

import (
	"testing"
	"time"
)

// The settled reading waits for the sweep that drops the cold start's last Event: a
// fixed 12m30s would read the memory of a cold start longer than six minutes (20,000
// grants and more here) with its Events still held.
func TestEventsForgottenWaitsForTheSweepAfterTheLastEvent(t *testing.T) {
	for _, tc := range []struct {
		coldStart, want time.Duration
	}{
		{10 * time.Second, 12*time.Minute + 30*time.Second},
		{2*time.Minute + 14*time.Second, 12*time.Minute + 30*time.Second},
		{5*time.Minute + 59*time.Second, 12*time.Minute + 30*time.Second},
		{6 * time.Minute, 18*time.Minute + 30*time.Second},
		{11 * time.Minute, 18*time.Minute + 30*time.Second},
		{13 * time.Minute, 24*time.Minute + 30*time.Second},
	} {
		got := eventsForgotten(tc.coldStart)
		if got != tc.want {
			t.Errorf("cold start %s: settled at %s, want %s", tc.coldStart, got, tc.want)
		}
		// Whatever the cold start, the last Event is a full sweep period old at the
		// sweep before the reading.
		if sweep := got - 30*time.Second; sweep-tc.coldStart < eventsSweep || sweep%eventsSweep != 0 {
			t.Errorf("cold start %s: %s is not a sweep at least %s after the last Event", tc.coldStart, sweep, eventsSweep)
		}
	}
}

// Windows are read together: CPU per 1,000 rotations over all of them weighs each by its
// rotations, and probe units take each window's CPU in its own probe's unit.
func TestWindowsAreReadTogether(t *testing.T) {
	ws := windows{
		{cpu: 3, rotations: 1000, writes: 2000, probe: 50 * time.Millisecond},
		{cpu: 3, rotations: 2000, writes: 4000, probe: 25 * time.Millisecond},
	}
	if got := ws.per1000(); got != 2 {
		t.Errorf("per1000 = %v, want 2 (6 s over 3,000 rotations)", got)
	}
	if got := ws.inProbeUnits(); got != 60 {
		t.Errorf("inProbeUnits = %v, want 60 ((3/0.05 + 3/0.025) units over 3,000 rotations)", got)
	}
	if got := ws.writesPerRotation(); got != 2 {
		t.Errorf("writesPerRotation = %v, want 2", got)
	}
	if got := (windows{{cpu: 1, rotations: 10}}).inProbeUnits(); got != 0 {
		t.Errorf("inProbeUnits without a probe = %v, want 0", got)
	}
}
