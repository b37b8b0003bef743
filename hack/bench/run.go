package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/hack/bench/plot"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
	"github.com/credops/cd-credentials-operator/test/support/freeport"
)

// result is everything measured for one N.
type result struct {
	n int

	emptyRSS, emptyHeap int64

	coldStart time.Duration
	// coldWrites are the manager's API writes from its start until all were Ready.
	coldWrites int
	// coldCores and coldControlPlaneCores are the mean CPU of the manager and of the API
	// server with etcd over the cold start; apiServerProfile a CPU profile of the API
	// server over the cold start (rounded up to profileSlice).
	coldCores, coldControlPlaneCores float64
	apiServerProfile                 string

	rotations      int
	requestsPerRot float64
	rotPerLifetime float64
	// late and lateCold are tokens expired before renewal in the steady state and
	// before it (a cold start longer than two thirds of a lifetime makes some);
	// lateAfter from the steady window's end until the round of fresh tokens, the
	// routine rotations no window reads (a manager that keeps up through the window can
	// still fall behind once the cold start's renewals bunch up).
	late, lateCold, lateAfter int
	writesPerRot              float64
	readsPerRot               float64
	writesBy                  map[string]int
	// steadyRSS is the median over the steady window, which ends minutes after the cold
	// start; settledRSS the median over a minute once client-go has dropped the cold
	// start's first-token Events (see eventsForgotten). The heaps are after a collection,
	// at the end of each.
	steadyRSS, settledRSS   int64
	steadyHeap, settledHeap int64
	// memstats are the Go runtime's memory figures at the same moment, to tell live heap
	// from GC headroom and memory not yet returned to the OS.
	memstats map[string]float64
	peakRSS  int64

	rssBeforeUnrelated, rssAfterUnrelated int64

	// fellBehind says why the manager did not renew every token in time after the
	// steady window (the restart was then not measured); empty when it kept up.
	fellBehind string

	warmRestart   time.Duration
	warmWrites    int
	warmRotations int
	warmRequests  int

	// managerCPU and loopCPU are the windows in which each one's CPU per rotation was
	// measured: the manager's steady window (profiled) and the minutes it then settles;
	// the loop's cfg.loopWindows windows, one after the other.
	managerCPU, loopCPU windows

	cpuProfile, heapProfile, settledHeapProfile, timelineCSV, timelineSVG string
}

// kibPerGrant is the manager's memory per grant once settled; kibPerGrantAfterColdStart
// over the steady window after the cold start. NaN when not measured.
func (r result) kibPerGrant() float64 { return r.perGrantKiB(r.settledRSS) }

func (r result) kibPerGrantAfterColdStart() float64 { return r.perGrantKiB(r.steadyRSS) }

func (r result) perGrantKiB(rss int64) float64 {
	if rss == 0 {
		return math.NaN()
	}
	return float64(rss-r.emptyRSS) / float64(r.n) / 1024
}

// countLateAfter takes the identity server's late renewals since the cold start began,
// read at the fresh round, and keeps those past the steady window.
func (r *result) countLateAfter(total int) { r.lateAfter = total - r.lateCold - r.late }

func (r result) row() plot.Row {
	return plot.Row{
		N: r.n, ManagerCPUPer1000: r.managerCPU.per1000(), LoopCPUPer1000: r.loopCPU.per1000(),
		WritesPerRotation: r.writesPerRot, ReadsPerRotation: r.readsPerRot,
		KiBPerGrant: r.kibPerGrant(), KiBPerGrantAfterColdStart: r.kibPerGrantAfterColdStart(),
		ColdStartSeconds: r.coldStart.Seconds(), WarmRestartSeconds: r.warmRestart.Seconds(), TokensExpiredEarlier: r.late + r.lateAfter,
	}
}

// bench is one N's control plane, identity server and files.
type bench struct {
	cfg        config
	n          int
	restCfg    *rest.Config
	k8s        client.Client
	kubeconfig string
	idp        *cdsandbox.Server
	lifetime   *lifetimeOverride
	issuer     string
	host       string
	tl         *timeline
}

func runN(cfg config, n int) (res result, err error) {
	res.n = n
	b := &bench{cfg: cfg, n: n}
	step("N=%d: starting a fresh control plane", n)
	env := &envtest.Environment{CRDDirectoryPaths: []string{"config/crd/bases"}, ErrorIfCRDPathMissing: true}
	if b.restCfg, err = env.Start(); err != nil {
		return res, fmt.Errorf("starting the control plane (run `make bench`): %w", err)
	}
	defer func() { _ = env.Stop() }()
	b.restCfg.QPS, b.restCfg.Burst = 500, 1000
	if b.k8s, err = client.New(b.restCfg, client.Options{Scheme: manager.Scheme()}); err != nil {
		return res, err
	}
	dir, _ := os.MkdirTemp("", "cd-bench-")
	defer os.RemoveAll(dir)
	b.kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(b.kubeconfig, env.KubeConfig, 0o600); err != nil {
		return res, err
	}
	b.idp, b.lifetime, b.issuer, b.host = startSandbox(cfg.ttl)
	cp := controlPlanePIDs(b.restCfg.Host)
	if cp == nil {
		log.Printf("N=%d: the API server's and etcd's processes were not found: the timeline leaves their CPU out", n)
	}
	b.tl = startTimeline(b.idp, cp)
	defer func() {
		samples := b.tl.stop()
		res.timelineCSV = filepath.Join(cfg.out, fmt.Sprintf("timeline-%d.csv", n))
		res.timelineSVG = filepath.Join(cfg.out, fmt.Sprintf("timeline-%d.svg", n))
		if werr := writeTimelineCSV(res.timelineCSV, samples); werr != nil && err == nil {
			err = werr
		}
		title := fmt.Sprintf("N=%d grants, %s tokens", n, cfg.ttl)
		if werr := plot.Timeline(res.timelineSVG, title, samples); werr != nil && err == nil {
			err = werr
		}
	}()
	if err := b.measureEmpty(&res); err != nil {
		return res, err
	}
	if err := b.measureManager(&res); err != nil {
		return res, err
	}
	b.tl.set("baseline", 0, nil)
	if err := b.measureBaseline(&res, dir); err != nil {
		return res, err
	}
	return res, nil
}

// measureEmpty runs the manager with no CRs: the memory every figure per grant is net of.
func (b *bench) measureEmpty(res *result) error {
	step("N=%d: an empty manager, for the memory it needs with no grant", b.n)
	m, err := b.startManager("empty")
	if err != nil {
		return err
	}
	defer m.stop()
	b.tl.set("empty", m.pid(), nil)
	time.Sleep(5 * time.Second) // a settling window, as the full manager gets
	res.emptyRSS = procRSS(m.pid(), "VmRSS")
	heap := filepath.Join(b.cfg.out, fmt.Sprintf("heap-empty-%d.pprof", b.n))
	if err := captureProfile(m.pprof, "heap", "gc=1", heap, 0); err != nil {
		return err
	}
	_, _, res.emptyHeap, _ = topCosts(heap, "inuse_space", 0, nil)
	return nil
}

// measureManager seeds N grants, then measures the manager's cold start, steady state,
// memory (with unrelated Secrets) and a warm restart.
func (b *bench) measureManager(res *result) error {
	step("N=%d: seeding %d CDUserGrants and their refresh tokens (no manager running)", b.n, b.n)
	b.tl.set("seed", 0, nil)
	if err := seed(context.Background(), b.k8s, b.idp, benchNS, b.issuer, b.n); err != nil {
		return err
	}
	w, err := watch(b.restCfg, benchNS)
	if err != nil {
		return err
	}
	defer w.stop()

	step("N=%d: cold start: the manager starts with every grant needing its first token", b.n)
	start := time.Now()
	m, err := b.startManager("cold")
	if err != nil {
		return err
	}
	defer func() { m.stop() }()
	b.tl.set("cold-start", m.pid(), w)
	res.apiServerProfile = filepath.Join(b.cfg.out, fmt.Sprintf("apiserver-cpu-cold-%d.pprof", b.n))
	ready, profiled := make(chan struct{}), make(chan error, 1)
	go func() { profiled <- profileAPIServerUntil(b.restCfg, ready, res.apiServerProfile) }()
	err = w.waitReady(b.n, 30*time.Minute)
	close(ready)
	if err != nil {
		return err
	}
	res.coldStart = time.Since(start)
	res.coldCores, res.coldControlPlaneCores = b.tl.meanCores("cold-start")
	if err := <-profiled; err != nil {
		log.Printf("N=%d: no CPU profile of the API server: %v", b.n, err)
		res.apiServerProfile = ""
	}
	cold, err := scrapeRequests(m.metrics)
	if err != nil {
		return err
	}
	res.coldWrites = cold.writes

	if err := b.measureSteady(res, m, w); err != nil {
		return err
	}
	if err := b.measureSettled(res, m, w, start); err != nil {
		return err
	}
	if b.cfg.unrelated > 0 {
		step("N=%d: memory with %d unrelated Secrets", b.n, b.cfg.unrelated)
		b.tl.set("unrelated", m.pid(), w)
		res.rssBeforeUnrelated = procRSS(m.pid(), "VmRSS")
		if err := unrelatedSecrets(context.Background(), b.k8s, b.cfg.unrelated); err != nil {
			return err
		}
		time.Sleep(b.cfg.ttl) // a window: the manager runs a lifetime with them present
		res.rssAfterUnrelated = procRSS(m.pid(), "VmRSS")
	}
	res.peakRSS = procRSS(m.pid(), "VmHWM")

	// Read before the fresh round's override: the sandbox judges lateness by the
	// lifetime it enforces, not the one it announces.
	res.countLateAfter(b.idp.Stats().LateRenewals)
	step("N=%d: one round of tokens announced to live %s, so that a restart finds every token fresh", b.n, freshLifetime)
	b.tl.set("fresh-round", m.pid(), w)
	b.lifetime.announce(freshLifetime)
	defer b.lifetime.announce(0)
	if err := w.waitFresh(b.n, freshLifetime/2, 2*b.cfg.ttl+time.Minute); err != nil {
		// A result, not a failure of the bench: this N is past what one manager keeps up
		// with here. Its steady figures stand; the series goes on.
		res.fellBehind = err.Error()
		step("N=%d: the manager fell behind (%v); no warm restart measured", b.n, err)
		return nil
	}

	step("N=%d: warm restart: a new manager finds every token fresh", b.n)
	b.tl.set("restart", 0, w)
	m.stop()
	s0 := b.idp.Stats()
	start = time.Now()
	if m, err = b.startManager("warm"); err != nil {
		return err
	}
	b.tl.set("warm-restart", m.pid(), w)
	if err := waitReconciled(m.metrics, b.n, 30*time.Minute); err != nil {
		return err
	}
	res.warmRestart = time.Since(start)
	req, err := scrapeRequests(m.metrics)
	if err != nil {
		return err
	}
	s1 := b.idp.Stats()
	res.warmWrites = req.writes
	res.warmRotations = s1.Issued["refresh_token"] - s0.Issued["refresh_token"]
	res.warmRequests = s1.TokenRequests["refresh_token"] - s0.TokenRequests["refresh_token"]
	b.tl.set("after-restart", m.pid(), w)
	return nil
}

// measureSteady measures a window of routine rotations, with a CPU profile over it and
// a heap profile at its end.
func (b *bench) measureSteady(res *result, m *managerProc, w *watcher) error {
	step("N=%d: steady state for %s", b.n, b.cfg.window)
	b.tl.set("steady", m.pid(), w)
	res.cpuProfile = filepath.Join(b.cfg.out, fmt.Sprintf("cpu-%d.pprof", b.n))
	res.heapProfile = filepath.Join(b.cfg.out, fmt.Sprintf("heap-%d.pprof", b.n))
	profiled := make(chan error, 1)
	go func() {
		profiled <- captureProfile(m.pprof, "profile", "seconds="+strconv.Itoa(int(b.cfg.window.Seconds())), res.cpuProfile, b.cfg.window)
	}()
	cpu0, s0 := procCPU(m.pid()), b.idp.Stats()
	r0, err := scrapeRequests(m.metrics)
	if err != nil {
		return err
	}
	p := startProbe()
	time.Sleep(b.cfg.window) // a measurement window, not synchronisation
	probe := p.finish()
	cpu1, s1 := procCPU(m.pid()), b.idp.Stats()
	r1, err := scrapeRequests(m.metrics)
	if err != nil {
		return err
	}
	if err := <-profiled; err != nil {
		return err
	}
	res.rotations = s1.Issued["refresh_token"] - s0.Issued["refresh_token"]
	rot := float64(max(res.rotations, 1))
	res.requestsPerRot = float64(s1.TokenRequests["refresh_token"]-s0.TokenRequests["refresh_token"]) / rot
	res.rotPerLifetime = rot / float64(b.n) / (float64(b.cfg.window) / float64(b.cfg.ttl))
	res.lateCold = s0.LateRenewals
	res.late = s1.LateRenewals - s0.LateRenewals
	res.writesPerRot = float64(r1.writes-r0.writes) / rot
	res.readsPerRot = float64(r1.reads-r0.reads) / rot
	res.writesBy = map[string]int{}
	for k, v := range r1.by {
		if d := v - r0.by[k]; d > 0 {
			res.writesBy[k] = d
		}
	}
	res.managerCPU = append(res.managerCPU, cpuWindow{cpu: cpu1 - cpu0, rotations: res.rotations, probe: probe})
	res.steadyRSS = b.tl.medianRSS("steady")
	res.memstats, _ = scrape(m.metrics, memstatNames...)
	if err := captureProfile(m.pprof, "heap", "gc=1", res.heapProfile, 0); err != nil {
		return err
	}
	_, _, res.steadyHeap, _ = topCosts(res.heapProfile, "inuse_space", 0, nil)
	return nil
}

// eventsSweep is how often client-go's events broadcaster sweeps the Events it keeps (to
// count repeats into a series) and how old an Event must be for a sweep to drop it.
const eventsSweep = 6 * time.Minute

// eventsForgotten is how long after its start a manager has dropped every first-token
// Event of a cold start that took coldStart (one per grant, about 1 KiB each with its
// note and key). The sweeps run every eventsSweep from the start; the last Event, at
// coldStart, goes at the first sweep at least eventsSweep after it: the second sweep for
// a cold start shorter than one period, the third for one shorter than two, and so on.
// Half a minute more covers the moments between the manager's start and the
// broadcaster's. Routine rotations record no Event, so a manager this old holds none.
func eventsForgotten(coldStart time.Duration) time.Duration {
	return (coldStart/eventsSweep+2)*eventsSweep + 30*time.Second
}

// measureSettled measures the manager's memory once the cold start has left nothing
// behind: the median RSS over a minute of routine rotations, and the heap after it.
func (b *bench) measureSettled(res *result, m *managerProc, w *watcher, started time.Time) error {
	settled := eventsForgotten(res.coldStart)
	step("N=%d: settling until %s after the manager's start, when client-go has dropped the cold start's Events", b.n, settled)
	b.tl.set("settling", m.pid(), w)
	// The manager keeps rotating meanwhile: its second CPU window, without a profiler.
	cpu0, s0, p := procCPU(m.pid()), b.idp.Stats(), startProbe()
	time.Sleep(time.Until(started.Add(settled))) // until a known moment, not synchronisation
	b.tl.set("settled", m.pid(), w)
	time.Sleep(time.Minute) // a measurement window
	probe := p.finish()
	cpu1, s1 := procCPU(m.pid()), b.idp.Stats()
	res.managerCPU = append(res.managerCPU, cpuWindow{cpu: cpu1 - cpu0, rotations: s1.Issued["refresh_token"] - s0.Issued["refresh_token"], probe: probe})
	res.settledRSS = b.tl.medianRSS("settled")
	res.settledHeapProfile = filepath.Join(b.cfg.out, fmt.Sprintf("heap-settled-%d.pprof", b.n))
	if err := captureProfile(m.pprof, "heap", "gc=1", res.settledHeapProfile, 0); err != nil {
		return err
	}
	_, _, res.settledHeap, _ = topCosts(res.settledHeapProfile, "inuse_space", 0, nil)
	return nil
}

// measureBaseline runs the bare loop over N grants of its own and measures it in
// cfg.loopWindows windows as long as the manager's steady one, one after the other, after
// a first round. Its CPU per rotation has moved by a quarter from run to run with nothing
// changed in it (docs/bench/README.md, footnote ¹); several windows show how much of that
// moves within one run.
func (b *bench) measureBaseline(res *result, dir string) error {
	step("N=%d: baseline: a plain client-go loop over %d grants", b.n, b.n)
	ctx := context.Background()
	if err := seedBaseline(ctx, b.k8s, b.idp, b.n); err != nil {
		return err
	}
	self, _ := os.Executable()
	report := filepath.Join(dir, "baseline")
	bl := exec.Command(self, "-baseline")
	bl.Env = append(os.Environ(), "BENCH_KUBECONFIG="+b.kubeconfig, "BENCH_TOKEN_URL="+b.issuer+"/connect/token",
		"BENCH_N="+strconv.Itoa(b.n), "BENCH_REPORT="+report, "BENCH_LOOP_WORKERS="+strconv.Itoa(b.cfg.loopWorkers))
	bl.Stderr = os.Stderr
	if err := bl.Start(); err != nil {
		return err
	}
	defer func() { _ = bl.Process.Kill(); _, _ = bl.Process.Wait() }()
	b.tl.set("baseline", bl.Process.Pid, nil)
	time.Sleep(b.cfg.ttl) // a window: the first round
	for range b.cfg.loopWindows {
		cpu0, s0, w0 := procCPU(bl.Process.Pid), b.idp.Stats(), baselineWrites(report)
		p := startProbe()
		time.Sleep(b.cfg.window) // a measurement window
		probe := p.finish()
		cpu1, s1, w1 := procCPU(bl.Process.Pid), b.idp.Stats(), baselineWrites(report)
		res.loopCPU = append(res.loopCPU, cpuWindow{cpu: cpu1 - cpu0, rotations: s1.Issued["refresh_token"] - s0.Issued["refresh_token"], writes: w1 - w0, probe: probe})
	}
	return nil
}

// cpuWindow is one window in which a process's CPU per rotation was measured.
type cpuWindow struct {
	// cpu is the CPU seconds the process used; rotations the refresh tokens the
	// identity server issued meanwhile; writes the loop's API writes (the manager's come
	// from its metrics).
	cpu       float64
	rotations int
	writes    int
	// probe is the CPU the probe's fixed unit of work took in the same window.
	probe time.Duration
}

// windows are one process's windows, read together.
type windows []cpuWindow

// per1000 is CPU seconds per 1,000 rotations over all the windows.
func (ws windows) per1000() float64 {
	var cpu float64
	for _, w := range ws {
		cpu += w.cpu
	}
	return cpu / float64(max(ws.rotations(), 1)) * 1000
}

// inProbeUnits is CPU per 1,000 rotations over all the windows, each window's CPU counted
// in units of its own probe's work: the host's speed taken out window by window. 0 when
// a window has no probe.
func (ws windows) inProbeUnits() float64 {
	var units float64
	for _, w := range ws {
		if w.probe <= 0 {
			return 0
		}
		units += inProbeUnits(w.cpu, w.probe)
	}
	return units / float64(max(ws.rotations(), 1)) * 1000
}

func (ws windows) rotations() (n int) {
	for _, w := range ws {
		n += w.rotations
	}
	return n
}

func (ws windows) writesPerRotation() float64 {
	var n int
	for _, w := range ws {
		n += w.writes
	}
	return float64(n) / float64(max(ws.rotations(), 1))
}

// managerMetricsFlags serve the manager's metrics over plain HTTP on loopback: the
// bench scrapes its own counters, and TokenReviews would add to the API-server traffic it
// measures.
func managerMetricsFlags(addr string) []string {
	return []string{"--metrics-bind-address", addr, "--metrics-secure=false"}
}

// managerProc is a running manager binary.
type managerProc struct {
	cmd            *exec.Cmd
	metrics, pprof string
	done           chan struct{}
}

func (m *managerProc) pid() int { return m.cmd.Process.Pid }

// startManager starts the manager binary and waits until it serves metrics. Its log
// goes to bench-out/manager-<N>-<name>.log.
func (b *bench) startManager(name string) (*managerProc, error) {
	m := &managerProc{metrics: freeAddr(), pprof: freeAddr(), done: make(chan struct{})}
	args := []string{"--kubeconfig", b.kubeconfig, "--allowed-token-hosts", b.host,
		"--health-probe-bind-address", "0", "--pprof-bind-address", m.pprof,
		"--token-requests-per-second", b.cfg.tokenRPS, "--key-secret", "default/" + manager.KeySecretName}
	args = append(append(args, managerMetricsFlags(m.metrics)...), b.cfg.managerArgs...)
	logf, err := os.Create(filepath.Join(b.cfg.out, fmt.Sprintf("manager-%d-%s.log", b.n, name)))
	if err != nil {
		return nil, err
	}
	m.cmd = exec.Command(b.cfg.manager, args...)
	m.cmd.Env = append(os.Environ(), b.cfg.managerEnv...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() { _ = m.cmd.Wait(); logf.Close(); close(m.done) }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := scrape(m.metrics, "go_goroutines"); err == nil {
			if b.cfg.scrapeEvery > 0 {
				go m.scrapeEvery(b.cfg.scrapeEvery)
			}
			return m, nil
		}
		select {
		case <-m.done:
			return nil, fmt.Errorf("the manager exited at start: see %s", logf.Name())
		case <-time.After(100 * time.Millisecond): // polling for the metrics endpoint
		}
		if time.Now().After(deadline) {
			m.stop()
			return nil, fmt.Errorf("the manager did not serve metrics within 2 minutes")
		}
	}
}

// scrapeEvery reads the whole metrics endpoint at each interval until the manager exits,
// as Prometheus does, so that the figures include what serving it costs.
func (m *managerProc) scrapeEvery(interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-m.done:
			return
		case <-tick.C:
			_, _ = scrape(m.metrics)
		}
	}
}

// stop sends SIGINT (the manager finishes in-flight rotations) and waits for the exit.
func (m *managerProc) stop() {
	select {
	case <-m.done:
		return
	default:
	}
	_ = m.cmd.Process.Signal(os.Interrupt)
	select {
	case <-m.done:
	case <-time.After(2 * time.Minute):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
}

// waitReconciled polls the manager's metrics until it reconciled n grants: after a
// restart every grant is Ready already, and what takes time is the manager looking at
// each. Scrapes gather every series, so they are spaced.
func waitReconciled(metricsAddr string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		got, err := reconciles(metricsAddr, "cdusergrant")
		if err == nil && got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return errTimeout("grants reconciled after the restart", got, n, timeout)
		}
		time.Sleep(500 * time.Millisecond) // polling the manager's state
	}
}

// freshLifetime is the lifetime announced for the round before the warm restart: far
// longer than a restart takes.
const freshLifetime = 10 * time.Minute

func startSandbox(ttl time.Duration) (*cdsandbox.Server, *lifetimeOverride, string, string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	issuer := "http://" + l.Addr().String()
	s := cdsandbox.New(cdsandbox.Options{Issuer: issuer, AccessTokenTTL: ttl, Clients: []cdsandbox.Client{
		{ID: clientID, Secret: clientSecret, GrantTypes: []string{"authorization_code"}},
	}})
	o := &lifetimeOverride{h: s}
	go func() { _ = (&http.Server{Handler: o, ReadHeaderTimeout: 10 * time.Second}).Serve(l) }()
	return s, o, issuer, l.Addr().String()
}

// lifetimeOverride makes the identity server announce another expires_in than the
// lifetime it enforces, for one phase: before the warm restart every grant gets a token
// announced to outlive the restart, so the new manager finds every token fresh, as after
// a real restart with 30-minute tokens. The sandbox still judges renewals by its own
// lifetime; the bench reads its late renewals before the override.
type lifetimeOverride struct {
	h       http.Handler
	seconds atomic.Int64
}

func (o *lifetimeOverride) announce(d time.Duration) { o.seconds.Store(int64(d.Seconds())) }

func (o *lifetimeOverride) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	secs := o.seconds.Load()
	if secs == 0 || r.URL.Path != "/connect/token" {
		o.h.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	o.h.ServeHTTP(rec, r)
	body := rec.Body.Bytes()
	var m map[string]any
	if rec.Code == http.StatusOK && json.Unmarshal(body, &m) == nil && m["expires_in"] != nil {
		m["expires_in"] = secs
		body, _ = json.Marshal(m)
	}
	maps.Copy(w.Header(), rec.Header())
	w.Header().Del("Content-Length")
	w.WriteHeader(rec.Code)
	_, _ = w.Write(body)
}

// seed creates a namespace, the credential and n grants with their refresh tokens.
func seed(ctx context.Context, k8s client.Client, idp *cdsandbox.Server, ns, issuer string, n int) error {
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "login-client", Labels: map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeClient}},
			StringData: map[string]string{"client_id": clientID, "client_secret": clientSecret}},
		&cdv1.CDCredential{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "login"},
			Spec: cdv1.CDCredentialSpec{Flow: cdv1.FlowAuthorizationCode, ClientSecretRef: cdv1.ClientSecretReference{Name: "login-client"}, Issuer: issuer}},
	}
	for _, o := range objs {
		if err := k8s.Create(ctx, o); err != nil {
			return err
		}
	}
	return parallel(n, func(i int) error {
		name := fmt.Sprintf("g%05d", i)
		rt := idp.SeedGrant(clientID, name, []string{"offline_access"})
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-refresh", Labels: map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeRefreshToken}},
			StringData: map[string]string{"refresh_token": rt}}
		if err := k8s.Create(ctx, s); err != nil {
			return err
		}
		return k8s.Create(ctx, &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: cdv1.CDUserGrantSpec{
			CredentialRef: cdv1.CredentialReference{Name: "login"}, RefreshTokenSecretRef: cdv1.RefreshTokenSecretReference{Name: name + "-refresh"}}})
	})
}

// seedBaseline creates n refresh-token Secrets for the baseline loop.
func seedBaseline(ctx context.Context, k8s client.Client, idp *cdsandbox.Server, n int) error {
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: baselineNS}}); err != nil {
		return err
	}
	return parallel(n, func(i int) error {
		name := fmt.Sprintf("b%05d", i)
		rt := idp.SeedGrant(clientID, name, []string{"offline_access"})
		return k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: baselineNS, Name: name + "-refresh"}, StringData: map[string]string{"refresh_token": rt}})
	})
}

func unrelatedSecrets(ctx context.Context, k8s client.Client, n int) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "unrelated"}}
	if err := k8s.Create(ctx, ns); err != nil {
		return err
	}
	payload := strings.Repeat("x", 1024)
	return parallel(n, func(i int) error {
		return k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "unrelated", Name: fmt.Sprintf("s%06d", i)}, StringData: map[string]string{"data": payload}})
	})
}

// parallel runs fn for 0..n-1 on 32 workers.
func parallel(n int, fn func(int) error) error {
	jobs, errs := make(chan int), make(chan error, 32)
	for range 32 {
		go func() {
			var first error
			for i := range jobs {
				if err := fn(i); err != nil && first == nil {
					first = err
				}
			}
			errs <- first
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	var first error
	for range 32 {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func freeAddr() string {
	addr, err := freeport.Addr()
	if err != nil {
		log.Fatal(err)
	}
	return addr
}
