// Command bench measures the operator at scale: for each N of a series, N CDUserGrants
// on a fresh local control plane and the sandbox identity server with short token
// lifetimes, the real manager binary as a process (its CPU and memory read from /proc,
// its API requests from its metrics, CPU and heap profiles from pprof), and, in the same
// run, a minimal client-go loop that refreshes N grants with no controller machinery.
// It prints a table per N and the series, and writes CSV, SVG plots and profiles to
// bench-out/. `make bench` runs it; BENCH_SERIES (or BENCH_N), BENCH_TTL, BENCH_WINDOW,
// BENCH_UNRELATED, BENCH_SCRAPE_EVERY and BENCH_LOOP_WINDOWS tune it. With -writes
// (`make bench-writes`) it measures instead what each of the operator's writes costs in
// CPU, the API server's and etcd's and its own client's, beside the loop's (writes.go).
// With -replot it runs nothing and draws one series from the series.csv files of runs
// made one N at a time.
//
// It is a benchmark, not a test: its measurement windows are timed sleeps.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/credops/cd-credentials-operator/hack/bench/plot"
)

const (
	clientID, clientSecret = "bench-login", "bench-secret"
	benchNS                = "bench"
)

type config struct {
	series    []int
	ttl       time.Duration
	window    time.Duration
	unrelated int
	manager   string
	out       string
	// tokenRPS is the manager's --token-requests-per-second: the identity server's
	// tolerance, a deployment choice rather than a cost of the operator.
	tokenRPS string
	// managerArgs are extra manager flags, to measure a lever against the defaults;
	// managerEnv extra environment (GOGC=50, GOMEMLIMIT=200MiB).
	managerArgs []string
	managerEnv  []string
	loopWorkers int
	// loopWindows is how many windows the loop's CPU is measured in.
	loopWindows int
	// scrapeEvery is how often the whole metrics endpoint is scraped while a manager
	// runs, as Prometheus would (0: never, only the bench's own filtered reads). A
	// scrape reads every CR's series, so it costs the manager CPU and memory per grant.
	scrapeEvery time.Duration
}

func main() {
	var cfg config
	var series, managerArgs string
	flag.StringVar(&series, "series", os.Getenv("BENCH_SERIES"), "comma-separated Ns to run one after another (default: -n)")
	n := flag.Int("n", envInt("BENCH_N", 1000), "CDUserGrants, when no series is given")
	flag.DurationVar(&cfg.ttl, "ttl", time.Duration(envInt("BENCH_TTL", 30))*time.Second, "access token lifetime")
	window := flag.Duration("window", time.Duration(envInt("BENCH_WINDOW", 0))*time.Second, "steady-state measurement window (default: two token lifetimes)")
	flag.IntVar(&cfg.unrelated, "unrelated", envIntZero("BENCH_UNRELATED", 50000), "unrelated Secrets to create for the memory test (0 skips it)")
	flag.StringVar(&cfg.manager, "manager", "bin/manager", "manager binary")
	flag.StringVar(&cfg.out, "out", "bench-out", "folder for CSV, plots and profiles")
	flag.StringVar(&cfg.tokenRPS, "token-requests-per-second", envString("BENCH_TOKEN_RPS", "500"), "the manager's --token-requests-per-second")
	flag.StringVar(&managerArgs, "manager-args", os.Getenv("BENCH_MANAGER_ARGS"), "extra manager flags, space-separated")
	managerEnv := flag.String("manager-env", os.Getenv("BENCH_MANAGER_ENV"), "extra manager environment, space-separated KEY=VALUE")
	flag.IntVar(&cfg.loopWorkers, "loop-workers", envInt("BENCH_LOOP_WORKERS", 16), "concurrent refreshes of the baseline loop")
	flag.IntVar(&cfg.loopWindows, "loop-windows", envInt("BENCH_LOOP_WINDOWS", 2), "windows the baseline loop's CPU is measured in, one after the other")
	flag.DurationVar(&cfg.scrapeEvery, "scrape-every", time.Duration(envIntZero("BENCH_SCRAPE_EVERY", 30))*time.Second, "how often to scrape the manager's whole metrics endpoint, as Prometheus would (0 never)")
	baseline := flag.Bool("baseline", false, "run as the baseline loop (internal)")
	writes := flag.Bool("writes", false, "measure instead what each of the operator's writes costs in CPU (the API server's and etcd's, the client's) over -n grants")
	replot := flag.String("replot", "", "comma-separated series.csv files of earlier runs: write their points as one series (CSV and SVG) to -out, and run nothing")
	flag.Parse()
	ctrl.SetLogger(logr.Discard()) // the bench's own informers have nothing to say
	if *baseline {
		runBaseline()
		return
	}
	if *writes {
		if err := runWrites(*n); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *replot != "" {
		if err := replotSeries(strings.Split(*replot, ","), cfg.out); err != nil {
			log.Fatal(err)
		}
		return
	}
	var err error
	if cfg.series, err = parseSeries(series, *n); err != nil {
		log.Fatal(err)
	}
	cfg.window = *window
	if cfg.window <= 0 {
		cfg.window = 2 * cfg.ttl
	}
	cfg.managerArgs = strings.Fields(managerArgs)
	cfg.managerEnv = strings.Fields(*managerEnv)
	raiseFileLimit()
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		log.Fatal(err)
	}
	var rows []plot.Row
	for _, n := range cfg.series {
		r, err := runN(cfg, n)
		if err != nil {
			log.Fatalf("N=%d: %v", n, err)
		}
		printTable(cfg, r)
		printProfiles(r)
		rows = append(rows, r.row())
		if err := writeSeries(cfg, rows); err != nil {
			log.Fatal(err)
		}
	}
	printSeries(cfg, rows)
}

func writeSeries(cfg config, rows []plot.Row) error {
	if err := writeSeriesCSV(filepath.Join(cfg.out, "series.csv"), rows); err != nil {
		return err
	}
	return plot.Series(filepath.Join(cfg.out, "series.svg"), rows)
}

// replotSeries draws one series from the points of earlier runs' series.csv files.
func replotSeries(paths []string, out string) error {
	rows, err := readSeriesCSVs(paths)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	return writeSeries(config{out: out}, rows)
}

func parseSeries(s string, n int) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return []int{n}, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("BENCH_SERIES: %q is not a positive count", f)
		}
		out = append(out, v)
	}
	return out, nil
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> %s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// envIntZero is envInt where 0 is a value, not a default.
func envIntZero(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func errTimeout(what string, got, want int, timeout time.Duration) error {
	return fmt.Errorf("%s: %d of %d after %s", what, got, want, timeout)
}
