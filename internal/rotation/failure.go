package rotation

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
)

// Failure is the memory of failed attempts a CR keeps in status (status.lastFailure), so
// backoff and "refused for good" survive restarts.
type Failure struct {
	// Request identifies what was sent (see Request); a changed request starts afresh.
	Request string
	// Reason is the Ready reason the failure was reported with.
	Reason string
	// Time is when the last attempt failed.
	Time time.Time
	// Attempts counts the consecutive failed attempts at Request, and at the requests
	// it was edited from (SameSpec false) since the last success: an edit buys no fresh
	// budget of attempts.
	Attempts int
	// Retry is when the next attempt may go out; zero while the failure is terminal.
	Retry time.Time
	// Recheck is when a terminal refusal that the identity server alone may fix (see
	// Retry.Recheck) is asked again all the same; zero for one no retry can fix.
	Recheck time.Time
}

// Terminal reports whether nothing is to be sent until the request changes.
func (f Failure) Terminal() bool { return f.Retry.IsZero() }

// EditFloor is when a request edited in its spec after f (SameSpec false) may go out:
// the request budget's floor after a failure, ChangeFloor of lifetime (the last stored
// token's, 0 when unknown) after it. tooSoonAfterFailure holds an edit until then, sooner
// only to renew a token that would expire first (or whose refresh token would), later
// only for a backoff that ends later. Conditions say it as ChangeFloor after status.lastFailure.lastFailureTime (no
// timestamps in messages), so a user knows when an edit is tried.
func (f Failure) EditFloor(lifetime time.Duration) time.Time {
	return ceilSecond(f.Time.Add(ChangeFloor(lifetime)))
}

// Retry says how a failed attempt is retried.
type Retry struct {
	// Terminal: never again for the same request.
	Terminal bool
	// After is the least wait the server asked for (Retry-After).
	After time.Duration
	// Wait is the least wait a throttle that named none is thought to need (a 429
	// without Retry-After, Entra's loop detection): like After, but only a guess, so a
	// token about to expire cuts it short (Expires).
	Wait time.Duration
	// MaxAttempts, when positive, turns the failure terminal once this many attempts at
	// the same request have failed.
	MaxAttempts int
	// Lifetime, when known, is the lifetime of the token being renewed. The backoff never
	// exceeds a third of it (the renewal window), so a provider that answers again is
	// asked again before a held token has been stale for long; a server's Retry-After
	// still wins.
	Lifetime time.Duration
	// Recheck: terminal, but a refusal the identity server alone may fix (a grant type
	// enabled, a scope granted, a product allocated, a new client secret activated;
	// or a host the manager may not contact, after a restart with another allow-list):
	// asked again a ChangeFloor after the failure all the same (the pace edits keep), so
	// the CR recovers without anyone touching it, within the request budget.
	Recheck bool
	// Expires, when known, is when the token in the output Secret expires. A wait never
	// runs past the last safe point before it (Expires less MinRenewMargin), unless the
	// server asked for longer (After): a provider that answers again by then renews it in
	// time. Past that point the wait is at most ExpiringRetry: pods have (almost) nothing
	// left, and the backoff must not add ten minutes to an outage that is over.
	Expires time.Time
	// RefreshExpires, when known, is when the refresh token that renews the token dies
	// (a grant's, from refresh_expires_in: Keycloak's SSO Session Idle); zero when it has
	// no limit. Every bound Expires sets counts from the earlier of the two: the refresh
	// token sent after its own expiry is refused (invalid_grant) and the customer must
	// log in again, however long the access token pods hold still lives.
	RefreshExpires time.Time
	// ResendLate: a grant's attempt got no answer (Lost), so its stored refresh token may
	// be sent once more, and only once (DESIGN §6). That resend waits for the last safe
	// point before Expires (or RefreshExpires, when that comes first), by when an outage
	// that swallowed the first has likely passed, instead of spending the last send in
	// the same outage seconds later.
	ResendLate bool
	// Holding: the write that failed carries a refresh token held only in memory (the
	// one it replaced is spent). Each retry is one Secret write, and the token is lost
	// if it has not landed by its holder deadline, so it is retried at the base interval.
	Holding bool
}

// Backoff bounds: 5 s after the first failure, doubling, at most 10 minutes, with up to
// 20% jitter so a fleet that failed together does not retry together (below the bound
// once the bound is reached, so the bound holds).
const (
	backoffBase = 5 * time.Second
	backoffMax  = 10 * time.Minute
)

// ExpiringRetry is the longest wait between attempts once the token in the output
// Secret is within MinRenewMargin of its expiry, or past it.
const ExpiringRetry = time.Minute

// Fail records one more failed attempt at request on top of prev (nil when there was
// none) and decides when the next one may go out. The count starts afresh only when
// request differs from prev's in its secret values alone (a fixed client secret, a
// customer's new login); an edit of the spec counts on, so flipping a field back and
// forth never earns another round of retries.
func Fail(prev *Failure, request, reason string, now time.Time, retry Retry, seed string) Failure {
	f := Failure{Request: request, Reason: reason, Time: now.Truncate(time.Second), Attempts: 1}
	if prev != nil && (prev.Request == request || !SameSpec(prev.Request, request)) {
		f.Attempts = prev.Attempts + 1
	}
	if retry.Recheck {
		// At the request budget's pace, as an edit would go (DESIGN §8).
		f.Recheck = now.Add(max(ChangeFloor(retry.Lifetime), retry.After)).Truncate(time.Second)
		return f
	}
	if retry.Terminal || (retry.MaxAttempts > 0 && f.Attempts >= retry.MaxAttempts) {
		return f
	}
	limit := retry.Lifetime / 3
	if retry.Holding {
		limit = backoffBase
	}
	wait := max(backoffAfter(f.Attempts, limit, seed), retry.After, retry.Wait)
	if deadline := retry.deadline(); !deadline.IsZero() && retry.After == 0 {
		wait = boundByExpiry(wait, now, deadline, retry.ResendLate)
	}
	f.Retry = now.Add(wait).Truncate(time.Second)
	if !f.Retry.After(now) {
		f.Retry = now.Truncate(time.Second).Add(time.Second)
	}
	return f
}

// deadline is what a wait must not run past: the expiry of the token pods hold
// (Expires), or of the refresh token that renews it (RefreshExpires) when that comes
// first; zero when neither is known.
func (r Retry) deadline() time.Time {
	if r.Expires.IsZero() || (!r.RefreshExpires.IsZero() && r.RefreshExpires.Before(r.Expires)) {
		return r.RefreshExpires
	}
	return r.Expires
}

// boundByExpiry fits a wait to deadline (Retry.deadline): a lost answer's one resend
// (resendLate) at the last safe point before it; any other retry no later than that
// point, and at most ExpiringRetry apart after it.
func boundByExpiry(wait time.Duration, now, deadline time.Time, resendLate bool) time.Duration {
	safe := deadline.Add(-MinRenewMargin)
	switch {
	case !now.Before(safe):
		return min(wait, ExpiringRetry)
	case resendLate:
		return safe.Sub(now)
	}
	return min(wait, max(safe.Sub(now), backoffBase))
}

// backoffAfter is the wait after the given number of consecutive failures, at most
// limit when that is positive (never less than the base). The jitter lengthens a wait
// that has room below its ceiling (backoffMax, limit) and shortens one that would
// reach it: the ceiling is what Retry.Lifetime and UnknownLifetimeFloor promise.
func backoffAfter(attempts int, limit time.Duration, seed string) time.Duration {
	ceiling := backoffMax
	if limit > 0 {
		ceiling = min(ceiling, max(limit, backoffBase))
	}
	d := ceiling
	if shift := attempts - 1; shift < 8 {
		d = min(backoffBase<<max(shift, 0), ceiling)
	}
	j := time.Duration(seeded(seed, uint64(attempts)) % uint64(d/5))
	if d+d/5 <= ceiling || ceiling == backoffBase {
		// The base is a floor, not a ceiling: a write held at it keeps its 5-6 s.
		return d + j
	}
	return ceiling - j
}

// Request identifies a token request by what it sends, without revealing any of it. It
// has two halves: spec, what the CR decides (endpoint, client, auth method, scopes, the
// Secrets it names, the CR's UID), and secrets, the values read from those Secrets (the
// client id when it comes from one, hashes of the client secret and refresh token).
// Someone who may only edit CRs can change the first half, never the second alone; see
// SameSpec. metadata.generation is in neither: an edit that changes nothing sent (a
// label in secretTemplate, renewBefore) is the same request, and a failure remembered
// for it still holds.
func Request(spec, secrets []string) string {
	return digest(spec) + "." + digest(secrets)
}

// SameSpec reports whether two requests differ at most in their secret values.
func SameSpec(a, b string) bool {
	sa, _, okA := strings.Cut(a, ".")
	sb, _, okB := strings.Cut(b, ".")
	return okA && okB && sa == sb
}

func digest(parts []string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:12])
}

// Hash identifies a secret value (a refresh token, a client secret) without revealing
// it. Its format is the one in-flight marks have always carried.
func Hash(value string) string {
	sum := sha256.Sum256([]byte(value))
	return "sha256:" + hex.EncodeToString(sum[:16])
}
