package rotation

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"time"
)

// MinRenewMargin is the least time before expiry at which a token is renewed: kubelet
// takes up to about a minute (its sync period plus the cache TTL) to project a changed
// Secret into a pod, and the pod needs time to read it.
const MinRenewMargin = 2 * time.Minute

// FallbackLifetime is assumed when the token endpoint gives no usable expires_in. It is
// short on purpose: renewing too early costs one request, renewing too late breaks pods.
const FallbackLifetime = 5 * time.Minute

// Schedule is when a token was issued, expires and is renewed.
type Schedule struct {
	Issued    time.Time
	ExpiresAt time.Time
	RenewAt   time.Time
}

// Life is the schedule of a token issued at issued that lives lifetime, without a
// renewal time: a refresh token's own life (refresh_expires_in), stored beside it
// (secrets.SetRefreshLife) by the rotation and the login callback alike. Both times are
// truncated to whole seconds, downwards, as Plan truncates an access token's, so a
// rotation's refresh life is issued at the very second of the access token that came
// with it. Callers pass the time taken before the request went out, so the expiry is
// never later than the server's. Zero when lifetime is not positive: no limit, or none
// said.
func Life(issued time.Time, lifetime time.Duration) Schedule {
	if lifetime <= 0 {
		return Schedule{}
	}
	return Schedule{Issued: issued.Truncate(time.Second), ExpiresAt: issued.Add(lifetime).Truncate(time.Second)}
}

// Due reports whether a token on schedule s must be renewed at now.
func (s Schedule) Due(now time.Time) bool { return !now.Before(s.RenewAt) }

// Earliest is when the next token may be requested at the soonest, whatever was
// changed: a third of this token's lifetime after its issuance, or its renewal time when
// the issuance is unknown (Plan never renews sooner than a third). A renewal planned
// sooner still, for a refresh token that expires before the access token
// (PlanRefresh), is not held back: Plan held it to a third of the refresh token's
// lifetime, and the refresh token is dead by the access token's third.
func (s Schedule) Earliest() time.Time {
	if s.Issued.IsZero() || !s.Issued.Before(s.ExpiresAt) {
		return s.RenewAt
	}
	third := ceilSecond(s.Issued.Add(s.ExpiresAt.Sub(s.Issued) / 3))
	if !s.RenewAt.IsZero() && s.RenewAt.Before(third) {
		return s.RenewAt
	}
	return third
}

// UnknownLifetimeFloor is how long a changed request waits after a failed one when no
// token lifetime is known (the CR never stored a token): a third of the shortest
// lifetime Central Dispatch issues (30 minutes, DESIGN §1), which is also the longest
// backoff after a failure.
const UnknownLifetimeFloor = 10 * time.Minute

// ChangeFloor is how long a request the operator was not due to send (an edit's, a
// recheck's) waits after a failed request: a third of the token lifetime, or
// UnknownLifetimeFloor when the lifetime is unknown. Such requests spaced this far from
// the failure before them, and renewals never sooner than a third of the lifetime after
// issuance, make at most 3 requests per lifetime (DESIGN §4, §8).
func ChangeFloor(lifetime time.Duration) time.Duration {
	if lifetime <= 0 {
		return UnknownLifetimeFloor
	}
	return lifetime / 3
}

// Plan decides when a token issued at issued with the given lifetime is renewed
// (DESIGN §4): at 2/3 of the lifetime minus a jitter of up to 10% of it, or renewBefore
// ahead of expiry when set; never less than MinRenewMargin ahead unless the token lives
// shorter than that; and whatever the spec says, never sooner than lifetime/3 after
// issuance, so no spec value makes more than 3 requests per lifetime. clamp says so when
// renewBefore had to be shortened. seed spreads the jitter of different objects apart
// (thousands of grants must not renew in the same second) while keeping Plan pure. Times
// are truncated to whole seconds, downwards, so a requeue a hair early never skips a
// renewal and an expiry is never later than the real one.
func Plan(issued time.Time, lifetime, renewBefore time.Duration, seed string) (s Schedule, clamp string) {
	if lifetime <= 0 {
		lifetime = FallbackLifetime
	}
	margin := renewBefore
	if margin <= 0 {
		margin = lifetime/3 + jitter(lifetime/10, seed, issued)
	}
	margin = max(margin, minMargin(lifetime))
	if most := lifetime * 2 / 3; margin > most {
		margin = most
	}
	expires := issued.Add(lifetime)
	s = Schedule{
		Issued:    issued.Truncate(time.Second),
		ExpiresAt: expires.Truncate(time.Second),
		RenewAt:   expires.Add(-margin).Truncate(time.Second),
	}
	// Truncating to whole seconds must not bring a renewal sooner than a third of the
	// lifetime after the real issuance: that bound is what caps requests per lifetime.
	if earliest := ceilSecond(issued.Add(lifetime / 3)); s.RenewAt.Before(earliest) && earliest.Before(s.ExpiresAt) {
		s.RenewAt = earliest
	}
	return s, Clamp(lifetime, renewBefore)
}

// PlanRefresh is Plan for a token whose renewal spends a refresh token that lives
// refreshLifetime (0: no limit, the usual case): the renewal must come before the
// refresh token dies as well as before the access token expires. Keycloak answers an
// hour-long access token with refresh_expires_in 1800 under its default SSO Session
// Idle of 30 minutes; renewed at 2/3 of the hour, the refresh token is refused and the
// customer must log in again. RenewAt is the earlier of the two tokens' plans, each
// under Plan's rules (margin, jitter, never sooner than a third of that lifetime);
// ExpiresAt stays the access token's, which is what pods hold. clamp is
// SessionClamp's, which a pass that finds the token fresh can say again from what was
// stored (status, the schedule and the refresh token's stored lifetime).
//
// capped says the provider holds the session to a fixed end (NextRefreshLife): the
// refresh token came with no more life than the one spent for it. Renewing before that
// end extends nothing, the next refresh token dies at the same time, and planning from
// a lifetime that shrinks with every renewal would renew ever more often as the end
// nears (Keycloak's SSO Session Max: back to back in its last second). So a capped
// refresh token moves the renewal earlier only when the renewal still comes at least a
// third of the access token's lifetime after issuance: the one renewal that gives the
// pods the most access past the session's end. Otherwise the renewal is planned from
// the access token alone, and the request after the end is refused once and asks for
// a new login. An access token that dies with a capped refresh token is held to the
// session's end as well: nothing renews it past the end, so it is renewed once, when it
// expires, where the refusal asks for the login. So is an access token without a
// lifetime (expires_in 0) beside a capped refresh token.
func PlanRefresh(issued time.Time, lifetime, refreshLifetime time.Duration, capped bool, renewBefore time.Duration, seed string) (s Schedule, clamp string) {
	if capped && lifetime <= 0 {
		// expires_in 0 (or none) beside a capped refresh token: the answer to a request in
		// the session's last second, whose access token dies with the session, not
		// FallbackLifetime later; or the output Secret would vouch for a dead token for
		// minutes, and the refused request that asks for the login wait as long.
		lifetime = refreshLifetime
	}
	s, _ = Plan(issued, lifetime, renewBefore, seed)
	if refreshLifetime > 0 {
		r, _ := Plan(issued, refreshLifetime, renewBefore, seed)
		switch {
		case capped && within(s.ExpiresAt, r.ExpiresAt, time.Second):
			// The access token is held to the session's end too (Keycloak caps expires_in
			// at SSO Session Max as well): no renewal before the end gives the pods
			// anything, and planned from a life that shrinks with every renewal they would
			// come ever closer. The one request goes out when the access token expires, at
			// the session's end as far as whole seconds tell: refused, it asks for a login
			// (a renewal may not come after the expiry, or the stored schedule is not
			// consistent). Sent within the end's last second, it is answered with a token
			// held to the end again, whose renewal is the refused one.
			s.RenewAt = s.ExpiresAt
		case r.RenewAt.Before(s.RenewAt) && (!capped || !r.RenewAt.Before(accessThird(issued, lifetime))):
			s.RenewAt = r.RenewAt
		}
	}
	return s, SessionClamp(s, lifetime, refreshLifetime, renewBefore)
}

// within reports whether a and b are at most d apart.
func within(a, b time.Time, d time.Duration) bool {
	return !a.Before(b.Add(-d)) && !a.After(b.Add(d))
}

// accessThird is a third of the access token's lifetime after its issuance, rounded up
// to a whole second as Plan rounds its floor.
func accessThird(issued time.Time, lifetime time.Duration) time.Time {
	if lifetime <= 0 {
		lifetime = FallbackLifetime
	}
	return ceilSecond(issued.Add(lifetime / 3))
}

// NextRefreshLife is the life of the refresh token a rotation sent at now brought,
// whose answer said refreshLifetime (refresh_expires_in; 0 when absent or 0), given the
// life of the token it spent (spent; zero when it had no known limit). capped says the
// provider holds the session to a fixed end (Keycloak's SSO Session Max: each answer's
// refresh_expires_in is the lesser of SSO Session Idle and what is left of the
// session): the new token dies no later than the spent one did, within the second each
// expiry is rounded to, and lives shorter than the spent one did. A token extended by
// the refresh (an idle timeout) is not capped, even when sent in the second the spent
// one was issued, where its end is the spent one's as far as whole seconds tell.
//
// refresh_expires_in 0 is no limit (Keycloak's offline tokens), but not after a
// positive one whose end is less than two seconds away when the request went out:
// Keycloak rounds what is left of the session down to whole seconds, and answers 0 in
// its last second. That token is capped and dies when the spent one did; stored as no
// limit, its renewal would be planned as if the session went on. Its life is at least
// the second its issuance is rounded to, or it could not be stored.
func NextRefreshLife(now time.Time, refreshLifetime time.Duration, spent Schedule) (life Schedule, capped bool) {
	issued := now.Truncate(time.Second)
	end := spent.ExpiresAt
	switch {
	case refreshLifetime > 0:
		life = Life(now, refreshLifetime)
		// Shorter than the spent token's too: a refresh in the second the spent token was
		// issued (the first one after a login brings no access token, so it follows at
		// once) ends within that second of the spent token's end under an idle timeout
		// as well, but with the same life; a capped session's answer is shorter by the
		// time since, rounded down.
		shorter := refreshLifetime < end.Sub(spent.Issued)
		return life, !end.IsZero() && shorter && !life.ExpiresAt.After(end.Add(time.Second))
	case end.IsZero() || end.After(now.Add(2*time.Second)):
		return Schedule{}, false // no limit, as the answer says
	}
	if !issued.Before(end) {
		end = issued.Add(time.Second)
	}
	return Schedule{Issued: issued, ExpiresAt: end}, true
}

// RefreshClamp is Clamp for a token renewed by a refresh token that lives
// refreshLifetime (0: no limit, when it is Clamp): when spec.renewBefore counted from
// the refresh token's expiry comes before it counted from the access token's, the
// renewal is planned from the refresh token (PlanRefresh), and the condition says so, or
// a platform team reading renewBefore 5m on an hour-long token would look for the
// renewal 55 minutes in and find it 25 in. Without renewBefore, the default plan (a
// third of the lifetime, and jitter) moves earlier whenever the refresh token lives
// shorter than the access token, and that is said too, without a margin: the jitter
// differs from one renewal to the next, and the words must not, or every pass that
// finds the token fresh would write status. A pure function of the three, as Clamp.
func RefreshClamp(lifetime, refreshLifetime, renewBefore time.Duration) string {
	if refreshLifetime <= 0 {
		return Clamp(lifetime, renewBefore)
	}
	if lifetime <= 0 {
		lifetime = FallbackLifetime
	}
	dies := fmt.Sprintf("the refresh token expires before the access token (refresh_expires_in %s, expires_in %s): renewing", refreshLifetime, lifetime)
	if renewBefore <= 0 {
		if refreshLifetime >= lifetime {
			return Clamp(lifetime, renewBefore)
		}
		return dies + " before the refresh token expires"
	}
	access, refresh := clampedMargin(lifetime, renewBefore), clampedMargin(refreshLifetime, renewBefore)
	if refreshLifetime-refresh >= lifetime-access {
		return Clamp(lifetime, renewBefore)
	}
	msg := fmt.Sprintf("%s %s before the refresh token expires", dies, refresh.Truncate(time.Second))
	if refresh < renewBefore {
		msg += fmt.Sprintf(", not spec.renewBefore %s (at most two thirds of its lifetime, 3 requests per lifetime)", renewBefore)
	}
	return msg
}

// LaterRefreshClamp is RefreshClamp for a refresh token stored after the access token
// it renews was issued: a customer's login through the callback, or an unusable
// answer's successor. That token's renewal was planned without it, and Decide brings it
// forward to MinRenewMargin before the refresh token dies when that comes first
// (stillFresh), whatever spec.renewBefore says. So a refresh token that dies before the
// access token is said without a margin, as RefreshClamp says it without renewBefore
// (RefreshClamp's margin would be renewBefore's, which this renewal does not keep); one
// that lives as long or longer, or without a limit, leaves the access token's own
// Clamp. A pure function of the three, as RefreshClamp.
func LaterRefreshClamp(lifetime, refreshLifetime, renewBefore time.Duration) string {
	if words := RefreshClamp(lifetime, refreshLifetime, 0); words != "" {
		return words
	}
	return Clamp(lifetime, renewBefore)
}

// SessionClamp is RefreshClamp for the token on schedule s (issued, renewed), whose
// refresh token was issued with it and lives refreshLifetime: when the renewal comes
// once that refresh token is dead, which only a capped session's plan does
// (PlanRefresh), the words name the session's end, so a platform team sees the new
// login coming, and say what spec.renewBefore was held to, as Clamp does. A pure
// function of what is stored (status, the output Secret's schedule and the refresh
// token's stored life), as RefreshClamp: a pass that finds the token fresh says what
// the pass that stored it said.
func SessionClamp(s Schedule, lifetime, refreshLifetime, renewBefore time.Duration) string {
	ends := s.Issued.Add(refreshLifetime)
	if refreshLifetime <= 0 || s.RenewAt.Before(ends) {
		return RefreshClamp(lifetime, refreshLifetime, renewBefore)
	}
	msg := fmt.Sprintf("the provider's session ends at %s: the customer must log in again by then", ends.UTC().Format(time.RFC3339))
	if c := Clamp(lifetime, renewBefore); c != "" {
		msg += "; " + c
	}
	return msg
}

// clampedMargin is the margin before expiry Plan keeps for a token of the given lifetime
// when renewBefore is set.
func clampedMargin(lifetime, renewBefore time.Duration) time.Duration {
	return min(max(renewBefore, minMargin(lifetime)), lifetime*2/3)
}

// Clamp says how Plan shortens renewBefore for a token of the given lifetime, in words
// for a condition message; "" when it does not (renewBefore unset, or within two thirds
// of the lifetime). A pure function of the two, so a pass that finds the token fresh
// says what the pass that stored it said.
func Clamp(lifetime, renewBefore time.Duration) string {
	if renewBefore <= 0 {
		return ""
	}
	if lifetime <= 0 {
		lifetime = FallbackLifetime
	}
	most := lifetime * 2 / 3
	if max(renewBefore, minMargin(lifetime)) <= most {
		return ""
	}
	return fmt.Sprintf("spec.renewBefore %s is more than two thirds of the token's %s lifetime; renewing %s before expiry instead (at most 3 requests per lifetime)",
		renewBefore, lifetime, most.Truncate(time.Second))
}

// minMargin is the least margin before expiry for a token of the given lifetime:
// MinRenewMargin, unless the token lives shorter than that.
func minMargin(lifetime time.Duration) time.Duration {
	if lifetime > MinRenewMargin {
		return MinRenewMargin
	}
	return 0
}

// ceilSecond rounds t up to a whole second.
func ceilSecond(t time.Time) time.Time {
	if tr := t.Truncate(time.Second); tr.Before(t) {
		return tr.Add(time.Second)
	}
	return t
}

// jitter returns a duration in [0, maxJitter) derived from seed and t, so it differs
// between objects and between renewals of one object, yet is reproducible.
func jitter(maxJitter time.Duration, seed string, t time.Time) time.Duration {
	if maxJitter <= 0 {
		return 0
	}
	return time.Duration(seeded(seed, uint64(t.Unix())) % uint64(maxJitter))
}

func seeded(seed string, n uint64) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(seed))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], n)
	_, _ = h.Write(b[:])
	return h.Sum64()
}
