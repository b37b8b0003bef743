package rotation

import (
	"cmp"
	"testing"
	"time"
)

// A provider that holds a session to a fixed end (Keycloak's SSO Session Max) answers
// each refresh with no more life than the token spent had; one with only an idle
// timeout extends it. refresh_expires_in 0 is no limit, but not in the last second of a
// capped session.
func TestNextRefreshLifeTellsACappedSessionFromAnExtendedOne(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 300_000_000, time.UTC)
	at := now.Truncate(time.Second)
	cases := map[string]struct {
		refreshLifetime time.Duration
		spent           Schedule
		want            Schedule
		capped          bool
	}{
		"an idle timeout extends the token: not capped": {
			refreshLifetime: 30 * time.Minute, spent: Schedule{Issued: at.Add(-3 * time.Minute), ExpiresAt: at.Add(27 * time.Minute)},
			want: Schedule{Issued: at, ExpiresAt: at.Add(30 * time.Minute)},
		},
		"the session's end: the new token dies when the spent one did": {
			refreshLifetime: 4 * time.Minute, spent: Schedule{Issued: at.Add(-3 * time.Minute), ExpiresAt: at.Add(4 * time.Minute)},
			want: Schedule{Issued: at, ExpiresAt: at.Add(4 * time.Minute)}, capped: true,
		},
		"the session's end a second later, as rounding puts it: capped": {
			refreshLifetime: 4*time.Minute + time.Second, spent: Schedule{Issued: at.Add(-3 * time.Minute), ExpiresAt: at.Add(4 * time.Minute)},
			want: Schedule{Issued: at, ExpiresAt: at.Add(4*time.Minute + time.Second)}, capped: true,
		},
		"an idle timeout in the second the spent token was issued (the refresh right after a login): same life, not capped": {
			refreshLifetime: 12 * time.Second, spent: Schedule{Issued: at, ExpiresAt: at.Add(12 * time.Second)},
			want: Schedule{Issued: at, ExpiresAt: at.Add(12 * time.Second)},
		},
		"the session's end in the second the spent token was issued: shorter, capped": {
			refreshLifetime: 11 * time.Second, spent: Schedule{Issued: at, ExpiresAt: at.Add(12 * time.Second)},
			want: Schedule{Issued: at, ExpiresAt: at.Add(11 * time.Second)}, capped: true,
		},
		"a spent token without a known limit: nothing to compare, not capped": {
			refreshLifetime: 4 * time.Minute,
			want:            Schedule{Issued: at, ExpiresAt: at.Add(4 * time.Minute)},
		},
		"refresh_expires_in 0 with no limit before (Keycloak's offline tokens): no limit": {},
		"refresh_expires_in 0 long before the spent token's end: no limit, as the answer says": {
			spent: Schedule{Issued: at.Add(-3 * time.Minute), ExpiresAt: at.Add(time.Minute)},
		},
		"refresh_expires_in 0 in the spent token's last second: the session's end, not no limit": {
			spent: Schedule{Issued: at.Add(-3 * time.Minute), ExpiresAt: at.Add(time.Second)},
			want:  Schedule{Issued: at, ExpiresAt: at.Add(time.Second)}, capped: true,
		},
		"refresh_expires_in 0 at the spent token's stored end: capped, a second's life so it can be stored": {
			spent: Schedule{Issued: at.Add(-3 * time.Minute), ExpiresAt: at},
			want:  Schedule{Issued: at, ExpiresAt: at.Add(time.Second)}, capped: true,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			life, capped := NextRefreshLife(now, tc.refreshLifetime, tc.spent)
			if life != tc.want || capped != tc.capped {
				t.Errorf("NextRefreshLife = %+v, capped %t; want %+v, capped %t", life, capped, tc.want, tc.capped)
			}
		})
	}
}

// A capped refresh token moves the renewal earlier only when it still comes a third of
// the access token's lifetime after issuance; an extended one (an idle timeout) keeps
// today's plan whatever its lifetime.
func TestPlanRefreshOfACappedSessionRenewsBeforeItsEndAtMostOnce(t *testing.T) {
	issued := time.Date(2026, 12, 2, 10, 0, 0, 400_000_000, time.UTC)
	base := issued.Truncate(time.Second)
	cases := map[string]struct {
		lifetime, refreshLifetime time.Duration
		capped                    bool
		// The renewal must fall in [earliest, latest] after issue.
		earliest, latest time.Duration
		// expires is the access token's life as planned; lifetime when zero.
		expires time.Duration
	}{
		"extended, 3 minutes left: renewed at a third of the refresh token's life, before it dies": {
			lifetime: 5 * time.Minute, refreshLifetime: 3 * time.Minute, earliest: time.Minute, latest: time.Minute + time.Second,
		},
		"capped, 3 minutes left: planned from the access token alone, past the session's end": {
			lifetime: 5 * time.Minute, refreshLifetime: 3 * time.Minute, capped: true, earliest: 170 * time.Second, latest: 180 * time.Second,
		},
		"capped, 4 minutes left: the renewal before the end comes 2 minutes in, past a third of the access token's life, and is kept": {
			lifetime: 5 * time.Minute, refreshLifetime: 4 * time.Minute, capped: true, earliest: 2 * time.Minute, latest: 2*time.Minute + time.Second,
		},
		"capped, 1 second left: from the access token alone": {
			lifetime: 5 * time.Minute, refreshLifetime: time.Second, capped: true, earliest: 170 * time.Second, latest: 180 * time.Second,
		},
		"capped, 20 minutes left, outliving the access token: the access token's plan, as when extended": {
			lifetime: 5 * time.Minute, refreshLifetime: 20 * time.Minute, capped: true, earliest: 170 * time.Second, latest: 180 * time.Second,
		},
		"capped, the access token held to the same end (Keycloak's last access lifespan): at its expiry, the end": {
			lifetime: 3 * time.Minute, refreshLifetime: 3 * time.Minute, capped: true, earliest: 3 * time.Minute, latest: 3 * time.Minute,
		},
		"extended, the access token dying with the refresh token: the usual plan": {
			lifetime: 3 * time.Minute, refreshLifetime: 3 * time.Minute, earliest: time.Minute, latest: 2 * time.Minute,
		},
		"capped, the access token without a lifetime (expires_in 0 in the session's last second): it dies and is renewed at the end": {
			refreshLifetime: time.Second, capped: true, earliest: time.Second, latest: time.Second, expires: time.Second,
		},
		"extended, the access token without a lifetime: FallbackLifetime's plan, before the refresh token dies": {
			refreshLifetime: 3 * time.Minute, earliest: time.Minute, latest: 2 * time.Minute, expires: FallbackLifetime,
		},
		"capped with no limit: the access token's plan": {
			lifetime: 5 * time.Minute, capped: true, earliest: 170 * time.Second, latest: 180 * time.Second,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s, clamp := PlanRefresh(issued, tc.lifetime, tc.refreshLifetime, tc.capped, 0, "uid-1")
			if s.RenewAt.Before(base.Add(tc.earliest)) || s.RenewAt.After(base.Add(tc.latest)) {
				t.Errorf("RenewAt = %s after issue, want within [%s, %s]", s.RenewAt.Sub(base), tc.earliest, tc.latest)
			}
			expires := cmp.Or(tc.expires, tc.lifetime)
			if want := base.Add(expires); !s.ExpiresAt.Equal(want) {
				t.Errorf("ExpiresAt = %s, want the access token's %s", s.ExpiresAt, want)
			}
			// The words are what a later pass says from what was stored.
			if want := SessionClamp(s, expires, tc.refreshLifetime, 0); clamp != want {
				t.Errorf("clamp %q, want %q", clamp, want)
			}
		})
	}
}

// Keycloak's defaults: 5-minute access tokens, SSO Session Idle 30 minutes, SSO Session
// Max 10 hours; each refresh answer's refresh_expires_in is the lesser of the idle time
// and what is left of the session, in whole seconds, and so is each expires_in once the
// session has less left than an access token's lifespan. Planned from a refresh token's
// shrinking life, the renewals came ever closer as the end neared (21 in the last 30
// minutes against 10, the last ones seconds apart). Judged capped, the last 30 minutes
// renew as any other 30 minutes do, plus at most one, never sooner than a third of the
// access token's lifetime apart; the request after the end is the one refused. An
// access token held to the end shrinks the same way: planned from its own life, the
// last five minutes brought renewals at 2/3 of what was left, seconds apart at the end.
func TestASessionEndingAtKeycloaksSessionMaxRenewsAsOftenAsAnyOther(t *testing.T) {
	const access, idle, sessionMax = 5 * time.Minute, 30 * time.Minute, 10 * time.Hour
	login := time.Date(2026, 12, 2, 8, 0, 0, 250_000_000, time.UTC)
	end := login.Add(sessionMax)
	for _, seed := range []string{"uid-1", "uid-2", "uid-3", "uid-4", "uid-5"} {
		renewals, refused := simulateSession(login, end, access, idle, seed)
		inWindow := func(from, to time.Time) int {
			n := 0
			for _, r := range renewals {
				if !r.Before(from) && r.Before(to) {
					n++
				}
			}
			return n
		}
		normal := inWindow(login.Add(2*time.Hour), login.Add(2*time.Hour+30*time.Minute))
		last := inWindow(end.Add(-30*time.Minute), end)
		if last > normal+1 {
			t.Errorf("%s: %d renewals in the session's last 30 minutes, want at most %d (%d in any other 30 minutes, plus one)", seed, last, normal+1, normal)
		}
		for i := 1; i < len(renewals); i++ {
			if gap := renewals[i].Sub(renewals[i-1]); gap < access/3 {
				t.Errorf("%s: renewals %s apart at %s before the session's end, want at least a third of the access token's %s", seed, gap, end.Sub(renewals[i]), access)
			}
		}
		if refused.Before(end) || refused.After(end.Add(access)) {
			t.Errorf("%s: the refused request came %s after the session's end, want within the last access token's %s", seed, refused.Sub(end), access)
		}
		t.Logf("%s: %d renewals in 30 minutes mid-session, %d in the last 30 minutes; the refused request %s after the end", seed, normal, last, refused.Sub(end))
	}
}

// simulateSession runs one Keycloak session from login to its end at the planner's
// pace, each request sent 100 ms after its renewal time, or after the request before it
// when that time had passed: it returns when the renewals were sent, and when the
// request after the end (refused) went out.
func simulateSession(login, end time.Time, access, idle time.Duration, seed string) (renewals []time.Time, refused time.Time) {
	answer := func(now time.Time) time.Duration { return min(idle, end.Sub(now)).Truncate(time.Second) }
	// Keycloak holds the access token to the session's end too (expires_in).
	expiresIn := func(now time.Time) time.Duration { return min(access, end.Sub(now)).Truncate(time.Second) }
	spent, _ := NextRefreshLife(login, answer(login), Schedule{})
	s, _ := PlanRefresh(login, expiresIn(login), spent.ExpiresAt.Sub(spent.Issued), false, 0, seed)
	sent := login
	for range 100_000 { // a Zeno schedule reaches the end in finitely many steps, but many
		// A renewal planned at or before the last request goes out at once, back to back.
		now := s.RenewAt
		if now.Before(sent) {
			now = sent
		}
		now = now.Add(100 * time.Millisecond)
		sent = now
		if !now.Before(end) {
			return renewals, now
		}
		renewals = append(renewals, now)
		life, capped := NextRefreshLife(now, answer(now), spent)
		lifetime := time.Duration(0)
		if !life.ExpiresAt.IsZero() {
			lifetime = life.ExpiresAt.Sub(life.Issued)
		}
		s, _ = PlanRefresh(now, expiresIn(now), lifetime, capped, 0, seed)
		spent = life
	}
	return renewals, sent
}

// While a capped session's last renewal is planned past its end, the condition names
// the end, from what is stored (the schedule, and the refresh token's lifetime from the
// same issuance); otherwise it says what RefreshClamp says.
func TestSessionClampNamesTheEndOfASessionRenewedPastIt(t *testing.T) {
	issued := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	cases := map[string]struct {
		renewAt                                time.Time
		lifetime, refreshLifetime, renewBefore time.Duration
		want                                   string
	}{
		"renewed past the refresh token's death: the session's end": {
			renewAt: issued.Add(3 * time.Minute), lifetime: 5 * time.Minute, refreshLifetime: 2 * time.Minute,
			want: "the provider's session ends at 2026-12-02T10:02:00Z: the customer must log in again by then",
		},
		"renewed at the refresh token's death: the session's end": {
			renewAt: issued.Add(2 * time.Minute), lifetime: 5 * time.Minute, refreshLifetime: 2 * time.Minute,
			want: "the provider's session ends at 2026-12-02T10:02:00Z: the customer must log in again by then",
		},
		"the session's end, and renewBefore held to two thirds of the access token's lifetime": {
			renewAt: issued.Add(3 * time.Minute), lifetime: 5 * time.Minute, refreshLifetime: 2 * time.Minute, renewBefore: 4 * time.Minute,
			want: "the provider's session ends at 2026-12-02T10:02:00Z: the customer must log in again by then; " + Clamp(5*time.Minute, 4*time.Minute),
		},
		"renewed before the refresh token dies: RefreshClamp's words": {
			renewAt: issued.Add(time.Minute), lifetime: 5 * time.Minute, refreshLifetime: 2 * time.Minute,
			want: RefreshClamp(5*time.Minute, 2*time.Minute, 0),
		},
		"no limit: RefreshClamp's words": {
			renewAt: issued.Add(3 * time.Minute), lifetime: 5 * time.Minute, renewBefore: 4 * time.Minute,
			want: Clamp(5*time.Minute, 4*time.Minute),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := Schedule{Issued: issued, RenewAt: tc.renewAt, ExpiresAt: issued.Add(tc.lifetime)}
			if got := SessionClamp(s, tc.lifetime, tc.refreshLifetime, tc.renewBefore); got != tc.want {
				t.Errorf("SessionClamp = %q, want %q", got, tc.want)
			}
		})
	}
}
