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
	// Attempts counts the consecutive failed attempts at Request.
	Attempts int
	// Retry is when the next attempt may go out; zero while the failure is terminal.
	Retry time.Time
}

// Terminal reports whether nothing is to be sent until the request changes.
func (f Failure) Terminal() bool { return f.Retry.IsZero() }

// Retry says how a failed attempt is retried.
type Retry struct {
	// Terminal: never again for the same request.
	Terminal bool
	// After is the least wait the server asked for (Retry-After).
	After time.Duration
	// MaxAttempts, when positive, turns the failure terminal once this many attempts at
	// the same request have failed.
	MaxAttempts int
}

// Backoff bounds: 5 s after the first failure, doubling, at most 10 minutes, plus up to
// 20% jitter so a fleet that failed together does not retry together.
const (
	backoffBase = 5 * time.Second
	backoffMax  = 10 * time.Minute
)

// Fail records one more failed attempt at request on top of prev (nil when there was
// none, or it was for another request) and decides when the next one may go out.
func Fail(prev *Failure, request, reason string, now time.Time, retry Retry, seed string) Failure {
	f := Failure{Request: request, Reason: reason, Time: now.Truncate(time.Second), Attempts: 1}
	if prev != nil && prev.Request == request {
		f.Attempts = prev.Attempts + 1
	}
	if retry.Terminal || (retry.MaxAttempts > 0 && f.Attempts >= retry.MaxAttempts) {
		return f
	}
	wait := max(backoffAfter(f.Attempts, seed), retry.After)
	f.Retry = now.Add(wait).Truncate(time.Second)
	if !f.Retry.After(now) {
		f.Retry = now.Truncate(time.Second).Add(time.Second)
	}
	return f
}

// backoffAfter is the wait after the given number of consecutive failures.
func backoffAfter(attempts int, seed string) time.Duration {
	d := backoffMax
	if shift := attempts - 1; shift < 8 {
		d = min(backoffBase<<max(shift, 0), backoffMax)
	}
	return d + time.Duration(seeded(seed, uint64(attempts))%uint64(d/5))
}

// Request identifies a token request by what it sends, without revealing any of it:
// endpoint, client, auth method, and hashes of the secrets.
func Request(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:12])
}

// Hash identifies a secret value (a refresh token, a client secret) without revealing
// it. Its format is the one in-flight marks have always carried.
func Hash(value string) string {
	sum := sha256.Sum256([]byte(value))
	return "sha256:" + hex.EncodeToString(sum[:16])
}
