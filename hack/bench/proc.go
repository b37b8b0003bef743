package main

import (
	"bufio"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
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

// controlPlaneCPU is the CPU seconds the processes pids (the API server and etcd) have
// used.
func controlPlaneCPU(pids []int) (cpu float64) {
	for _, pid := range pids {
		cpu += procCPU(pid)
	}
	return cpu
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

// controlPlanePIDs finds the API server serving host and the etcd behind it, by their
// command lines (envtest starts both with their addresses as flags); nil when either is
// not found.
func controlPlanePIDs(host string) []int {
	u, err := url.Parse(host)
	if err != nil {
		return nil
	}
	cmdlines := map[int][]string{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && len(b) > 0 {
			cmdlines[pid] = strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		}
	}
	flag := func(args []string, name string) string {
		for _, a := range args {
			if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
				return v
			}
		}
		return ""
	}
	for pid, args := range cmdlines {
		if filepath.Base(args[0]) != "kube-apiserver" || flag(args, "secure-port") != u.Port() {
			continue
		}
		for etcd, eargs := range cmdlines {
			if filepath.Base(eargs[0]) == "etcd" && flag(eargs, "listen-client-urls") == flag(args, "etcd-servers") {
				return []int{pid, etcd}
			}
		}
	}
	return nil
}

// metricsURL is where the manager serves its metrics. The bench scrapes plain HTTP on
// loopback: see managerMetricsFlags.
func metricsURL(addr string, names ...string) string {
	q := url.Values{"name[]": names}
	return "http://" + addr + "/metrics?" + q.Encode()
}

// scrape reads the manager's metrics named names (all when none) as
// "name{labels}" -> value. The handler still gathers every series, so the bench's own
// reads are kept to the edges of measurement windows (scrapeEvery is the Prometheus
// stand-in).
func scrape(addr string, names ...string) (map[string]float64, error) {
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(metricsURL(addr, names...))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scraping metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndex(line, " ")
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// requests sums client-go's rest_client_requests_total: writes (POST, PUT, PATCH,
// DELETE) and reads (GET, which includes lists and watches), and writes by series for
// the breakdown.
type requests struct {
	writes, reads int
	by            map[string]int
}

func scrapeRequests(addr string) (requests, error) {
	m, err := scrape(addr, "rest_client_requests_total")
	if err != nil {
		return requests{}, err
	}
	r := requests{by: map[string]int{}}
	for series, v := range m {
		switch {
		case strings.Contains(series, `method="GET"`):
			r.reads += int(v)
		case strings.Contains(series, `method="POST"`), strings.Contains(series, `method="PUT"`),
			strings.Contains(series, `method="PATCH"`), strings.Contains(series, `method="DELETE"`):
			r.writes += int(v)
			r.by[series[strings.Index(series, "{"):]] += int(v)
		}
	}
	return r, nil
}

// reconciles is how many reconciles of controller the manager has finished.
func reconciles(addr, controller string) (int, error) {
	m, err := scrape(addr, "controller_runtime_reconcile_total")
	if err != nil {
		return 0, err
	}
	n := 0
	for series, v := range m {
		if strings.Contains(series, `controller="`+controller+`"`) {
			n += int(v)
		}
	}
	return n, nil
}

// raiseFileLimit lifts the open-files limit to its hard maximum for the bench and the
// processes it starts (API server, etcd, manager, loop): tens of thousands of grants
// mean as many watches, connections and sockets at the sandbox.
func raiseFileLimit() {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return
	}
	l.Cur = l.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
}

func nproc() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func baselineWrites(path string) int {
	b, _ := os.ReadFile(path)
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}
