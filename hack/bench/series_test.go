package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/credops/cd-credentials-operator/hack/bench/plot"
)

// A series drawn from runs made one N at a time has every run's point, in order of N,
// each as its run wrote it; a point measured again replaces the earlier one.
func TestASeriesIsDrawnFromTheRunsOfEachN(t *testing.T) {
	dir := t.TempDir()
	point := func(n int, cpu float64) plot.Row {
		return plot.Row{N: n, ManagerCPUPer1000: cpu, LoopCPUPer1000: 1.5, WritesPerRotation: 4, ReadsPerRotation: 0,
			KiBPerGrant: 14.9, KiBPerGrantAfterColdStart: 16.25, ColdStartSeconds: 141.2, WarmRestartSeconds: 6, TokensExpiredEarlier: 1}
	}
	write := func(name string, rows ...plot.Row) string {
		path := filepath.Join(dir, name)
		if err := writeSeriesCSV(path, rows); err != nil {
			t.Fatal(err)
		}
		return path
	}
	first := write("first.csv", point(10000, 3.5), point(1000, 3.59))
	again := write("again.csv", point(10000, 2.99))
	twenty := write("twenty.csv", point(20000, 3.13))

	got, err := readSeriesCSVs([]string{first, twenty, again})
	if err != nil {
		t.Fatal(err)
	}
	want := []plot.Row{point(1000, 3.59), point(10000, 2.99), point(20000, 3.13)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("series (-want +got):\n%s", diff)
	}

	out := filepath.Join(dir, "out")
	if err := replotSeries([]string{first, twenty, again}, out); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"series.csv", "series.svg"} {
		if fi, err := os.Stat(filepath.Join(out, name)); err != nil || fi.Size() == 0 {
			t.Errorf("%s not written: %v", name, err)
		}
	}
	back, err := readSeriesCSVs([]string{filepath.Join(out, "series.csv")})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, back); diff != "" {
		t.Errorf("the replotted series.csv (-want +got):\n%s", diff)
	}
}

// A file that is not a series CSV of this bench is refused by name, not drawn as zeros.
func TestReplotRefusesWhatIsNotASeriesCSV(t *testing.T) {
	path := filepath.Join(t.TempDir(), "timeline-1000.csv")
	if err := os.WriteFile(path, []byte("seconds,phase,rss_mib\n1.00,empty,61.10\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := readSeriesCSVs([]string{path})
	if err == nil || !strings.Contains(err.Error(), "timeline-1000.csv") {
		t.Errorf("got %v, want an error naming the file", err)
	}
}

// A token left to expire after the steady window, while the manager works off the cold
// start's bunched renewals, counts in the series as one inside the window does.
func TestTokensExpiredAfterTheSteadyWindowCountInTheSeries(t *testing.T) {
	r := result{n: 20000, lateCold: 2, late: 0}
	r.countLateAfter(2 + 0 + 37)
	if r.lateAfter != 37 {
		t.Errorf("late after the window: %d, want 37", r.lateAfter)
	}
	if got := r.row().TokensExpiredEarlier; got != 37 {
		t.Errorf("the series' tokens expired: %d, want 37 (none in the window, 37 after it)", got)
	}
}
