package main

import (
	"crypto/sha256"
	"math/rand/v2"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// A probe measures how much CPU a fixed unit of work takes on this machine while a window
// is measured. The manager's window and the loop's run about fifteen minutes apart, and on
// a shared host the CPU a rotation takes can move between them: two runs of nearly the
// same manager, hours apart, measured 2.92 and 3.82 s per 1,000 rotations, every function
// the change between them left alone 30–55 % dearer in the second, while the loop
// measured 1.64 and 1.69. The probe says whether the two windows ran on an equally fast
// machine, so a ratio that moved can be read. It does not explain everything: counted in
// its units the manager holds steady from run to run, but the loop has measured 31 to 41
// with nothing changed in it, and read over several windows it moves within one run too
// (docs/bench/README.md, footnote ¹).
//
// The unit hashes 8 MiB and follows a chain of 2^18 random links through 16 MiB, so that
// both a core's speed and its memory's are in it. It is timed in the CPU time of its own
// thread, not in wall time: waiting for a core on a busy machine does not count, a slower
// or shared core does.
type probe struct {
	stop chan struct{}
	done chan []time.Duration
}

// probeEvery is the time between two units: 5 % of one core at most.
const probeEvery = 2 * time.Second

func startProbe() *probe {
	p := &probe{stop: make(chan struct{}), done: make(chan []time.Duration, 1)}
	go p.run()
	return p
}

func (p *probe) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, 8<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	chain := randomCycle(4<<20, rand.New(rand.NewPCG(1, 2)))
	var units []time.Duration
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			p.done <- units
			return
		case <-tick.C:
			if d, ok := timeUnit(buf, chain); ok {
				units = append(units, d)
			}
		}
	}
}

// finish stops the probe and returns the median CPU time of a unit (0: none measured).
func (p *probe) finish() time.Duration {
	close(p.stop)
	return median(<-p.done)
}

// timeUnit runs one unit and returns the CPU time its thread took.
func timeUnit(buf []byte, chain []int32) (time.Duration, bool) {
	var t0, t1 unix.Timespec
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t0) != nil {
		return 0, false
	}
	sink := sha256.Sum256(buf)
	next := int32(sink[0]) % int32(len(chain))
	for range 1 << 18 {
		next = chain[next]
	}
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t1) != nil || next < 0 {
		return 0, false
	}
	return time.Duration(t1.Nano() - t0.Nano()), true
}

// randomCycle is a permutation of 0..n-1 that is one cycle, so a walk visits every entry
// before it repeats and the hardware cannot predict the next one.
func randomCycle(n int, r *rand.Rand) []int32 {
	order := r.Perm(n)
	chain := make([]int32, n)
	for i := range order {
		chain[order[i]] = int32(order[(i+1)%n])
	}
	return chain
}

// inProbeUnits is CPU seconds counted in units of the probe's work in the same window,
// which takes the host's speed out of a figure (0 without a probe figure).
func inProbeUnits(cpuSeconds float64, unit time.Duration) float64 {
	if unit <= 0 {
		return 0
	}
	return cpuSeconds / unit.Seconds()
}
