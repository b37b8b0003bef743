package chaos

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// TestChaos runs the chaos suite. Without CHAOS_* variables it is the short run
// `make test` includes (every kind of event at least once, about two minutes);
// `make chaos` sets CHAOS_EVENTS, CHAOS_GRANTS, CHAOS_OUTAGE and friends for a long one.
func TestChaos(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run `make test` or `make chaos`, which build kube-apiserver and etcd into ./bin")
	}
	cfg := Config{
		Events:       envInt(t, "CHAOS_EVENTS", 50),
		Grants:       envInt(t, "CHAOS_GRANTS", 20),
		Seed:         int64(envInt(t, "CHAOS_SEED", int(time.Now().UnixNano()%1_000_000))),
		TokenTTL:     envDuration(t, "CHAOS_TOKEN_TTL", 30*time.Second),
		Outage:       envDuration(t, "CHAOS_OUTAGE", 10*time.Second),
		Lease:        envDuration(t, "CHAOS_LEASE", 5*time.Second),
		TokenTimeout: envDuration(t, "CHAOS_TOKEN_TIMEOUT", 3*time.Second),
		Grace:        envDuration(t, "CHAOS_GRACE", 20*time.Second),
		Settle:       envDuration(t, "CHAOS_SETTLE", time.Minute),
		MaxOutages:   envInt(t, "CHAOS_MAX_OUTAGES", 1),
		FaultWait:    envDuration(t, "CHAOS_FAULT_WAIT", time.Second),
		MinGap:       envDuration(t, "CHAOS_MIN_GAP", 100*time.Millisecond),
		MaxGap:       envDuration(t, "CHAOS_MAX_GAP", 500*time.Millisecond),
		RepoRoot:     filepath.Join("..", ".."),
		Logf:         t.Logf,
	}
	if abs, err := filepath.Abs(cfg.RepoRoot); err == nil {
		cfg.RepoRoot = abs
	}
	cfg.WorkDir = workDir(t)
	t.Logf("chaos seed %d (CHAOS_SEED=%d replays the same events); binaries, logs and kubeconfig in %s", cfg.Seed, cfg.Seed, cfg.WorkDir)
	// The harness's own clients retry through API-server outages; their complaints are noise.
	klog.SetOutput(devNull(t))
	klog.LogToStderr(false)
	ctrllog.SetLogger(klog.NewKlogr())

	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("chaos run (seed %d): %v", cfg.Seed, err)
	}
	rep.Print(os.Stdout)
	if err := rep.WriteFiles(cfg.WorkDir); err != nil {
		t.Error(err)
	}
	if n := len(rep.Result.Violations); n > 0 || rep.Unsettled != "" {
		if cfg.Events <= 100 {
			rep.Events(os.Stdout)
			rep.Histories(os.Stdout)
		}
		t.Errorf("seed %d: %d invariant violations (listed above); events.txt, histories.txt, records.json and the logs are in %s", cfg.Seed, n, cfg.WorkDir)
		return
	}
	if os.Getenv("CHAOS_WORKDIR") == "" {
		_ = os.RemoveAll(cfg.WorkDir)
	}
}

// workDir is CHAOS_WORKDIR, or a fresh directory kept when the run fails (t.TempDir
// would take the logs with it).
func workDir(t *testing.T) string {
	if d := os.Getenv("CHAOS_WORKDIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	d, err := os.MkdirTemp("", "cd-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func devNull(t *testing.T) *os.File {
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a whole number", name, v)
	}
	return n
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a duration such as 60s", name, v)
	}
	return d
}
