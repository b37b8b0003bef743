package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, 100 on Linux.
const clockTicks = 100

// procCPU returns a process's user+system CPU seconds.
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start after ") ".
	f := strings.Fields(string(b)[strings.LastIndex(string(b), ")")+2:])
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / clockTicks
}

// procRSS returns a /proc/<pid>/status memory field (VmRSS, VmHWM) in bytes.
func procRSS(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// scrapeRequests sums the manager's API-server requests from client-go's metrics:
// writes (POST, PUT, PATCH, DELETE) and reads (GET, LIST), and counts writes by method
// and status code for the breakdown.
func scrapeRequests(addr string) (writes, reads int) {
	writes, reads, _ = scrapeRequestsBy(addr)
	return writes, reads
}

func scrapeRequestsBy(addr string) (writes, reads int, by map[string]int) {
	by = map[string]int{}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, 0, by
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "rest_client_requests_total{") {
			continue
		}
		v, _ := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
		switch {
		case strings.Contains(line, `method="GET"`):
			reads += int(v)
		case strings.Contains(line, `method="POST"`), strings.Contains(line, `method="PUT"`), strings.Contains(line, `method="PATCH"`), strings.Contains(line, `method="DELETE"`):
			writes += int(v)
			by[line[strings.Index(line, "{"):strings.LastIndex(line, " ")]] += int(v)
		}
	}
	return writes, reads, by
}

func baselineWrites(path string) int {
	b, _ := os.ReadFile(path)
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func printTable(cfg config, r result) {
	mib := func(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
	ratio := func(a, b float64) string {
		if b == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2fx", a/b)
	}
	host, _ := os.Hostname()
	fmt.Printf("\nBenchmark: %d CDUserGrants, token lifetime %s, %d unrelated Secrets (%s, %d cores)\n\n", cfg.n, cfg.ttl, cfg.unrelated, host, nproc())
	fmt.Println("| measure | manager | baseline loop | ratio |")
	fmt.Println("|---|---|---|---|")
	fmt.Printf("| time to first token, all %d grants | %s | | |\n", cfg.n, r.firstTokens.Round(100_000_000))
	fmt.Printf("| rotations measured (2 lifetimes) | %d | %d | |\n", r.rotations, r.baselineRot)
	fmt.Printf("| refresh requests per rotation (target 1.00) | %.2f | | |\n", r.requestsPerRot)
	fmt.Printf("| rotations per grant per token lifetime | %.2f | | |\n", r.rotPerLifetime)
	fmt.Printf("| tokens expired before renewal (target 0) | %d | | |\n", r.late)
	fmt.Printf("| API-server writes per rotation | %.2f | %.2f | %s |\n", r.writesPerRot, r.baselineWrites, ratio(r.writesPerRot, r.baselineWrites))
	fmt.Printf("| API-server reads per rotation | %.2f | | |\n", r.readsPerRot)
	fmt.Printf("| CPU seconds per 1,000 rotations | %.2f | %.2f | %s |\n", r.cpuPer1000, r.baselineCPU1000, ratio(r.cpuPer1000, r.baselineCPU1000))
	fmt.Printf("| manager peak RSS | %s | | |\n", mib(r.peakRSS))
	fmt.Printf("| manager RSS without / with %d unrelated Secrets | %s / %s | | |\n", cfg.unrelated, mib(r.rssBefore), mib(r.rssAfter))
}

func nproc() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}
