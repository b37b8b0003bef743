// Package chaos runs the operator's real binaries (two manager replicas with leader
// election, the sandbox identity server in strict single-use mode, envtest's etcd and
// kube-apiserver) behind a fault proxy, injects faults at random from a printed seed, and
// judges the outcome from the identity server's own records (the sandbox journal), the
// proxy's ledger and what the harness saw in the API, never from the operator's word.
//
// It depends on the operator only through its API types, the manager's command-line
// flags and the sandbox, so it keeps working while the controllers are rewritten.
package chaos

import (
	"context"
	"sort"
	"sync"
	"time"
)

// ExitCause is why a manager process ended.
type ExitCause string

// Exit causes. Only the harness sends signals, so anything else is the process's own doing.
const (
	ExitSIGKILL ExitCause = "SIGKILL"
	ExitSIGTERM ExitCause = "SIGTERM"
	ExitSelf    ExitCause = "exited on its own"
	ExitRunning ExitCause = ""
)

// ProcRecord is one manager process's life.
type ProcRecord struct {
	Replica  string
	PID      int
	Started  time.Time
	LeaderAt time.Time // zero unless it logged acquiring the lease
	Signaled time.Time // when the harness sent the signal of Cause
	Exited   time.Time // zero while running
	Cause    ExitCause
	ExitCode int
}

// alive reports whether the process ran at t.
func (p ProcRecord) alive(t time.Time) bool {
	return !t.Before(p.Started) && (p.Exited.IsZero() || t.Before(p.Exited))
}

// leaderAt reports whether the process was the leader at t: it had acquired the lease
// and not yet exited (controller-runtime exits when it loses the lease).
func (p ProcRecord) leaderAt(t time.Time) bool {
	return !p.LeaderAt.IsZero() && !t.Before(p.LeaderAt) && p.alive(t)
}

// Interval is a half-open time span [From, To); a zero To is still open.
type Interval struct{ From, To time.Time }

func (i Interval) overlaps(from, to time.Time) bool {
	return i.From.Before(to) && (i.To.IsZero() || from.Before(i.To))
}

// Disturbance is a fault that touched one grant's token requests or Secrets: the
// grant cannot be expected to be fresh for a while after it.
type Disturbance struct {
	Grant string
	At    time.Time
	What  string
}

// Injection is one chaos event as the harness carried it out.
type Injection struct {
	Seq    int
	Kind   Kind
	At     time.Time
	Done   time.Time
	Detail string
	// Applied is false when the event could not take effect (no request came to
	// fault, no leader to kill); it is still counted, and the report says so.
	Applied bool
	// Ref is when a leader kill's signal was sent, or when the API server answered
	// again after an outage: handover and recovery are measured from it.
	Ref time.Time
}

// Timeline is everything the harness did and saw happen to processes and the API
// server, in wall-clock time. It is safe for concurrent use.
type Timeline struct {
	mu           sync.Mutex
	procs        []*ProcRecord
	apiDown      []Interval
	paused       []Interval
	injections   []Injection
	disturbances []Disturbance
	notes        []string
}

// Snapshot is a copy of a Timeline for the checker.
type Snapshot struct {
	Procs   []ProcRecord
	APIDown []Interval
	// Paused are the times the machine stood still (watchPauses): no process ran, so
	// nothing may be asked of the manager then.
	Paused       []Interval
	Injections   []Injection
	Disturbances []Disturbance
	Notes        []string
}

func (tl *Timeline) started(replica string, pid int, at time.Time) *ProcRecord {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	p := &ProcRecord{Replica: replica, PID: pid, Started: at}
	tl.procs = append(tl.procs, p)
	return p
}

func (tl *Timeline) update(fn func()) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	fn()
}

func (tl *Timeline) apiStopped(at time.Time) {
	tl.update(func() { tl.apiDown = append(tl.apiDown, Interval{From: at}) })
}

func (tl *Timeline) apiStarted(at time.Time) {
	tl.update(func() {
		if n := len(tl.apiDown); n > 0 && tl.apiDown[n-1].To.IsZero() {
			tl.apiDown[n-1].To = at
		}
	})
}

func (tl *Timeline) injected(in Injection) {
	tl.update(func() { tl.injections = append(tl.injections, in) })
}

// amend changes the recorded injection number seq.
func (tl *Timeline) amend(seq int, fn func(*Injection)) {
	tl.update(func() {
		for i := range tl.injections {
			if tl.injections[i].Seq == seq {
				fn(&tl.injections[i])
			}
		}
	})
}

func (tl *Timeline) disturbed(grant, what string, at time.Time) {
	tl.update(func() { tl.disturbances = append(tl.disturbances, Disturbance{Grant: grant, At: at, What: what}) })
}

func (tl *Timeline) note(s string) {
	tl.update(func() { tl.notes = append(tl.notes, s) })
}

// leader returns the process that holds the lease now, if any.
func (tl *Timeline) leader(now time.Time) (ProcRecord, bool) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for _, p := range tl.procs {
		if p.leaderAt(now) {
			return *p, true
		}
	}
	return ProcRecord{}, false
}

// apiBackWithin reports whether the API server is down at now, or came back less than d
// before it.
func (tl *Timeline) apiBackWithin(now time.Time, d time.Duration) bool {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	n := len(tl.apiDown)
	return n > 0 && (tl.apiDown[n-1].To.IsZero() || now.Sub(tl.apiDown[n-1].To) < d)
}

// acquiredSince returns the first time at or after t that a process acquired the lease.
func (tl *Timeline) acquiredSince(t time.Time) (time.Time, bool) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var first time.Time
	for _, p := range tl.procs {
		if !p.LeaderAt.Before(t) && (first.IsZero() || p.LeaderAt.Before(first)) {
			first = p.LeaderAt
		}
	}
	return first, !first.IsZero()
}

// Snapshot copies the timeline.
func (tl *Timeline) Snapshot() Snapshot {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	s := Snapshot{
		APIDown:      append([]Interval(nil), tl.apiDown...),
		Paused:       append([]Interval(nil), tl.paused...),
		Injections:   append([]Injection(nil), tl.injections...),
		Disturbances: append([]Disturbance(nil), tl.disturbances...),
		Notes:        append([]string(nil), tl.notes...),
	}
	for _, p := range tl.procs {
		s.Procs = append(s.Procs, *p)
	}
	sort.Slice(s.Procs, func(i, j int) bool { return s.Procs[i].Started.Before(s.Procs[j].Started) })
	return s
}

// steadyLeader reports whether one process held the lease throughout [from, to].
func (s Snapshot) steadyLeader(from, to time.Time) bool {
	for _, p := range s.Procs {
		if p.leaderAt(from) && p.leaderAt(to) {
			return true
		}
	}
	return false
}

// apiUpThroughout reports whether the API server ran throughout [from, to].
func (s Snapshot) apiUpThroughout(from, to time.Time) bool {
	return !anyOverlaps(s.APIDown, from, to)
}

// pausedWithin reports whether the machine stood still at some time in [from, to].
func (s Snapshot) pausedWithin(from, to time.Time) bool {
	return anyOverlaps(s.Paused, from, to)
}

// anyOverlaps reports whether one of is overlaps [from, to].
func anyOverlaps(is []Interval, from, to time.Time) bool {
	for _, i := range is {
		if i.overlaps(from, to) {
			return true
		}
	}
	return false
}

// apiDownThroughout reports whether one API-server outage covered all of [from, to].
func (s Snapshot) apiDownThroughout(from, to time.Time) bool {
	for _, d := range s.APIDown {
		if !d.From.After(from) && (d.To.IsZero() || !d.To.Before(to)) {
			return true
		}
	}
	return false
}

// leaderAt returns the process that held the lease at t.
func (s Snapshot) leaderAt(t time.Time) (ProcRecord, bool) {
	for _, p := range s.Procs {
		if p.leaderAt(t) {
			return p, true
		}
	}
	return ProcRecord{}, false
}

// proc returns the record of pid.
func (s Snapshot) proc(pid int) (ProcRecord, bool) {
	for _, p := range s.Procs {
		if p.PID == pid {
			return p, true
		}
	}
	return ProcRecord{}, false
}

// A machine pause is a stretch in which no process on the machine ran: the VM was
// snapshotted or migrated, or its host stopped scheduling it. CI's machine once stood
// still for 12 s in the middle of a run (the kernel logged "crng reseeded due to virtual
// machine fork" as it resumed); the leader could not renew a token it was not running to
// renew, and the checker took the expiry for the operator's. The harness watches its own
// clock instead: a tick that comes pauseGap or more after the one before it means this
// process did not run in between, and on a machine where it did not, the managers, the
// API server and the sandbox are no better off. The checker excuses what went stale
// then, as it excuses an API-server outage, and the report lists every pause.
const (
	pauseTick = 100 * time.Millisecond
	pauseGap  = time.Second
)

// watchPauses records a pause on tl whenever two ticks lie pauseGap or more apart by
// now (the wall clock, which token expiries are judged in), until ctx ends.
func watchPauses(ctx context.Context, tl *Timeline, ticks <-chan time.Time, now func() time.Time) {
	last := now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticks:
		}
		t := now()
		if t.Sub(last) >= pauseGap {
			tl.update(func() { tl.paused = append(tl.paused, Interval{From: last, To: t}) })
		}
		last = t
	}
}
