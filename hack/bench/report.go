package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/credops/cd-credentials-operator/hack/bench/plot"
)

// memstatNames are the Go runtime's memory gauges the bench reads from the manager.
var memstatNames = []string{"go_memstats_heap_alloc_bytes", "go_memstats_heap_inuse_bytes", "go_memstats_heap_idle_bytes",
	"go_memstats_heap_released_bytes", "go_memstats_next_gc_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_sys_bytes"}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// each formats every window with f, comma-separated.
func (ws windows) each(f func(cpuWindow) string) string {
	parts := make([]string, len(ws))
	for i, w := range ws {
		parts[i] = f(w)
	}
	return strings.Join(parts, ", ")
}

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// printTable prints one N's figures, manager and loop side by side.
func printTable(cfg config, r result) {
	host, _ := os.Hostname()
	fmt.Printf("\nBenchmark: %d CDUserGrants, token lifetime %s, window %s, %d unrelated Secrets (%s, %d cores)\n\n",
		r.n, cfg.ttl, cfg.window, cfg.unrelated, host, nproc())
	fmt.Println("| measure | manager | baseline loop | ratio |")
	fmt.Println("|---|---|---|---|")
	fmt.Printf("| all %d grants Ready after a cold start (every token needing its first rotation) | %s | | |\n", r.n, r.coldStart.Round(100_000_000))
	fmt.Printf("| cold start: API writes per grant (mark and binding, refresh token, access token, status, event) | %.2f | | |\n", float64(r.coldWrites)/float64(r.n))
	fmt.Printf("| cold start: mean CPU of the manager / of the API server and etcd (cores, of %d) | %.2f / %.2f | | |\n", nproc(), r.coldCores, r.coldControlPlaneCores)
	if r.fellBehind != "" {
		fmt.Printf("| **fell behind** after the steady window: %s (no warm restart measured) | | | |\n", r.fellBehind)
	}
	fmt.Printf("| all %d grants reconciled after a warm restart (fresh tokens) | %s | | |\n", r.n, r.warmRestart.Round(100_000_000))
	fmt.Printf("| warm restart: API writes (target 0) | %d | | |\n", r.warmWrites)
	fmt.Printf("| warm restart: refresh requests (target 0) | %d | | |\n", r.warmRequests)
	fmt.Printf("| rotations measured, window by window | %s | %s | |\n", r.managerCPU.each(func(w cpuWindow) string { return fmt.Sprint(w.rotations) }),
		r.loopCPU.each(func(w cpuWindow) string { return fmt.Sprint(w.rotations) }))
	fmt.Printf("| refresh requests per rotation (target 1.00) | %.2f | | |\n", r.requestsPerRot)
	fmt.Printf("| rotations per grant per token lifetime | %.2f | | |\n", r.rotPerLifetime)
	fmt.Printf("| tokens expired before renewal, steady state (target 0) | %d | | |\n", r.late)
	fmt.Printf("| tokens expired before renewal during the cold start | %d | | |\n", r.lateCold)
	fmt.Printf("| tokens expired before renewal after the steady window, until the fresh round (target 0) | %d | | |\n", r.lateAfter)
	fmt.Printf("| API-server writes per rotation (target 4.00) | %.2f | %.2f | %s |\n", r.writesPerRot, r.loopCPU.writesPerRotation(), ratio(r.writesPerRot, r.loopCPU.writesPerRotation()))
	fmt.Printf("| API-server reads per rotation | %.2f | | |\n", r.readsPerRot)
	m, l := r.managerCPU, r.loopCPU
	fmt.Printf("| CPU seconds per 1,000 rotations, all windows (target ≤ 1.5x) | %.2f | %.2f | %s |\n", m.per1000(), l.per1000(), ratio(m.per1000(), l.per1000()))
	fmt.Printf("| CPU seconds per 1,000 rotations, window by window (the manager's first is profiled) | %s | %s | |\n",
		m.each(func(w cpuWindow) string { return fmt.Sprintf("%.2f", windows{w}.per1000()) }), l.each(func(w cpuWindow) string { return fmt.Sprintf("%.2f", windows{w}.per1000()) }))
	if mu, lu := m.inProbeUnits(), l.inProbeUnits(); mu > 0 && lu > 0 {
		fmt.Printf("| host speed: CPU ms of the probe's fixed unit of work, window by window | %s | %s | |\n",
			m.each(func(w cpuWindow) string { return fmt.Sprintf("%.1f", ms(w.probe)) }), l.each(func(w cpuWindow) string { return fmt.Sprintf("%.1f", ms(w.probe)) }))
		fmt.Printf("| CPU per 1,000 rotations in units of the probe's work (the host's speed taken out), all windows | %.0f | %.0f | %s |\n", mu, lu, ratio(mu, lu))
		fmt.Printf("| the same, window by window | %s | %s | |\n",
			m.each(func(w cpuWindow) string { return fmt.Sprintf("%.0f", windows{w}.inProbeUnits()) }), l.each(func(w cpuWindow) string { return fmt.Sprintf("%.0f", windows{w}.inProbeUnits()) }))
	}
	perGrant := func(b int64) float64 { return float64(b-r.emptyHeap) / float64(r.n) / 1024 }
	fmt.Printf("| manager memory per grant, settled: median RSS minus an empty manager's, / N (target ≤ 15 KiB) | %.1f KiB | | |\n", r.kibPerGrant())
	fmt.Printf("| manager memory per grant, steady window after the cold start (its Events still held) | %.1f KiB | | |\n", r.kibPerGrantAfterColdStart())
	fmt.Printf("| manager live heap per grant, settled / after the cold start (in use after GC, minus empty, / N) | %.1f / %.1f KiB | | |\n", perGrant(r.settledHeap), perGrant(r.steadyHeap))
	fmt.Printf("| manager RSS: empty / settled with %d grants / steady after the cold start / peak | %s / %s / %s / %s | | |\n", r.n, mib(r.emptyRSS), mib(r.settledRSS), mib(r.steadyRSS), mib(r.peakRSS))
	if cfg.unrelated > 0 {
		fmt.Printf("| manager RSS without / with %d unrelated Secrets | %s / %s | | |\n", cfg.unrelated, mib(r.rssBeforeUnrelated), mib(r.rssAfterUnrelated))
	}
	fmt.Println()
	fmt.Print("    Go memory at the end of the steady state:")
	for _, name := range memstatNames {
		fmt.Printf(" %s %s", strings.TrimSuffix(strings.TrimPrefix(name, "go_memstats_"), "_bytes"), mib(int64(r.memstats[name])))
	}
	fmt.Println()
	keys := make([]string, 0, len(r.writesBy))
	for k := range r.writesBy {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Printf("    writes %s: %d\n", k, r.writesBy[k])
	}
	fmt.Printf("\n    timeline: %s, %s\n", r.timelineCSV, r.timelineSVG)
}

// printProfiles prints the top five functions of the steady-state CPU profile, of the
// heap in use at its end and once settled, and of the API server's CPU in the cold start.
func printProfiles(r result) {
	printTop(fmt.Sprintf("CPU, steady state, N=%d", r.n), r.cpuProfile, "cpu", cpuUnit, nil)
	printTop(fmt.Sprintf("CPU, steady state, N=%d, the operator's own functions", r.n), r.cpuProfile, "cpu", cpuUnit, operatorOwn)
	printTop(fmt.Sprintf("Heap in use after the steady state, N=%d", r.n), r.heapProfile, "inuse_space", bytesUnit, nil)
	printTop(fmt.Sprintf("Heap in use, settled, N=%d", r.n), r.settledHeapProfile, "inuse_space", bytesUnit, nil)
	if r.apiServerProfile != "" {
		printTop(fmt.Sprintf("API server CPU over the cold start, N=%d", r.n), r.apiServerProfile, "cpu", cpuUnit, nil)
	}
}

// printSeries prints the scaling series: cost per rotation and per grant against N.
func printSeries(cfg config, rows []plot.Row) {
	ns := make([]string, len(rows))
	for i, r := range rows {
		ns[i] = fmt.Sprint(r.N)
	}
	fmt.Printf("\nScaling series N=%s, token lifetime %s (%s/series.csv, %s/series.svg)\n\n", strings.Join(ns, ","), cfg.ttl, cfg.out, cfg.out)
	fmt.Println("| N | CPU s/1,000 rotations: manager | loop | ratio | writes/rotation | reads/rotation | KiB/grant: settled | after a cold start | cold start, all Ready | warm restart | tokens expired |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Printf("| %d | %.2f | %.2f | %s | %.2f | %.2f | %.1f | %.1f | %.1fs | %.1fs | %d |\n", r.N, r.ManagerCPUPer1000, r.LoopCPUPer1000,
			ratio(r.ManagerCPUPer1000, r.LoopCPUPer1000), r.WritesPerRotation, r.ReadsPerRotation, r.KiBPerGrant, r.KiBPerGrantAfterColdStart, r.ColdStartSeconds, r.WarmRestartSeconds, r.TokensExpiredEarlier)
	}
}
