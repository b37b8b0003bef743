package chaos

import (
	"sort"
	"time"
)

// handovers measures, for every leader kill and API-server outage, how long from the
// event's reference time (signal sent, server answering again) a process held the lease.
func handovers(s Snapshot) map[Kind][]time.Duration {
	out := map[Kind][]time.Duration{}
	for _, in := range s.Injections {
		if !in.Applied || in.Ref.IsZero() {
			continue
		}
		if in.Kind == APIOutage {
			if _, ok := s.leaderAt(in.Ref); ok {
				out[in.Kind] = append(out[in.Kind], 0) // a leader held the lease as soon as the server answered
				continue
			}
		}
		var first time.Time
		for _, p := range s.Procs {
			if !p.LeaderAt.Before(in.Ref) && (first.IsZero() || p.LeaderAt.Before(first)) {
				first = p.LeaderAt
			}
		}
		// A handover an outage got in the way of measures the outage, not the lease.
		if !first.IsZero() && (in.Kind == APIOutage || s.apiUpThroughout(in.Ref, first)) {
			out[in.Kind] = append(out[in.Kind], first.Sub(in.Ref))
		}
	}
	return out
}

// recoveryHorizon bounds the search for a recovery: an outage not recovered from
// within it counts as unrecovered.
const recoveryHorizon = 10 * time.Minute

// recoveries measures, for every API-server outage, how long from the server answering
// again until every grant's output Secret held an unexpired token at once. Grants whose
// session was lost, or whose Secret was deleted or edited by hand since, are left out.
func recoveries(r *Record, x *index, j judge) (out []time.Duration, unrecovered int) {
	byGrant := map[string][]Observation{}
	var times []time.Time
	for _, o := range r.Observations {
		if g := grantOf(o.Secret); o.Secret == OutputSecret(g) {
			byGrant[g] = append(byGrant[g], o)
			times = append(times, o.At)
		}
	}
	sort.Slice(times, func(a, b int) bool { return times[a].Before(times[b]) })
	for _, in := range r.Timeline.Injections {
		if in.Kind != APIOutage || !in.Applied || in.Ref.IsZero() {
			continue
		}
		candidates := []time.Time{in.Ref}
		for _, t := range times {
			if t.After(in.Ref) && !t.After(r.End) && t.Sub(in.Ref) < recoveryHorizon {
				candidates = append(candidates, t)
			}
		}
		recovered := false
		for _, t := range candidates {
			if allFreshAt(r, x, j, byGrant, in.Ref, t) {
				out = append(out, t.Sub(in.Ref))
				recovered = true
				break
			}
		}
		if !recovered {
			unrecovered++
		}
	}
	return out, unrecovered
}

func allFreshAt(r *Record, x *index, j judge, byGrant map[string][]Observation, since, t time.Time) bool {
	for _, g := range r.Grants {
		if j.lostAt(g, t) || j.editedBetween(g, since, t) {
			continue
		}
		obs := byGrant[g]
		i := sort.Search(len(obs), func(i int) bool { return obs[i].At.After(t) }) - 1
		if i < 0 || obs[i].Deleted {
			return false
		}
		if a, ok := x.access[obs[i].Access]; !ok || !a.expires.After(t) {
			return false
		}
	}
	return true
}

// lostAt reports whether grant's session was lost (revoked, not yet logged in again) at t.
func (j judge) lostAt(grant string, t time.Time) bool {
	for _, l := range j.lost[grant] {
		if l.overlaps(t, t.Add(time.Nanosecond)) {
			return true
		}
	}
	return false
}

// editedBetween reports whether the harness edited or deleted grant's Secrets by hand
// (or logged its customer in again) within [from, to].
func (j judge) editedBetween(grant string, from, to time.Time) bool {
	for _, d := range j.dist[grant] {
		if d.byHarness && !d.At.Before(from) && !d.At.After(to) {
			return true
		}
	}
	return false
}
