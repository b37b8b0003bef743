package main

import (
	"cmp"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/pprof/profile"
	"k8s.io/client-go/rest"
)

// captureProfile saves the manager's pprof profile name (query: e.g. "seconds=60") to
// path. A CPU profile blocks for its whole window.
func captureProfile(pprofAddr, name, query, path string, window time.Duration) error {
	c := &http.Client{Timeout: window + time.Minute}
	return saveProfile(c, "http://"+pprofAddr+"/debug/pprof/"+name+"?"+query, path)
}

// profileSlice is the length of each CPU profile of the API server taken while a
// phase lasts: the phase's profile is theirs merged, rounded up to a slice.
const profileSlice = 10 * time.Second

// profileAPIServerUntil profiles the API server's CPU, through the bench's admin
// credentials (it serves /debug/pprof unless --profiling=false), one slice after another
// until done is closed, and saves the slices merged to path.
func profileAPIServerUntil(cfg *rest.Config, done <-chan struct{}, path string) error {
	c, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	c.Timeout = profileSlice + time.Minute
	url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimSuffix(cfg.Host, "/"), int(profileSlice.Seconds()))
	var parts []*profile.Profile
	for {
		f, err := os.CreateTemp("", "apiserver-cpu-*.pprof")
		if err != nil {
			return err
		}
		f.Close()
		err = saveProfile(c, url, f.Name())
		var p *profile.Profile
		if err == nil {
			p, err = readProfile(f.Name())
		}
		os.Remove(f.Name())
		if err != nil {
			return err
		}
		parts = append(parts, p)
		select {
		case <-done:
			merged, err := profile.Merge(parts)
			if err != nil {
				return err
			}
			out, err := os.Create(path)
			if err != nil {
				return err
			}
			if err := merged.Write(out); err != nil {
				out.Close()
				return err
			}
			return out.Close()
		default:
		}
	}
}

func readProfile(path string) (*profile.Profile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return profile.Parse(f)
}

func saveProfile(c *http.Client, url, path string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("profile %s: %s: %s", url, resp.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// cost is one function's share of a profile.
type cost struct {
	fn        string
	flat, cum int64
}

// topCosts reads a profile and returns the functions with the largest flat and cum
// values of sampleType (CPU: "cpu"; heap in use: "inuse_space"), n of each, and the
// profile's total.
// keep, when set, leaves out the functions it refuses.
func topCosts(path, sampleType string, n int, keep func(string) bool) (flat, cum []cost, total int64, err error) {
	p, err := readProfile(path)
	if err != nil {
		return nil, nil, 0, err
	}
	idx := slices.IndexFunc(p.SampleType, func(t *profile.ValueType) bool { return t.Type == sampleType })
	if idx < 0 {
		return nil, nil, 0, fmt.Errorf("%s has no %s samples", path, sampleType)
	}
	byFn := map[string]*cost{}
	get := func(name string) *cost {
		c := byFn[name]
		if c == nil {
			c = &cost{fn: name}
			byFn[name] = c
		}
		return c
	}
	for _, s := range p.Sample {
		v := s.Value[idx]
		total += v
		seen := map[string]bool{}
		for i, loc := range s.Location {
			// Inlined calls are several lines of one location, innermost first.
			for j, line := range loc.Line {
				if line.Function == nil {
					continue
				}
				name := line.Function.Name
				if i == 0 && j == 0 {
					get(name).flat += v
				}
				if !seen[name] {
					seen[name] = true
					get(name).cum += v
				}
			}
		}
	}
	all := make([]cost, 0, len(byFn))
	for _, c := range byFn {
		if keep == nil || keep(c.fn) {
			all = append(all, *c)
		}
	}
	flat = topBy(all, func(c cost) int64 { return c.flat }, n)
	cum = topBy(all, func(c cost) int64 { return c.cum }, n)
	return flat, cum, total, nil
}

// operatorOwn keeps the operator's own functions.
func operatorOwn(fn string) bool { return strings.HasPrefix(fn, "github.com/credops/") }

func topBy(all []cost, key func(cost) int64, n int) []cost {
	sorted := slices.Clone(all)
	slices.SortFunc(sorted, func(a, b cost) int { return cmp.Or(cmp.Compare(key(b), key(a)), cmp.Compare(a.fn, b.fn)) })
	return sorted[:min(n, len(sorted))]
}

// printTop prints a profile's top functions, flat and cum, as two small tables.
func printTop(title, path, sampleType string, unit func(int64) string, keep func(string) bool) {
	flat, cum, total, err := topCosts(path, sampleType, 5, keep)
	if err != nil {
		fmt.Printf("\n%s: %v\n", title, err)
		return
	}
	pct := func(v int64) string {
		if total == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", 100*float64(v)/float64(total))
	}
	fmt.Printf("\n%s (total %s; %s)\n\n", title, unit(total), path)
	fmt.Println("| flat | flat% | function || cum | cum% | function |")
	fmt.Println("|---|---|---||---|---|---|")
	for i := range max(len(flat), len(cum)) {
		var a, b cost
		if i < len(flat) {
			a = flat[i]
		}
		if i < len(cum) {
			b = cum[i]
		}
		fmt.Printf("| %s | %s | %s || %s | %s | %s |\n", unit(a.flat), pct(a.flat), a.fn, unit(b.cum), pct(b.cum), b.fn)
	}
}

func cpuUnit(ns int64) string { return fmt.Sprintf("%.2fs", float64(ns)/1e9) }

func bytesUnit(b int64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }
