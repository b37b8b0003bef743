package rotation

import (
	"strconv"
	"testing"
	"time"
)

// README, TokenRequestFailed/RateLimited/InvalidTokenResponse: "retried with exponential
// backoff from 5 s, never longer than a third of the token's lifetime"; Retry.Lifetime's
// doc says the same, and UnknownLifetimeFloor that 10 minutes is the longest backoff.
// The jitter that spreads a fleet's retries must stay within those bounds.
func TestBackoffNeverExceedsAThirdOfTheTokenLifetime(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for _, lifetime := range []time.Duration{0, 5 * time.Minute, 30 * time.Minute, time.Hour} {
		bound := lifetime / 3
		if lifetime == 0 {
			bound = UnknownLifetimeFloor
		}
		retry := Retry{Lifetime: lifetime}
		if lifetime > 0 {
			retry.Expires = now.Add(lifetime) // a fresh token in the Secret: the expiry bound is far
		}
		prev := make([]*Failure, 20)
		for attempt := 1; attempt <= 12; attempt++ {
			worst, spread := time.Duration(0), map[time.Time]bool{}
			for seed := range prev {
				f := Fail(prev[seed], "req", "TokenRequestFailed", now, retry, strconv.Itoa(seed))
				worst = max(worst, f.Retry.Sub(now))
				spread[f.Retry] = true
				prev[seed] = &f
			}
			if worst > bound {
				t.Fatalf("lifetime %s, attempt %d: the next retry is %s away, longer than %s", lifetime, attempt, worst, bound)
			}
			if worst >= time.Minute && len(spread) < 5 {
				t.Errorf("lifetime %s, attempt %d: 20 CRs retry at only %d distinct times: the jitter no longer spreads them", lifetime, attempt, len(spread))
			}
		}
	}
}
