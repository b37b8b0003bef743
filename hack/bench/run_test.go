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
