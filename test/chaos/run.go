package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// Report is a run's outcome: the verdict and the figures the table prints.
type Report struct {
	Config     Config
	Plan       []Event
	Result     Result
	Injections []Injection
	Notes      []string
	Started    time.Time
	ChaosFrom  time.Time
	End        time.Time
	LoadBefore string
	LoadAfter  string
	// Unsettled says why the run ended before every grant was Ready or lost.
	Unsettled string
	// Record is what the run produced, for a closer look at a failure.
	Record *Record
}

// Run carries out a whole chaos run: set up, warm up, inject cfg.Events events, let
// things settle, and judge.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	rep := &Report{Config: cfg, Started: time.Now(), LoadBefore: loadAverage()}
	rep.Plan = Plan(cfg.Seed, cfg.Events, cfg.Grants, cfg.MinGap, cfg.MaxGap, cfg.MaxOutages)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the harness's own watches end with the run
	h := &Harness{cfg: cfg, tl: &Timeline{}, open: map[string]bool{}, junk: map[string]bool{}}
	defer h.tearDown()
	if err := h.setUp(ctx); err != nil {
		return nil, err
	}
	cfg.Logf("Warming up: %d grants, both replicas", cfg.Grants)
	if err := h.waitAllFresh(ctx, 3*time.Minute, false); err != nil {
		return nil, fmt.Errorf("warm-up: the grants never all became Ready: %w", err)
	}
	h.setReseed(true)
	rep.ChaosFrom = time.Now()
	for _, ev := range rep.Plan {
		select {
		case <-time.After(ev.Gap): // the pause between events is part of the plan
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		h.inject(ctx, ev)
		if h.fatal != nil {
			return nil, fmt.Errorf("event %d: %w", ev.Seq, h.fatal)
		}
	}
	h.drainFaults(ctx, 30*time.Second)
	h.setReseed(false)
	cfg.Logf("Settling: waiting up to %s for every grant to be Ready or to say ReauthorizationRequired", cfg.Settle)
	if err := h.waitAllFresh(ctx, cfg.Settle, true); err != nil {
		rep.Unsettled = err.Error()
	}
	// Both replicas stop gracefully before the last look, so no rotation is caught
	// half-way (consumed at the sandbox, not yet stored).
	for _, r := range h.replicas {
		stopCtx, cancel := context.WithTimeout(ctx, time.Minute)
		if err := r.Shutdown(stopCtx); err != nil {
			h.tl.note(err.Error())
		}
		cancel()
	}
	rep.End = time.Now()
	rec, err := h.collect(ctx, rep.ChaosFrom, rep.End)
	if err != nil {
		return nil, err
	}
	if err := rec.Save(filepath.Join(cfg.WorkDir, "records.json")); err != nil {
		return nil, err
	}
	rep.Result = Check(rec)
	rep.Record = rec
	rep.Injections = rec.Timeline.Injections
	rep.Notes = rec.Timeline.Notes
	rep.LoadAfter = loadAverage()
	return rep, nil
}

func (h *Harness) setReseed(on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reseed = on
}

// collect gathers the records: a last look at every Secret and grant, the whole
// journal (read after the Secrets, so it knows every token they hold), the ledger and
// the timeline.
func (h *Harness) collect(ctx context.Context, from, end time.Time) (*Record, error) {
	var secrets corev1.SecretList
	if err := h.k8s.List(ctx, &secrets, client.InNamespace(Namespace)); err != nil {
		return nil, err
	}
	for i := range secrets.Items {
		h.observer.Add(observe(&secrets.Items[i], false, end))
	}
	var grants cdv1.CDUserGrantList
	if err := h.k8s.List(ctx, &grants, client.InNamespace(Namespace)); err != nil {
		return nil, err
	}
	final := map[string]FinalGrant{}
	for _, g := range grants.Items {
		f := FinalGrant{}
		if c := meta.FindStatusCondition(g.Status.Conditions, cdv1.ReadyCondition); c != nil {
			f.Ready, f.ReadyReason = c.Status == "True", c.Reason
		}
		if c := meta.FindStatusCondition(g.Status.Conditions, cdv1.ReauthorizationRequiredCondition); c != nil {
			f.Reauth, f.ReauthReason = c.Status == "True", c.Reason
		}
		final[g.Name] = f
	}
	if err := h.sandbox.SyncJournal(ctx); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	junk := map[string]bool{}
	for k := range h.junk {
		junk[k] = true
	}
	return &Record{
		Journal:      h.sandbox.Journal(),
		Ledger:       h.proxy.Ledger(),
		Timeline:     h.tl.Snapshot(),
		Observations: h.observer.Observations(),
		Seeds:        append([]Seed(nil), h.seeds...),
		Episodes:     append([]Episode(nil), h.episodes...),
		Final:        final,
		Junk:         junk,
		Grants:       append([]string(nil), h.grants...),
		From:         from,
		End:          end,
		Grace:        h.cfg.Grace,
		InFlight:     h.cfg.InFlightTimeout(),
	}, nil
}

// Save writes the record as JSON (hashes, never tokens), for a look at a failed run.
func (r *Record) Save(path string) error {
	b, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
