package rotation

import (
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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

// A failure recorded by a clock ahead of this one's counts from when this process could
// first act (activeSince), or from now when that is unknown or later: its retry and
// recheck keep their distance from it.
func TestAFailureRecordedByAClockAheadCountsFromWhenThisProcessCouldFirstAct(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	active := now.Add(-time.Minute)
	failed := func(at time.Time) *Failure {
		return &Failure{Request: "r", Reason: "TokenRequestFailed", Time: at, Attempts: 3, Retry: at.Add(20 * time.Second), Recheck: at.Add(10 * time.Minute)}
	}
	cases := map[string]struct {
		stored      *Failure
		activeSince time.Time
		want        *Failure
	}{
		"a failure recorded an hour ahead is moved back whole to when this process could first act": {
			stored: failed(now.Add(time.Hour)), activeSince: active, want: failed(active),
		},
		"a failure recorded ahead counts from now when this process does not know when it could first act": {
			stored: failed(now.Add(time.Hour)), want: failed(now),
		},
		"a failure recorded ahead counts from now when the clock was stepped back below the election": {
			stored: failed(now.Add(time.Hour)), activeSince: now.Add(time.Minute), want: failed(now),
		},
		"a terminal failure keeps no retry time": {
			stored:      &Failure{Request: "r", Reason: "InvalidClient", Time: now.Add(time.Hour), Attempts: 1},
			activeSince: active,
			want:        &Failure{Request: "r", Reason: "InvalidClient", Time: active, Attempts: 1},
		},
		"a failure recorded now is as it was stored": {
			stored: failed(now), activeSince: active, want: failed(now),
		},
		"a failure recorded before this process could act is as it was stored": {
			stored: failed(now.Add(-time.Hour)), activeSince: active, want: failed(now.Add(-time.Hour)),
		},
		"no failure is none": {activeSince: active},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.stored.AsOf(now, tc.activeSince)); diff != "" {
				t.Errorf("AsOf (-want +got):\n%s", diff)
			}
		})
	}
}

// A grant's refresh token that dies before the access token (Keycloak answers expires_in
// 3600 with refresh_expires_in 1800) is the deadline of every wait that protects it, as
// the access token's expiry is otherwise: a lost answer's one resend and any backoff
// come MinRenewMargin before it, and past that point retries are at most ExpiringRetry
// apart. Sent after it dies, the refresh token is refused and the customer must log in
// again, however long the access token still lives.
func TestWaitsEndBeforeTheRefreshTokenDiesWhenItDiesFirst(t *testing.T) {
	issued := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	access, refresh := issued.Add(time.Hour), issued.Add(30*time.Minute)
	// atCeiling has failed often enough for the backoff to reach its 10-minute ceiling.
	atCeiling := &Failure{Request: "req", Reason: "TokenRequestFailed", Time: issued.Add(20 * time.Minute), Attempts: 9}
	cases := map[string]struct {
		prev  *Failure
		now   time.Time
		retry Retry
		// want is when the next attempt may go out, or (wantWithin) the latest it may.
		want, wantWithin time.Time
	}{
		"a lost answer's one resend waits for the last safe point before the refresh token dies": {
			now: issued.Add(20 * time.Minute), retry: Retry{Lifetime: time.Hour, Expires: access, RefreshExpires: refresh, ResendLate: true},
			want: refresh.Add(-MinRenewMargin),
		},
		"a lost answer's one resend waits for the access token's last safe point when the refresh token outlives it": {
			now: issued.Add(20 * time.Minute), retry: Retry{Lifetime: time.Hour, Expires: access, RefreshExpires: issued.Add(2 * time.Hour), ResendLate: true},
			want: access.Add(-MinRenewMargin),
		},
		"without a refresh token's expiry (absent or 0: no limit) the resend waits as before": {
			now: issued.Add(20 * time.Minute), retry: Retry{Lifetime: time.Hour, Expires: access, ResendLate: true},
			want: access.Add(-MinRenewMargin),
		},
		"a backoff at its ceiling ends at the last safe point before the refresh token dies": {
			prev: atCeiling, now: issued.Add(25 * time.Minute), retry: Retry{Lifetime: time.Hour, Expires: access, RefreshExpires: refresh},
			want: refresh.Add(-MinRenewMargin),
		},
		"past the refresh token's last safe point, retries are at most a minute apart": {
			prev: atCeiling, now: issued.Add(28*time.Minute + 30*time.Second), retry: Retry{Lifetime: time.Hour, Expires: access, RefreshExpires: refresh},
			wantWithin: issued.Add(29*time.Minute + 30*time.Second),
		},
		"a server's Retry-After still wins": {
			now: issued.Add(25 * time.Minute), retry: Retry{Lifetime: time.Hour, Expires: access, RefreshExpires: refresh, After: 10 * time.Minute},
			want: issued.Add(35 * time.Minute),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := Fail(tc.prev, "req", "TokenRequestFailed", tc.now, tc.retry, "uid-1")
			switch {
			case !tc.want.IsZero() && !f.Retry.Equal(tc.want):
				t.Errorf("next attempt at %s after issue, want %s", f.Retry.Sub(issued), tc.want.Sub(issued))
			case !tc.wantWithin.IsZero() && (f.Retry.After(tc.wantWithin) || !f.Retry.After(tc.now)):
				t.Errorf("next attempt at %s after issue, want after now (%s) and no later than %s", f.Retry.Sub(issued), tc.now.Sub(issued), tc.wantWithin.Sub(issued))
			}
		})
	}
}
