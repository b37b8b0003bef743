package main

import (
	"math/rand/v2"
	"testing"
)

// The probe's walk must visit every entry before it repeats: a chain of short cycles
// would stay in a core's cache and leave memory's speed out of the unit.
func TestTheProbesChainIsOneCycleThroughEveryEntry(t *testing.T) {
	const n = 1 << 12
	chain := randomCycle(n, rand.New(rand.NewPCG(3, 4)))
	seen := make([]bool, n)
	next := int32(0)
	for step := range n {
		if seen[next] {
			t.Fatalf("the walk came back to %d after %d steps, want %d", next, step, n)
		}
		seen[next] = true
		next = chain[next]
	}
	if next != 0 {
		t.Errorf("after %d steps the walk is at %d, want back at 0", n, next)
	}
}
