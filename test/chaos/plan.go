package chaos

import (
	"math/rand/v2"
	"time"
)

// Kind is a kind of chaos event.
type Kind string

// The kinds of chaos event.
const (
	KillLeader    Kind = "SIGKILL leader"
	TermLeader    Kind = "SIGTERM leader"
	KillFollower  Kind = "SIGKILL follower"
	TermFollower  Kind = "SIGTERM follower"
	AnswerLost    Kind = "answer lost after consumption"
	Burst500      Kind = "identity server 500 burst"
	Burst503      Kind = "identity server 503 burst"
	Burst429      Kind = "identity server 429 burst"
	SlowRequest   Kind = "slow: request held past the timeout"
	SlowAnswer    Kind = "slow: answer held past the timeout"
	APIOutage     Kind = "kube-apiserver outage"
	EditOutput    Kind = "output Secret deleted or edited"
	EditRefreshMD Kind = "refresh-token Secret edited"
	// DeleteRefreshMid deletes a grant's refresh-token Secret while its refresh is out
	// (the sandbox has answered, the operator does not have the answer yet). One deleted
	// at rest takes the customer's session with it, which no operator can undo, so the
	// suite never does that.
	DeleteRefreshMid Kind = "refresh-token Secret deleted mid-rotation"
)

// weights say how often each kind comes up: the cheap faults often, the API-server
// outage (a minute long in `make chaos`) rarely.
var weights = []struct {
	kind   Kind
	weight int
}{
	{KillLeader, 8}, {TermLeader, 8}, {KillFollower, 6}, {TermFollower, 6},
	{AnswerLost, 5}, {Burst500, 6}, {Burst503, 6}, {Burst429, 6},
	{SlowRequest, 6}, {SlowAnswer, 4}, {APIOutage, 2},
	{EditOutput, 8}, {EditRefreshMD, 8}, {DeleteRefreshMid, 2},
}

// Kinds lists every kind, in the report's order.
func Kinds() []Kind {
	out := make([]Kind, len(weights))
	for i, w := range weights {
		out[i] = w.kind
	}
	return out
}

// Event is one planned chaos event. Everything random about it is decided here, from
// the seed, so a seed replays the same sequence of events.
type Event struct {
	Seq  int
	Kind Kind
	// Gap is the pause before the event.
	Gap time.Duration
	// Burst is how many token requests a burst fails.
	Burst int
	// RetryAfter is the 429's Retry-After, in seconds.
	RetryAfter int
	// MidRotation makes an edit happen while a token request of the edited grant is
	// at the proxy (marked in flight, not yet answered); otherwise it happens at once
	// on grant Grant.
	MidRotation bool
	Grant       int
	// Delete deletes the output Secret rather than editing its access_token.
	Delete bool
	// Variant picks what an EditRefreshMD changes: 0 an extra data key, 1 an
	// annotation, 2 a label.
	Variant int
}

// Plan draws n events from seed. When n allows it, the first events are every kind
// once in random order, so even a short run covers them all. maxOutages > 0 caps the
// API-server outages (the slowest event), for a run with a time budget.
func Plan(seed int64, n, grants int, minGap, maxGap time.Duration, maxOutages int) []Event {
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(seed)^0x9e3779b97f4a7c15))
	kinds := Kinds()
	var first []Kind
	if n >= len(kinds) {
		first = append(first, kinds...)
		rng.Shuffle(len(first), func(i, j int) { first[i], first[j] = first[j], first[i] })
	}
	total := 0
	for _, w := range weights {
		total += w.weight
	}
	events := make([]Event, n)
	outages := 0
	for i := range events {
		kind := Kind("")
		if i < len(first) {
			kind = first[i]
		} else {
			for kind == "" || (kind == APIOutage && maxOutages > 0 && outages >= maxOutages) {
				kind = draw(rng, total)
			}
		}
		if kind == APIOutage {
			outages++
		}
		gap := minGap
		if maxGap > minGap {
			gap += time.Duration(rng.Int64N(int64(maxGap - minGap)))
		}
		events[i] = Event{
			Seq: i + 1, Kind: kind, Gap: gap,
			Burst:       1 + rng.IntN(3),
			RetryAfter:  1 + rng.IntN(2),
			MidRotation: rng.IntN(3) != 0,
			Grant:       rng.IntN(max(grants, 1)),
			Delete:      rng.IntN(2) == 0,
			Variant:     rng.IntN(3),
		}
	}
	return events
}

func draw(rng *rand.Rand, total int) Kind {
	pick := rng.IntN(total)
	for _, w := range weights {
		if pick < w.weight {
			return w.kind
		}
		pick -= w.weight
	}
	return weights[len(weights)-1].kind
}
