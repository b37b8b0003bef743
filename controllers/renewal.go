package controllers

import (
	"encoding/binary"
	"hash/fnv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// minRenewMargin is the least time before expiry at which a token is renewed: kubelet
// takes up to about a minute (its sync period plus the cache TTL) to project a changed
// Secret into a pod, and the pod needs time to read it.
const minRenewMargin = 2 * time.Minute

// fallbackLifetime is assumed when the token endpoint gives no usable expires_in. It is
// short on purpose: renewing too early costs one request, renewing too late breaks pods.
const fallbackLifetime = 5 * time.Minute

// schedule is when a token expires and when it is renewed.
type schedule struct {
	Issued    time.Time
	ExpiresAt time.Time
	RenewAt   time.Time
}

// renewalSchedule decides when a token issued at issued with the given lifetime is
// renewed (DESIGN §4): at 2/3 of the lifetime minus a jitter of up to 10% of it, or
// renewBefore ahead of expiry when set; never less than minRenewMargin ahead unless the
// token lives shorter than that. seed spreads the jitter of different objects apart
// (thousands of grants must not renew in the same second) while keeping the decision a
// pure function. Times are truncated to whole seconds, downwards, so a requeue a hair
// early never skips a renewal and an expiry is never later than the real one.
func renewalSchedule(issued time.Time, lifetime, renewBefore time.Duration, seed string) schedule {
	if lifetime <= 0 {
		lifetime = fallbackLifetime
	}
	margin := renewBefore
	if margin <= 0 || margin >= lifetime {
		margin = lifetime/3 + jitter(lifetime/10, seed, issued)
	}
	if margin < minRenewMargin && lifetime > minRenewMargin {
		margin = minRenewMargin
	}
	expires := issued.Add(lifetime)
	return schedule{
		Issued:    issued.Truncate(time.Second),
		ExpiresAt: expires.Truncate(time.Second),
		RenewAt:   expires.Add(-margin).Truncate(time.Second),
	}
}

// jitter returns a duration in [0, maxJitter) derived from seed and the issue time, so
// it differs between objects and between renewals of one object, yet is reproducible.
func jitter(maxJitter time.Duration, seed string, issued time.Time) time.Duration {
	if maxJitter <= 0 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(seed))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(issued.Unix()))
	_, _ = h.Write(b[:])
	return time.Duration(h.Sum64() % uint64(maxJitter))
}

// due reports whether a token on schedule s must be renewed at now, and if not, how long
// until it must.
func (s schedule) due(now time.Time) (bool, time.Duration) {
	if !now.Before(s.RenewAt) {
		return true, 0
	}
	return false, s.RenewAt.Sub(now)
}

// renewBefore is a spec's renewBefore, 0 when unset.
func renewBefore(d *metav1.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.Duration
}
