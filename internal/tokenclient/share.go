package tokenclient

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Share gives every namespace a token-request rate of its own, below the manager-wide
// one (Options.RequestsPerSecond), and answers at once instead of blocking. The
// manager-wide limit is a queue every CR of every namespace waits in, on a reconcile
// worker: without a share, a tenant who creates CDCredentials with junk secrets (each
// asks for a token at once) as fast as the API server lets them fills that queue and
// the workers, and every other namespace's renewals wait behind them until tokens
// expire. With one, such a tenant spends its own share; the rest of the manager-wide
// rate, and the workers, stay free for everybody else.
//
// A CR over its namespace's share gets a turn (a reservation in the share) and comes
// back for it; it is not asked again before then, so a thousand waiting CRs wake one at
// a time, at the share's pace, instead of all at once for every free token. Keys
// (namespaces) whose share is full again cost nothing: they are forgotten. A nil Share
// admits everything. Safe for concurrent use.
type Share struct {
	limit rate.Limit
	burst int

	mu     sync.Mutex
	shares map[string]*rate.Limiter
	// turns are the reserved turns of requesters over their share, by requester.
	turns map[string]turn
	// forgetAt is the size of shares or turns at which Turn looks for some to forget.
	forgetAt int
}

// turn is a reserved place in a share.
type turn struct {
	key string
	at  time.Time
}

// turnsKept is how long past its time a turn nobody came for is kept (its CR was
// deleted, or decided not to send after all): then it is forgotten.
const turnsKept = time.Minute

// minForgetAt is the least size of the share or turn map that triggers a look for some
// to forget; a look is amortised over as many new entries as the maps held after the
// last one.
const minForgetAt = 64

// NewShare returns a Share of perSecond requests per key, with a burst of as many
// (at least one); nil when perSecond is not positive (no per-key limit).
func NewShare(perSecond float64) *Share {
	if perSecond <= 0 {
		return nil
	}
	return &Share{
		limit:    rate.Limit(perSecond),
		burst:    max(1, int(perSecond)),
		shares:   map[string]*rate.Limiter{},
		turns:    map[string]turn{},
		forgetAt: minForgetAt,
	}
}

// PerSecond is the share's rate; 0 for a nil Share.
func (s *Share) PerSecond() float64 {
	if s == nil {
		return 0
	}
	return float64(s.limit)
}

// Turn says whether requester (a CR, by UID) of key (its namespace) may send a token
// request at now: 0, and its turn is used, or how long until its turn. The first ask
// over the share reserves a turn; asks before it come back with the time left, and
// reserve nothing more.
func (s *Share) Turn(key, requester string, now time.Time) time.Duration {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.turns[requester]; ok && t.key == key {
		if now.Before(t.at) {
			return t.at.Sub(now)
		}
		delete(s.turns, requester)
		return 0
	}
	s.forget(now)
	l := s.shares[key]
	if l == nil {
		l = rate.NewLimiter(s.limit, s.burst)
		s.shares[key] = l
	}
	wait := l.ReserveN(now, 1).DelayFrom(now)
	if wait <= 0 {
		return 0
	}
	s.turns[requester] = turn{key: key, at: now.Add(wait)}
	return wait
}

// forget drops the shares that are full again (nobody of their key asked for a while)
// and the turns nobody came for, once either map has grown to forgetAt.
func (s *Share) forget(now time.Time) {
	if len(s.shares) < s.forgetAt && len(s.turns) < s.forgetAt {
		return
	}
	for r, t := range s.turns {
		if now.Sub(t.at) > turnsKept {
			delete(s.turns, r)
		}
	}
	for key, l := range s.shares {
		if l.TokensAt(now) >= float64(s.burst) {
			delete(s.shares, key)
		}
	}
	s.forgetAt = max(minForgetAt, 2*max(len(s.shares), len(s.turns)))
}
