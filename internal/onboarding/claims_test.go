package onboarding

import (
	"testing"
	"time"
)

// Claimed states are remembered while a replica may still take them for valid, and no
// longer, so the annotation holds only one link lifetime of logins.
func TestClaimedStatesAreRememberedUntilTheyExpire(t *testing.T) {
	now := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
	old := NewState("ns", "acme", "uid-acme", now.Add(-time.Hour), 15*time.Minute)
	recent := NewState("ns", "acme", "uid-acme", now.Add(-15*time.Minute-30*time.Second), 15*time.Minute)
	legacy := NewState("ns", "acme", "uid-acme", now.Add(-5*time.Minute), 15*time.Minute)
	c := readClaims(claims{NonceHash(old): old.Expires, NonceHash(recent): recent.Expires}.String() + " " + NonceHash(legacy))
	st := NewState("ns", "acme", "uid-acme", now, 15*time.Minute)
	c.add(st, now)
	got := map[string]string{UsedStateAnnotation: c.String()}

	for _, tc := range []struct {
		name  string
		st    State
		known bool
	}{
		{"the state claimed now", st, true},
		{"a state expired less than a minute ago (a replica's clock may run behind)", recent, true},
		{"a state claimed before expiries were kept", legacy, true},
		{"a state expired long ago", old, false},
	} {
		if claimed(got, tc.st) != tc.known {
			t.Errorf("%s: claimed = %v in %q, want %v", tc.name, !tc.known, got[UsedStateAnnotation], tc.known)
		}
	}
	if want := st.Expires; readClaims(got[UsedStateAnnotation])[NonceHash(legacy)] != want {
		t.Errorf("the old-format entry got no expiry: %q", got[UsedStateAnnotation])
	}
}
