package rotation

import (
	"testing"
	"time"
)

func TestRenewalSchedule(t *testing.T) {
	issued := time.Date(2026, 11, 23, 10, 0, 0, 400_000_000, time.UTC)
	cases := map[string]struct {
		lifetime, renewBefore time.Duration
		// The renewal must fall in [earliest, latest] after issue.
		earliest, latest time.Duration
		// clamped: the spec's renewBefore had to be shortened, and Plan says so.
		clamped bool
	}{
		"an hour-long token renews between 34 and 40 minutes in (2/3 minus up to 10% jitter)": {
			lifetime: time.Hour, earliest: 34 * time.Minute, latest: 40 * time.Minute,
		},
		"a 30-minute token renews between 17 and 20 minutes in": {
			lifetime: 30 * time.Minute, earliest: 17 * time.Minute, latest: 20 * time.Minute,
		},
		"renewBefore replaces the default margin": {
			lifetime: time.Hour, renewBefore: 10 * time.Minute, earliest: 50 * time.Minute, latest: 50 * time.Minute,
		},
		"renewBefore below the 2-minute floor is raised to it": {
			lifetime: time.Hour, renewBefore: 30 * time.Second, earliest: 58 * time.Minute, latest: 58 * time.Minute,
		},
		"the default margin of a 4-minute token is raised to the 2-minute floor": {
			lifetime: 4 * time.Minute, earliest: 2 * time.Minute, latest: 2 * time.Minute,
		},
		"a token shorter than the floor renews at 2/3 of its life minus jitter": {
			lifetime: 90 * time.Second, earliest: 51 * time.Second, latest: 60 * time.Second,
		},
		"renewBefore longer than the lifetime is clamped to renewing a third of the way in": {
			lifetime: 30 * time.Minute, renewBefore: time.Hour, earliest: 10 * time.Minute, latest: 10*time.Minute + time.Second, clamped: true,
		},
		"renewBefore of nearly the whole lifetime is clamped the same way": {
			lifetime: 30 * time.Minute, renewBefore: 29*time.Minute + 59*time.Second, earliest: 10 * time.Minute, latest: 10*time.Minute + time.Second, clamped: true,
		},
		"renewBefore of exactly two thirds of the lifetime is taken as it is": {
			lifetime: 30 * time.Minute, renewBefore: 20 * time.Minute, earliest: 10 * time.Minute, latest: 10*time.Minute + time.Second,
		},
		"the 2-minute floor gives way to the third-of-a-lifetime rule for a 150 s token": {
			lifetime: 150 * time.Second, earliest: 50 * time.Second, latest: 51 * time.Second,
		},
		"no usable lifetime assumes the short fallback": {
			lifetime: 0, earliest: 2 * time.Minute, latest: 3 * time.Minute,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s, clamp := Plan(issued, tc.lifetime, tc.renewBefore, "uid-1")
			if (clamp != "") != tc.clamped {
				t.Errorf("clamp message %q, want one: %v", clamp, tc.clamped)
			}
			if again := Clamp(s.ExpiresAt.Sub(s.Issued), tc.renewBefore); again != clamp {
				t.Errorf("Clamp from the stored times says %q, Plan said %q", again, clamp)
			}
			base := issued.Truncate(time.Second)
			if s.RenewAt.Before(base.Add(tc.earliest)) || s.RenewAt.After(base.Add(tc.latest)) {
				t.Errorf("RenewAt = %s after issue, want within [%s, %s]", s.RenewAt.Sub(base), tc.earliest, tc.latest)
			}
			if s.RenewAt.Nanosecond() != 0 || s.ExpiresAt.Nanosecond() != 0 || s.Issued.Nanosecond() != 0 {
				t.Errorf("times not truncated to whole seconds: %+v", s)
			}
			lifetime := tc.lifetime
			if lifetime == 0 {
				lifetime = FallbackLifetime
			}
			if want := issued.Add(lifetime).Truncate(time.Second); !s.ExpiresAt.Equal(want) {
				t.Errorf("ExpiresAt = %s, want %s", s.ExpiresAt, want)
			}
		})
	}
}

func TestRenewalJitterSpreadsObjects(t *testing.T) {
	issued := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	seen := map[time.Time]int{}
	for i := range 1000 {
		s, _ := Plan(issued, time.Hour, 0, "grant-"+string(rune('a'+i%26))+time.Duration(i).String())
		seen[s.RenewAt]++
	}
	// 1,000 grants issued in the same second must spread over the 6-minute jitter
	// window, not pile into a few seconds.
	if len(seen) < 250 {
		t.Errorf("1000 grants renew in only %d distinct seconds", len(seen))
	}
	for at, n := range seen {
		if n > 15 {
			t.Errorf("%d grants renew in the same second %s", n, at)
		}
	}
}

func TestRenewalIsDeterministic(t *testing.T) {
	issued := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	a, _ := Plan(issued, time.Hour, 0, "uid")
	b, _ := Plan(issued, time.Hour, 0, "uid")
	if a != b {
		t.Errorf("same inputs gave %+v and %+v", a, b)
	}
}

func TestScheduleDue(t *testing.T) {
	s := Schedule{RenewAt: time.Date(2026, 11, 23, 10, 40, 0, 0, time.UTC)}
	cases := map[string]struct {
		now time.Time
		due bool
	}{
		"before the renewal time it is not due": {now: s.RenewAt.Add(-time.Second)},
		"at the renewal time it is due":         {now: s.RenewAt, due: true},
		"after the renewal time it is due":      {now: s.RenewAt.Add(time.Hour), due: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := s.Due(tc.now); got != tc.due {
				t.Errorf("Due(%s) = %v, want %v", tc.now, got, tc.due)
			}
		})
	}
}

func TestRenewalIsNeverSoonerThanAThirdOfTheLifetimeWhateverTheFraction(t *testing.T) {
	for _, lifetime := range []time.Duration{3 * time.Second, 30 * time.Second, 90 * time.Second, 30 * time.Minute} {
		for ms := 0; ms < 1000; ms += 37 {
			issued := time.Date(2026, 11, 29, 10, 0, 0, ms*int(time.Millisecond), time.UTC)
			for _, renewBefore := range []time.Duration{0, lifetime - 100*time.Millisecond, 10 * lifetime} {
				s, _ := Plan(issued, lifetime, renewBefore, "uid")
				if gap := s.RenewAt.Sub(issued); gap < lifetime/3 {
					t.Fatalf("lifetime %s, issued at +%dms, renewBefore %s: renewal %s after issuance, under a third of the lifetime", lifetime, ms, renewBefore, gap)
				}
			}
		}
	}
}

// A schedule stamped by a clock ahead of this one's by no more than SkewTolerance counts
// from when this process could first act (from, in whole seconds), or from now when that
// is unknown: a token cannot have been issued later than that. One stamped further ahead
// may have been issued most of a lifetime before that: it is due now, and taken to
// expire now, its issuance unknown.
func TestAScheduleStampedByAClockAheadCountsFromWhenThisProcessCouldFirstAct(t *testing.T) {
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	from := now.Add(-5 * time.Minute)
	plan := func(issued time.Time) Schedule {
		return Schedule{Issued: issued, RenewAt: issued.Add(20 * time.Minute), ExpiresAt: issued.Add(30 * time.Minute)}
	}
	dueNow := Schedule{RenewAt: now, ExpiresAt: now}
	cases := map[string]struct {
		stored, want Schedule
		unknown      bool // when this process could first act
	}{
		"a token issued an hour ahead of now is due now and expires now": {
			stored: plan(now.Add(time.Hour)), want: dueNow,
		},
		"a token issued an hour ahead of now is due now when this process does not know when it could first act": {
			stored: plan(now.Add(time.Hour)), want: dueNow, unknown: true,
		},
		"a token issued a second more than SkewTolerance ahead of now is due now": {
			stored: plan(now.Add(SkewTolerance + time.Second)), want: dueNow,
		},
		"a token issued SkewTolerance ahead of now is moved back whole to have been issued at from": {
			stored: plan(now.Add(SkewTolerance)), want: plan(from),
		},
		"a token issued a second ahead of now is moved back whole to have been issued at from": {
			stored: plan(now.Add(time.Second)), want: plan(from),
		},
		"a token issued a second ahead counts from now when this process does not know when it could first act": {
			stored: plan(now.Add(time.Second)), want: plan(now), unknown: true,
		},
		"a token issued now is as it was stored": {
			stored: plan(now), want: plan(now),
		},
		"a token issued before from is as it was stored": {
			stored: plan(now.Add(-10 * time.Minute)), want: plan(now.Add(-10 * time.Minute)),
		},
		"a token whose issuance is unknown is as it was stored": {
			stored: Schedule{RenewAt: now.Add(time.Hour), ExpiresAt: now.Add(2 * time.Hour)},
			want:   Schedule{RenewAt: now.Add(time.Hour), ExpiresAt: now.Add(2 * time.Hour)},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			active := from.Add(400 * time.Millisecond)
			if tc.unknown {
				active = time.Time{}
			}
			got := tc.stored.AsOf(now, active)
			if got != tc.want {
				t.Errorf("asOf = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// A refresh token that lives shorter than its access token (Keycloak's
// refresh_expires_in under SSO Session Idle) must be spent before it dies; the access
// token's expiry, which pods hold, stays as it is.
func TestPlanRefreshRenewsBeforeTheRefreshTokenExpires(t *testing.T) {
	issued := time.Date(2026, 11, 23, 10, 0, 0, 400_000_000, time.UTC)
	cases := map[string]struct {
		lifetime, refreshLifetime, renewBefore time.Duration
		// The renewal must fall in [earliest, latest] after issue.
		earliest, latest time.Duration
		// clamp is the condition's words about renewBefore.
		clamp string
	}{
		"Keycloak's defaults, an hour-long access token and a 30-minute refresh token, renew at 17-20 minutes (the refresh token's 2/3 less jitter)": {
			lifetime: time.Hour, refreshLifetime: 30 * time.Minute, earliest: 17 * time.Minute, latest: 20 * time.Minute,
			clamp: "the refresh token expires before the access token (refresh_expires_in 30m0s, expires_in 1h0m0s): renewing before the refresh token expires",
		},
		"renewBefore is kept ahead of the refresh token's expiry": {
			lifetime: time.Hour, refreshLifetime: 30 * time.Minute, renewBefore: 5 * time.Minute, earliest: 25 * time.Minute, latest: 25 * time.Minute,
			clamp: "the refresh token expires before the access token (refresh_expires_in 30m0s, expires_in 1h0m0s): renewing 5m0s before the refresh token expires",
		},
		"a refresh token of 3 minutes keeps the renewal at a third of its life, not a third of the access token's": {
			lifetime: time.Hour, refreshLifetime: 3 * time.Minute, earliest: time.Minute, latest: time.Minute + time.Second,
			clamp: "the refresh token expires before the access token (refresh_expires_in 3m0s, expires_in 1h0m0s): renewing before the refresh token expires",
		},
		"no limit (refresh_expires_in absent or 0) plans from the access token alone": {
			lifetime: time.Hour, earliest: 34 * time.Minute, latest: 40 * time.Minute,
		},
		"a refresh token that outlives the access token changes nothing": {
			lifetime: 30 * time.Minute, refreshLifetime: 10 * time.Hour, earliest: 17 * time.Minute, latest: 20 * time.Minute,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s, clamp := PlanRefresh(issued, tc.lifetime, tc.refreshLifetime, false, tc.renewBefore, "uid-1")
			base := issued.Truncate(time.Second)
			if s.RenewAt.Before(base.Add(tc.earliest)) || s.RenewAt.After(base.Add(tc.latest)) {
				t.Errorf("RenewAt = %s after issue, want within [%s, %s]", s.RenewAt.Sub(base), tc.earliest, tc.latest)
			}
			access, _ := Plan(issued, tc.lifetime, tc.renewBefore, "uid-1")
			if !s.ExpiresAt.Equal(access.ExpiresAt) || !s.Issued.Equal(access.Issued) {
				t.Errorf("got %+v, want the access token's expiry and issuance: %+v", s, access)
			}
			if clamp != tc.clamp {
				t.Errorf("clamp %q, want %q", clamp, tc.clamp)
			}
			// The request budget's floor does not hold the renewal back past its time.
			if e := s.Earliest(); e.After(s.RenewAt) {
				t.Errorf("Earliest = %s after issue, after the renewal at %s", e.Sub(base), s.RenewAt.Sub(base))
			}
		})
	}
}

// spec.renewBefore counted from a refresh token that expires first is said in the
// condition (the renewal is not where renewBefore alone puts it); otherwise the words
// are the access token's (Clamp), so providers without refresh_expires_in read as
// before.
func TestRefreshClampSaysARenewBeforeCountedFromTheRefreshToken(t *testing.T) {
	cases := map[string]struct {
		lifetime, refreshLifetime, renewBefore time.Duration
		want                                   string
	}{
		"renewBefore unset, a refresh token that dies first: the default plan is moved earlier, without a margin (its jitter varies)": {
			lifetime: time.Hour, refreshLifetime: 30 * time.Minute,
			want: "the refresh token expires before the access token (refresh_expires_in 30m0s, expires_in 1h0m0s): renewing before the refresh token expires",
		},
		"renewBefore unset, a refresh token that outlives the access token: nothing to say": {lifetime: time.Hour, refreshLifetime: 2 * time.Hour},
		"renewBefore unset, a refresh token as long as the access token: nothing to say":    {lifetime: time.Hour, refreshLifetime: time.Hour},
		"renewBefore unset, no refresh lifetime: nothing to say":                            {lifetime: time.Hour},
		"renewBefore unset, no expires_in: counted from the fallback lifetime": {
			refreshLifetime: 3 * time.Minute,
			want:            "the refresh token expires before the access token (refresh_expires_in 3m0s, expires_in 5m0s): renewing before the refresh token expires",
		},
		"no refresh lifetime: the access token's clamp": {
			lifetime: time.Hour, renewBefore: 50 * time.Minute, want: Clamp(time.Hour, 50*time.Minute),
		},
		"a refresh token that outlives the access token: the access token's words": {
			lifetime: 30 * time.Minute, refreshLifetime: 10 * time.Hour, renewBefore: 5 * time.Minute,
		},
		"counted from the refresh token that dies first": {
			lifetime: time.Hour, refreshLifetime: 30 * time.Minute, renewBefore: 5 * time.Minute,
			want: "the refresh token expires before the access token (refresh_expires_in 30m0s, expires_in 1h0m0s): renewing 5m0s before the refresh token expires",
		},
		"counted from the refresh token and shortened to two thirds of its lifetime": {
			lifetime: time.Hour, refreshLifetime: 30 * time.Minute, renewBefore: 50 * time.Minute,
			want: "the refresh token expires before the access token (refresh_expires_in 30m0s, expires_in 1h0m0s): renewing 20m0s before the refresh token expires, not spec.renewBefore 50m0s (at most two thirds of its lifetime, 3 requests per lifetime)",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := RefreshClamp(tc.lifetime, tc.refreshLifetime, tc.renewBefore); got != tc.want {
				t.Errorf("RefreshClamp = %q, want %q", got, tc.want)
			}
		})
	}
}

// A refresh token stored after the access token (a login since) moves the renewal to 2
// minutes before it dies when that comes first, whatever renewBefore says: the words
// carry no margin for it.
func TestLaterRefreshClampNamesNoMargin(t *testing.T) {
	const dies = "the refresh token expires before the access token (refresh_expires_in 30m0s, expires_in 1h0m0s): renewing before the refresh token expires"
	cases := map[string]struct {
		lifetime, refreshLifetime, renewBefore time.Duration
		want                                   string
	}{
		"renewBefore unset, a refresh token that dies first":                 {lifetime: time.Hour, refreshLifetime: 30 * time.Minute, want: dies},
		"renewBefore set, a refresh token that dies first: still no margin":  {lifetime: time.Hour, refreshLifetime: 30 * time.Minute, renewBefore: 5 * time.Minute, want: dies},
		"renewBefore clamped, a refresh token that dies first: its lifetime": {lifetime: time.Hour, refreshLifetime: 30 * time.Minute, renewBefore: 50 * time.Minute, want: dies},
		"no expires_in: counted from the fallback lifetime": {
			refreshLifetime: 3 * time.Minute,
			want:            "the refresh token expires before the access token (refresh_expires_in 3m0s, expires_in 5m0s): renewing before the refresh token expires",
		},
		"a refresh token that outlives the access token: the access token's clamp": {
			lifetime: time.Hour, refreshLifetime: 2 * time.Hour, renewBefore: 50 * time.Minute, want: Clamp(time.Hour, 50*time.Minute),
		},
		"no refresh lifetime: the access token's clamp": {
			lifetime: time.Hour, renewBefore: 50 * time.Minute, want: Clamp(time.Hour, 50*time.Minute),
		},
		"no refresh lifetime, renewBefore within bounds: nothing to say": {lifetime: time.Hour, renewBefore: 5 * time.Minute},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := LaterRefreshClamp(tc.lifetime, tc.refreshLifetime, tc.renewBefore); got != tc.want {
				t.Errorf("LaterRefreshClamp = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLife(t *testing.T) {
	issued := time.Date(2026, 11, 29, 10, 0, 0, 700_000_000, time.UTC)
	cases := map[string]struct {
		issued   time.Time
		lifetime time.Duration
		want     Schedule
	}{
		"a refresh token that lives 30 minutes is issued and dies at whole seconds, downwards": {
			issued: issued, lifetime: 30 * time.Minute,
			want: Schedule{Issued: issued.Truncate(time.Second), ExpiresAt: issued.Add(30 * time.Minute).Truncate(time.Second)},
		},
		"a fraction of a second carried over by the lifetime truncates the expiry alone": {
			issued: issued, lifetime: 1800*time.Second + 500*time.Millisecond,
			want: Schedule{Issued: time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC), ExpiresAt: time.Date(2026, 11, 29, 10, 30, 1, 0, time.UTC)},
		},
		"an issuance at a whole second is kept as it is": {
			issued: issued.Truncate(time.Second), lifetime: time.Hour,
			want: Schedule{Issued: issued.Truncate(time.Second), ExpiresAt: issued.Truncate(time.Second).Add(time.Hour)},
		},
		"no refresh_expires_in (0): no limit, the zero Schedule": {issued: issued, lifetime: 0, want: Schedule{}},
		"a negative lifetime is no limit either":                 {issued: issued, lifetime: -time.Second, want: Schedule{}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := Life(tc.issued, tc.lifetime)
			if !got.Issued.Equal(tc.want.Issued) || !got.ExpiresAt.Equal(tc.want.ExpiresAt) || !got.RenewAt.IsZero() {
				t.Errorf("Life(%s, %s) = %+v, want %+v", tc.issued.Format(time.RFC3339Nano), tc.lifetime, got, tc.want)
			}
		})
	}
	// A rotation's refresh life is issued at the second Plan stamps on the access token
	// that came with it, which is how a pass finding the token fresh knows they came
	// together (controllers' refreshLifetimeOf).
	if plan, _ := Plan(issued, time.Hour, 0, "uid-1"); !Life(issued, 30*time.Minute).Issued.Equal(plan.Issued) {
		t.Errorf("Life issued %s, Plan %s: want the same second", Life(issued, 30*time.Minute).Issued, plan.Issued)
	}
}
