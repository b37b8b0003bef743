package main

import (
	"cmp"
	"encoding/csv"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/credops/cd-credentials-operator/hack/bench/plot"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
)

// timeline samples, once a second, the measured process's RSS and CPU, the control
// plane's CPU, the identity server's token requests and the stalest output Secret.
// Sampling reads /proc and two in-process counters only: it costs the manager nothing.
type timeline struct {
	mu      sync.Mutex
	start   time.Time
	phase   string
	pid     int
	w       *watcher
	idp     *cdsandbox.Server
	samples []plot.Sample
	done    chan struct{}
	stopped chan struct{}
	// controlPlane are the API server's and etcd's process ids (none found: no figure).
	controlPlane []int
}

func startTimeline(idp *cdsandbox.Server, controlPlane []int) *timeline {
	t := &timeline{start: time.Now(), idp: idp, controlPlane: controlPlane, done: make(chan struct{}), stopped: make(chan struct{})}
	go t.run()
	return t
}

// set says what the bench is doing now and which process it measures (0: none).
func (t *timeline) set(phase string, pid int, w *watcher) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.phase, t.pid, t.w = phase, pid, w
}

func (t *timeline) run() {
	defer close(t.stopped)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastPid, lastCPU, lastAt := 0, 0.0, time.Now()
	lastCP := controlPlaneCPU(t.controlPlane)
	lastRequests := totalRequests(t.idp.Stats())
	for {
		select {
		case <-t.done:
			return
		case now := <-tick.C:
			t.mu.Lock()
			phase, pid, w := t.phase, t.pid, t.w
			t.mu.Unlock()
			s := plot.Sample{Seconds: now.Sub(t.start).Seconds(), Phase: phase, StalestSecondsToExpiry: math.NaN(), CPUCores: math.NaN(), RSSMiB: math.NaN(), ControlPlaneCores: math.NaN()}
			if len(t.controlPlane) > 0 {
				cp := controlPlaneCPU(t.controlPlane)
				s.ControlPlaneCores, lastCP = (cp-lastCP)/now.Sub(lastAt).Seconds(), cp
			}
			if pid != 0 {
				cpu := procCPU(pid)
				if pid == lastPid {
					s.CPUCores = (cpu - lastCPU) / now.Sub(lastAt).Seconds()
				}
				s.RSSMiB = float64(procRSS(pid, "VmRSS")) / (1 << 20)
				lastCPU = cpu
			}
			lastPid, lastAt = pid, now
			req := totalRequests(t.idp.Stats())
			s.TokenRequests, lastRequests = float64(req-lastRequests), req
			if w != nil {
				s.StalestSecondsToExpiry = w.stalest(now)
				s.Ready = w.readyCount()
			}
			t.mu.Lock()
			t.samples = append(t.samples, s)
			t.mu.Unlock()
		}
	}
}

// medianRSS is the median RSS, in bytes, of the samples of a phase: RSS moves by ±10 %
// as collections come and go, so one reading says little. 0 without samples.
func (t *timeline) medianRSS(phase string) int64 {
	t.mu.Lock()
	var rss []float64
	for _, s := range t.samples {
		if s.Phase == phase && !math.IsNaN(s.RSSMiB) {
			rss = append(rss, s.RSSMiB)
		}
	}
	t.mu.Unlock()
	return int64(median(rss) * (1 << 20))
}

// median is the middle of v, which it sorts (the zero value when v is empty): the bench
// reads medians, not single readings, of figures that move sample to sample.
func median[T cmp.Ordered](v []T) T {
	if len(v) == 0 {
		var zero T
		return zero
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// meanCores is the mean CPU of the measured process and of the control plane over the
// samples of a phase (NaN without samples).
func (t *timeline) meanCores(phase string) (process, controlPlane float64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	mean := func(f func(plot.Sample) float64) float64 {
		sum, n := 0.0, 0
		for _, s := range t.samples {
			if v := f(s); s.Phase == phase && !math.IsNaN(v) {
				sum, n = sum+v, n+1
			}
		}
		if n == 0 {
			return math.NaN()
		}
		return sum / float64(n)
	}
	return mean(func(s plot.Sample) float64 { return s.CPUCores }), mean(func(s plot.Sample) float64 { return s.ControlPlaneCores })
}

// stop ends sampling and returns the samples.
func (t *timeline) stop() []plot.Sample {
	close(t.done)
	<-t.stopped
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.samples
}

func totalRequests(s cdsandbox.Stats) int {
	n := 0
	for _, v := range s.TokenRequests {
		n += v
	}
	return n
}

// writeTimelineCSV writes the samples, one line a second.
func writeTimelineCSV(path string, samples []plot.Sample) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	_ = w.Write([]string{"seconds", "phase", "rss_mib", "cpu_cores", "control_plane_cores", "token_requests", "stalest_seconds_to_expiry", "ready"})
	num := func(v float64) string {
		if math.IsNaN(v) {
			return ""
		}
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	for _, s := range samples {
		_ = w.Write([]string{num(s.Seconds), s.Phase, num(s.RSSMiB), num(s.CPUCores), num(s.ControlPlaneCores), num(s.TokenRequests), num(s.StalestSecondsToExpiry), strconv.Itoa(s.Ready)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeSeriesCSV writes the scaling series, one line per N.
// seriesHeader names the columns of series.csv, which writeSeriesCSV writes and
// readSeriesCSVs reads back in this order.
var seriesHeader = []string{"n", "manager_cpu_s_per_1000_rotations", "loop_cpu_s_per_1000_rotations", "cpu_ratio", "writes_per_rotation",
	"reads_per_rotation", "kib_per_grant", "kib_per_grant_after_cold_start", "cold_start_s", "warm_restart_s", "tokens_expired_before_renewal"}

func writeSeriesCSV(path string, rows []plot.Row) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	_ = w.Write(seriesHeader)
	for _, r := range rows {
		ratio := math.NaN()
		if r.LoopCPUPer1000 > 0 {
			ratio = r.ManagerCPUPer1000 / r.LoopCPUPer1000
		}
		_ = w.Write([]string{strconv.Itoa(r.N), f2(r.ManagerCPUPer1000), f2(r.LoopCPUPer1000), f2(ratio), f2(r.WritesPerRotation),
			f2(r.ReadsPerRotation), f2(r.KiBPerGrant), f2(r.KiBPerGrantAfterColdStart), f2(r.ColdStartSeconds), f2(r.WarmRestartSeconds), strconv.Itoa(r.TokensExpiredEarlier)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func f2(v float64) string { return fmt.Sprintf("%.2f", v) }

// readSeriesCSVs reads back series CSVs writeSeriesCSV wrote, one row per N, sorted by
// N; where two files give the same N, the later file's row wins. It lets one series be
// drawn from points measured in separate runs (each N of a full series takes over half
// an hour, whatever N is).
func readSeriesCSVs(paths []string) ([]plot.Row, error) {
	byN := map[int]plot.Row{}
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		records, err := csv.NewReader(f).ReadAll()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(records) == 0 || !slices.Equal(records[0], seriesHeader) {
			return nil, fmt.Errorf("%s: not a series CSV of this bench (want the header %s)", path, strings.Join(seriesHeader, ","))
		}
		for i, rec := range records[1:] {
			r, err := parseSeriesRecord(rec)
			if err != nil {
				return nil, fmt.Errorf("%s, row %d: %w", path, i+2, err)
			}
			byN[r.N] = r
		}
	}
	rows := make([]plot.Row, 0, len(byN))
	for _, r := range byN {
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b plot.Row) int { return cmp.Compare(a.N, b.N) })
	return rows, nil
}

// parseSeriesRecord reads one row of writeSeriesCSV back; its cpu_ratio column is
// derived, so it is not read.
func parseSeriesRecord(rec []string) (plot.Row, error) {
	var r plot.Row
	var err error
	if r.N, err = strconv.Atoi(rec[0]); err != nil {
		return r, err
	}
	if r.TokensExpiredEarlier, err = strconv.Atoi(rec[10]); err != nil {
		return r, err
	}
	for i, dst := range map[int]*float64{
		1: &r.ManagerCPUPer1000, 2: &r.LoopCPUPer1000, 4: &r.WritesPerRotation, 5: &r.ReadsPerRotation,
		6: &r.KiBPerGrant, 7: &r.KiBPerGrantAfterColdStart, 8: &r.ColdStartSeconds, 9: &r.WarmRestartSeconds,
	} {
		if *dst, err = strconv.ParseFloat(rec[i], 64); err != nil {
			return r, err
		}
	}
	return r, nil
}
