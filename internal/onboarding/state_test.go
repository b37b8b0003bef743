package onboarding

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestStateSignAndVerify(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	s, err := NewSigner([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewSigner([]byte(strings.Repeat("o", 32)))
	st := NewState("ns", "acme", "uid-1", now, 15*time.Minute)
	good := s.Sign(st)
	payload, sig, _ := strings.Cut(good, ".")
	cases := map[string]struct {
		raw  string
		at   time.Time
		want error
	}{
		"a fresh state verifies":            {good, now.Add(14 * time.Minute), nil},
		"an expired state":                  {good, now.Add(15 * time.Minute), ErrStateExpired},
		"another key's signature":           {other.Sign(st), now, ErrStateForged},
		"a payload edited after signing":    {payload + "x." + sig, now, ErrStateForged},
		"no signature":                      {payload, now, ErrStateMalformed},
		"empty":                             {"", now, ErrStateMalformed},
		"a signature that is not base64url": {payload + ".!!", now, ErrStateMalformed},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := s.Verify(tc.raw, tc.at)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if err == nil && got != st {
				t.Errorf("state %+v, want %+v", got, st)
			}
		})
	}
}

func TestPKCEVerifierIsDerivedNotStored(t *testing.T) {
	s, _ := NewSigner([]byte(strings.Repeat("k", 32)))
	now := time.Now()
	a, b := NewState("ns", "g", "u", now, time.Minute), NewState("ns", "g", "u", now, time.Minute)
	if s.Verifier(a) != s.Verifier(a) {
		t.Errorf("the verifier of one state is not reproducible across replicas")
	}
	if s.Verifier(a) == s.Verifier(b) {
		t.Errorf("two states share a verifier")
	}
	if v := s.Verifier(a); len(v) < 43 || strings.Contains(s.Sign(a), v) {
		t.Errorf("verifier too short for PKCE or carried in the state")
	}
	if _, err := NewSigner([]byte("short")); err == nil {
		t.Errorf("a short key was accepted")
	}
}
