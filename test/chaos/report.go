package chaos

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"text/tabwriter"
	"time"
)

// Print writes the report's table.
func (rep *Report) Print(w io.Writer) {
	cfg, res := rep.Config, rep.Result
	fmt.Fprintf(w, "\nchaos run: seed %d (CHAOS_SEED=%d replays these events), %d events, %d grants\n", cfg.Seed, cfg.Seed, cfg.Events, cfg.Grants)
	fmt.Fprintf(w, "  token lifetime %s, lease %s, token-request timeout %s, API-server outage %s, grace %s\n", cfg.TokenTTL, cfg.Lease, cfg.TokenTimeout, cfg.Outage, cfg.Grace)
	fmt.Fprintf(w, "  chaos %s, whole run %s; load average before %s, after %s\n",
		rep.End.Sub(rep.ChaosFrom).Round(time.Second), rep.End.Sub(rep.Started).Round(time.Second), rep.LoadBefore, rep.LoadAfter)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nevents injected\tplanned\tapplied\t")
	planned, applied := map[Kind]int{}, map[Kind]int{}
	for _, ev := range rep.Plan {
		planned[ev.Kind]++
	}
	for _, in := range rep.Injections {
		if in.Applied {
			applied[in.Kind]++
		}
	}
	total, totalApplied := 0, 0
	for _, k := range Kinds() {
		fmt.Fprintf(tw, "  %s\t%d\t%d\t\n", k, planned[k], applied[k])
		total += planned[k]
		totalApplied += applied[k]
	}
	fmt.Fprintf(tw, "  all\t%d\t%d\t\n", total, totalApplied)
	_ = tw.Flush()

	fmt.Fprintf(w, "\nrotations (refresh tokens the sandbox consumed)   %d\n", res.Rotations)
	fmt.Fprintf(w, "presentations of refresh tokens at the sandbox    %d (token requests at the proxy: %d)\n", res.Presentations, res.Requests)
	fmt.Fprintf(w, "spent refresh tokens presented again              %d\n", res.Replays)
	fmt.Fprintf(w, "refresh-token Secrets deleted mid-rotation        %d\n", res.DeletedMidRotation)
	excused := 0
	for _, l := range res.Lost {
		if l.Excused {
			excused++
		}
	}
	fmt.Fprintf(w, "lost grants                                       %d (%d with an unavoidable cause, %d without)\n", len(res.Lost), excused, len(res.Lost)-excused)
	causes := map[string]int{}
	for _, l := range res.Lost {
		causes[l.Cause]++
	}
	for _, c := range sortedKeys(causes) {
		fmt.Fprintf(w, "  %4d  %s\n", causes[c], c)
	}
	var delays []time.Duration
	for _, l := range res.Lost {
		fmt.Fprintf(w, "        %s %s: %s\n", l.At.Format("15:04:05.000"), l.Grant, joinDetail(l.Cause, l.Detail))
		if !l.Reported.IsZero() {
			delays = append(delays, l.Reported.Sub(l.LostAt))
		}
	}
	if len(delays) > 0 {
		fmt.Fprintln(w, "time from a lost answer to the grant saying ReauthorizationRequired:")
		printSpread(w, "lost grants", delays)
	}
	fmt.Fprintf(w, "worst staleness, undisturbed under a steady leader %s (%s)\n", beforeOrPast(res.WorstSteady), res.WorstSteadyGrant)
	if res.WorstPast > 0 {
		fmt.Fprintf(w, "worst time an output Secret held an expired token  %s (%s, %s)\n", res.WorstPast.Round(10*time.Millisecond), res.WorstPastGrant, res.WorstPastCause)
	} else {
		fmt.Fprintf(w, "worst time an output Secret held an expired token  none expired\n")
	}
	for _, c := range sortedKeys(res.ExpiredByCause) {
		fmt.Fprintf(w, "  %4d  expired while: %s\n", res.ExpiredByCause[c], c)
	}
	fmt.Fprintf(w, "leader handover (signal, or API server answering again, to a leader holding the lease; lease %s):\n", cfg.Lease)
	for _, k := range []Kind{KillLeader, TermLeader, APIOutage} {
		printSpread(w, string(k), res.Handovers[k])
	}
	if len(res.Recoveries) > 0 || res.Unrecovered > 0 {
		fmt.Fprintln(w, "recovery after an API-server outage (answering again to every grant holding an unexpired token):")
		printSpread(w, string(APIOutage), res.Recoveries)
		if res.Unrecovered > 0 {
			fmt.Fprintf(w, "  %d outages never recovered before the end\n", res.Unrecovered)
		}
	}
	if rep.Record != nil && len(rep.Record.Timeline.Paused) > 0 {
		var pauses []time.Duration
		for _, p := range rep.Record.Timeline.Paused {
			pauses = append(pauses, p.To.Sub(p.From))
		}
		fmt.Fprintln(w, "machine paused (no process ran, the harness included: a VM snapshot, a host that stopped the guest):")
		printSpread(w, "paused", pauses)
		for _, p := range rep.Record.Timeline.Paused {
			fmt.Fprintf(w, "        %s to %s\n", p.From.Format("15:04:05.000"), p.To.Format("15:04:05.000"))
		}
	}
	if rep.Unsettled != "" {
		fmt.Fprintf(w, "did not settle: %s\n", rep.Unsettled)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	fmt.Fprintf(w, "violations                                        %d\n", len(res.Violations))
	for _, v := range res.Violations {
		fmt.Fprintf(w, "  %s\n", v)
	}
	fmt.Fprintln(w)
}

// WriteFiles writes the table (report.txt), every event (events.txt) and the evidence
// behind each violation (histories.txt) into dir.
func (rep *Report) WriteFiles(dir string) error {
	for name, write := range map[string]func(io.Writer){"report.txt": rep.Print, "events.txt": rep.Events, "histories.txt": rep.Histories} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		write(f)
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}

// Events prints every injection, for a run that failed.
func (rep *Report) Events(w io.Writer) {
	for _, in := range rep.Injections {
		fmt.Fprintf(w, "  %s #%d %s: %s\n", in.At.Format("15:04:05.000"), in.Seq, in.Kind, describe(in))
	}
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// beforeOrPast says how far from expiry a token was when it was replaced.
func beforeOrPast(left time.Duration) string {
	if left < 0 {
		return (-left).Round(10*time.Millisecond).String() + " past expiry"
	}
	return left.Round(10*time.Millisecond).String() + " before expiry"
}

// Histories prints, for every grant a violation names, what the sandbox and the proxy
// recorded about its sessions: the evidence behind the verdict.
func (rep *Report) Histories(w io.Writer) {
	if rep.Record == nil {
		return
	}
	x := newIndex(rep.Record)
	named := map[string]bool{}
	for _, v := range rep.Result.Violations {
		named[v.Grant] = true
	}
	for _, g := range sortedKeys(boolsToInts(named)) {
		fmt.Fprintf(w, "history of %s (sandbox journal; proxy outcome):\n", g)
		for _, e := range rep.Record.Journal {
			if x.grantCR[e.Grant] != g {
				continue
			}
			ex := x.exchanges[e.RequestID]
			fmt.Fprintf(w, "  #%-5d %s %-18s presented=%-8s consumed=%-5t reused=%-5t status=%d new=%-8s expires=%s delivered=%-5t proxy=%q pid=%d\n",
				e.Seq, e.Time.Format("15:04:05.000"), e.GrantType, short(e.Presented), e.Consumed, e.Reused, e.Status,
				short(e.IssuedRefresh), e.AccessExpiresAt.Format("15:04:05"), e.Delivered, ex.Outcome, ex.PID)
		}
		for _, ex := range rep.Record.Ledger {
			if !ex.Forwarded && x.crOfToken(ex.Presented) == g {
				fmt.Fprintf(w, "  proxy %s presented=%-8s %s (%s) pid=%d\n", ex.Start.Format("15:04:05.000"), short(ex.Presented), ex.Outcome, ex.Fault, ex.PID)
			}
		}
		for _, o := range rep.Record.Observations {
			if grantOf(o.Secret) == g {
				fmt.Fprintf(w, "  seen %s %-14s deleted=%-5t refresh=%-8s access=%s\n", o.At.Format("15:04:05.000"), o.Secret, o.Deleted, short(o.Refresh), short(o.Access))
			}
		}
	}
}

func boolsToInts(m map[string]bool) map[string]int {
	out := map[string]int{}
	for k := range m {
		out[k] = 1
	}
	return out
}

func printSpread(w io.Writer, what string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	fmt.Fprintf(w, "  %-22s n=%-3d worst %-8s median %s\n", what, len(ds), ds[len(ds)-1].Round(10*time.Millisecond), ds[len(ds)/2].Round(10*time.Millisecond))
}
