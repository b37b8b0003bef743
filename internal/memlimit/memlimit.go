// Package memlimit sets the Go runtime's soft memory limit from the container's memory
// limit, so the garbage collector works harder as the process nears the limit instead
// of the kernel killing it. The Deployment passes the limit in through the Downward API
// (env CONTAINER_MEMORY_LIMIT from resourceFieldRef limits.memory, in bytes).
package memlimit

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// EnvVar holds the container's memory limit in bytes.
const EnvVar = "CONTAINER_MEMORY_LIMIT"

// DefaultRatio of the container limit is the Go runtime's soft limit; the rest is
// headroom for what the cgroup charges but the runtime does not manage (kernel buffers,
// page cache), so the collector steps in before the OOM killer does.
const DefaultRatio = 0.9

// Decision is what Apply did, for the startup log line.
type Decision struct {
	// Limit is the soft memory limit set, in bytes; 0 when none was set.
	Limit int64
	// Source says where the limit came from, or why none was set.
	Source string
}

// Apply sets the soft memory limit to ratio × the limit in CONTAINER_MEMORY_LIMIT, unless
// GOMEMLIMIT is set (the runtime has then applied it already, and an operator's explicit
// choice wins). getenv and setLimit are os.Getenv and debug.SetMemoryLimit in main.
func Apply(getenv func(string) string, setLimit func(int64) int64, ratio float64) (Decision, error) {
	if v := getenv("GOMEMLIMIT"); v != "" {
		return Decision{Source: "GOMEMLIMIT is set"}, nil
	}
	raw := strings.TrimSpace(getenv(EnvVar))
	if raw == "" {
		return Decision{Source: EnvVar + " is not set"}, nil
	}
	limit, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || limit <= 0 {
		return Decision{}, fmt.Errorf("%s=%q: want a positive number of bytes", EnvVar, raw)
	}
	if ratio <= 0 || ratio > 1 {
		return Decision{}, fmt.Errorf("memory limit ratio %v: want a value in (0, 1]", ratio)
	}
	soft := int64(math.Floor(float64(limit) * ratio))
	setLimit(soft)
	return Decision{Limit: soft, Source: fmt.Sprintf("%.0f%% of %s", ratio*100, EnvVar)}, nil
}
