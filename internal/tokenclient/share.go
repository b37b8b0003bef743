package tokenclient

import (
	"hash/fnv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Share splits the manager's token requests among the namespaces asking for them, and
// answers at once instead of blocking. The manager-wide limit (Options.RequestsPerSecond)
// is a queue every CR waits in on a reconcile worker: alone, it lets a tenant who
// creates CDCredentials with junk secrets (each asks for a token at once) as fast as the
// API server allows fill that queue and the workers, and every other namespace's
// renewals wait behind it until tokens expire.
//
// Each namespace asking gets an equal part of the manager-wide rate (all of it while it
// is the only one), at most the cap when one is set. A request over its namespace's part
// reserves a turn and comes back for it, holding no worker: a thousand waiting CRs wake
// one at a time, at their namespace's pace, not all at once for every free token. Turns
// are reserved at most Horizon ahead, so a namespace that floods holds few of them: when
// another namespace starts asking, the flooding one's part shrinks within the horizon,
// and the requests it reserved before that keep the manager-wide queue at most a horizon
// behind. A request past the horizon reserves nothing and comes back later (within
// another horizon, spread by its requester so they do not all come back together).
//
// Namespaces that stopped asking cost nothing once their part is full again, and turns
// nobody came for are forgotten. A nil Share admits everything. Safe for concurrent use.
type Share struct {
	total rate.Limit // the manager-wide rate, split among the namespaces asking; 0: none
	cap   rate.Limit // each namespace's most; 0: none

	mu     sync.Mutex
	shares map[string]*share
	// turns are the reserved turns of requesters over their namespace's part.
	turns map[string]turn
	// last is the latest time a Turn was asked at: passes read their time before their
	// API reads, so they ask out of order, and a limiter asked at an earlier time than
	// its last would count the time between twice.
	last time.Time
	// forgetAt is the size of shares or turns at which Turn looks for some to forget.
	forgetAt int
}

// share is one namespace's part.
type share struct {
	limiter *rate.Limiter
	asked   time.Time // when a requester of the namespace last asked
}

// turn is a reserved place in a namespace's part.
type turn struct {
	key         string
	at          time.Time
	reservation *rate.Reservation
}

const (
	// Horizon is how far ahead a turn may be reserved.
	Horizon = 10 * time.Second
	// activeFor is how long after its last ask a namespace counts as asking, and takes
	// its part of the manager-wide rate.
	activeFor = 30 * time.Second
	// turnsKept is how long past its time a turn nobody came for is kept (its CR was
	// deleted, or decided not to send after all).
	turnsKept = time.Minute
	// minForgetAt is the least size of the share or turn map that triggers a look for
	// some to forget; a look is amortised over as many new entries as the maps held
	// after the last one.
	minForgetAt = 64
)

// NewShare returns a Share of total requests per second split among the namespaces
// asking, each at most perNamespace (0: no cap). It is nil, admitting everything, when
// neither is positive.
func NewShare(total, perNamespace float64) *Share {
	if total <= 0 && perNamespace <= 0 {
		return nil
	}
	return &Share{
		total:    rate.Limit(max(total, 0)),
		cap:      rate.Limit(max(perNamespace, 0)),
		shares:   map[string]*share{},
		turns:    map[string]turn{},
		forgetAt: minForgetAt,
	}
}

// Turn says whether requester (one CR, by kind and name) of key (its namespace) may send
// a token request at now: 0, and its turn is used, or how long until it asks again. The
// first ask over its namespace's part reserves a turn; asks before it come back with the
// time left and reserve nothing more.
func (s *Share) Turn(key, requester string, now time.Time) time.Duration {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Before(s.last) {
		now = s.last
	}
	s.last = now
	if t, ok := s.turns[requester]; ok {
		delete(s.turns, requester)
		switch {
		case t.key != key || now.Sub(t.at) > turnsKept:
			t.reservation.CancelAt(now) // kept too long, or another requester's under this name
		case now.Before(t.at):
			s.turns[requester] = t
			return t.at.Sub(now)
		default:
			return 0
		}
	}
	s.forget(now)
	sh := s.shares[key]
	if sh == nil {
		sh = &share{}
		s.shares[key] = sh
	}
	sh.asked = now
	limit := s.part(now)
	burst := max(1, int(limit))
	switch {
	case sh.limiter == nil:
		sh.limiter = rate.NewLimiter(limit, burst) // its first burst free
	case sh.limiter.Limit() != limit:
		// Another namespace began or stopped asking: this one's part changes from now on.
		sh.limiter.SetLimitAt(now, limit)
		sh.limiter.SetBurstAt(now, burst)
	}
	r := sh.limiter.ReserveN(now, 1)
	wait := r.DelayFrom(now)
	switch {
	case wait <= 0:
		return 0
	case wait > Horizon:
		r.CancelAt(now)
		return Horizon + spread(requester, Horizon)
	}
	s.turns[requester] = turn{key: key, at: now.Add(wait), reservation: r}
	return wait
}

// Forget gives back requester's turn, when it has one: its CR is gone, and the place is
// another's.
func (s *Share) Forget(requester string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.turns[requester]; ok {
		t.reservation.CancelAt(s.last)
		delete(s.turns, requester)
	}
}

// part is each asking namespace's rate: an equal part of the total, at most the cap.
func (s *Share) part(now time.Time) rate.Limit {
	if s.total == 0 {
		return s.cap
	}
	asking := 0
	for _, sh := range s.shares {
		if now.Sub(sh.asked) < activeFor {
			asking++
		}
	}
	limit := s.total / rate.Limit(max(asking, 1))
	if s.cap > 0 && s.cap < limit {
		limit = s.cap
	}
	return limit
}

// forget drops the turns nobody came for and the parts that are full again (nobody of
// their namespace asked for a while), once either map has grown to forgetAt.
func (s *Share) forget(now time.Time) {
	if len(s.shares) < s.forgetAt && len(s.turns) < s.forgetAt {
		return
	}
	for r, t := range s.turns {
		if now.Sub(t.at) > turnsKept {
			t.reservation.CancelAt(now)
			delete(s.turns, r)
		}
	}
	for key, sh := range s.shares {
		if now.Sub(sh.asked) >= activeFor && sh.limiter.TokensAt(now) >= float64(sh.limiter.Burst()) {
			delete(s.shares, key)
		}
	}
	s.forgetAt = max(minForgetAt, 2*max(len(s.shares), len(s.turns)))
}

// spread is a wait in [0, d) of requester's own, so that requests sent back past the
// horizon come back spread out.
func spread(requester string, d time.Duration) time.Duration {
	h := fnv.New64a()
	_, _ = h.Write([]byte(requester))
	return time.Duration(h.Sum64() % uint64(d))
}
