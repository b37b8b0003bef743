package metrics

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	"sigs.k8s.io/yaml"
)

// These tests run the shipped alerts on Prometheus's own PromQL engine. Its rule
// manager and test storage pull in every service discovery Prometheus has (cloud SDKs
// included), so the series live in a slice here and the `for:` clause is kept as
// Prometheus keeps it (pending from the first evaluation that returns the series,
// firing once it has been pending that long, reset when it is gone).

// shippedRule is one alert of config/prometheus/prometheusrule.yaml.
type shippedRule struct {
	name string
	expr string
	hold time.Duration // for:
	keep time.Duration // keep_firing_for:
}

// shippedRules parses the alerts config/prometheus ships (the chart's copy is generated
// from it) as Prometheus does: a rule that does not parse, or whose annotations are no
// valid template, fails here as it would fail the Prometheus Operator's reload.
func shippedRules(t *testing.T) []shippedRule {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "config", "prometheus", "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var obj struct {
		Spec map[string]any `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		t.Fatal(err)
	}
	spec, err := yaml.Marshal(obj.Spec)
	if err != nil {
		t.Fatal(err)
	}
	groups, errs := rulefmt.Parse(spec, false, model.UTF8Validation, parser.NewParser(parser.Options{}), nil)
	if len(errs) > 0 {
		t.Fatalf("the shipped rules do not parse: %v", errs)
	}
	var out []shippedRule
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			out = append(out, shippedRule{r.Alert, r.Expr, time.Duration(r.For), time.Duration(r.KeepFiringFor)})
		}
	}
	return out
}

// firing evaluates every shipped alert every 30 s, as a rule group would, on series
// given one per line in promqltest's notation with one sample a minute from time 0
// (`metric{labels} 1x9 stale _x10 1x10`), up to until, and returns the alerts firing
// then, as "Alert kind/namespace/name" (an alert on the operator as a whole: "Alert").
func firing(t *testing.T, load string, until time.Duration) []string {
	t.Helper()
	p := parser.NewParser(parser.Options{})
	var series []storage.Series
	for line := range strings.Lines(load) {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		lbls, values, err := p.ParseSeriesDesc(line)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		var samples []chunks.Sample
		for i, v := range values {
			if !v.Omitted {
				samples = append(samples, floatSample{t: time.Duration(i) * time.Minute, f: v.Value})
			}
		}
		series = append(series, storage.NewListSeries(lbls, samples))
	}
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute, Parser: p})
	t.Cleanup(func() { _ = engine.Close() })
	rules := shippedRules(t)
	// An alert is one per label set, as Prometheus keeps them: other labels (another
	// pod's) make another alert, pending afresh.
	type alert struct {
		said    string        // "Alert kind/namespace/name"
		since   time.Duration // pending since
		firing  bool
		missing time.Duration // when the expression last stopped returning it; -1 while it does
	}
	alerts := map[string]*alert{} // by "rule labels"
	for at := time.Duration(0); at <= until; at += 30 * time.Second {
		active := map[string]bool{}
		for _, r := range rules {
			q, err := engine.NewInstantQuery(context.Background(), seriesQueryable(series), nil, r.expr, time.Unix(0, 0).Add(at))
			if err != nil {
				t.Fatal(err)
			}
			res := q.Exec(context.Background())
			if res.Err != nil {
				t.Fatalf("%s at %s: %v", r.name, at, res.Err)
			}
			vec, err := res.Vector()
			if err != nil {
				t.Fatalf("%s at %s: %v", r.name, at, err)
			}
			for _, s := range vec {
				key := r.name + " " + s.Metric.String()
				active[key] = true
				a, ok := alerts[key]
				if !ok {
					a = &alert{said: r.name, since: at}
					if s.Metric.Has("name") {
						a.said += " " + s.Metric.Get("kind") + "/" + s.Metric.Get("namespace") + "/" + s.Metric.Get("name")
					}
					alerts[key] = a
				}
				a.missing = -1
				a.firing = a.firing || at-a.since >= r.hold
			}
			q.Close()
			// Gone from the expression: a pending alert ends; a firing one ends unless
			// keep_firing_for holds it, counted from its first evaluation gone.
			for key, a := range alerts {
				if active[key] || !strings.HasPrefix(key, r.name+" ") {
					continue
				}
				if a.missing < 0 {
					a.missing = at
				}
				if !a.firing || at-a.missing >= r.keep {
					delete(alerts, key)
				}
			}
		}
	}
	var out []string
	for _, a := range alerts {
		if a.firing {
			out = append(out, a.said)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// scraped is the operator's scrape target up for 30 minutes (one pod, no leader
// election), for the tests of what the per-CR series say: without it nothing publishes
// them, and CDCredentialsOperatorDown fires.
const scraped = `
  up{job="cd-credentials-operator-metrics",pod="op-0"} 1x30
`

// seriesQueryable serves a fixed set of series to the engine.
type seriesQueryable []storage.Series

func (s seriesQueryable) Querier(int64, int64) (storage.Querier, error) {
	return &storage.MockQuerier{SelectMockFunction: func(_ bool, _ *storage.SelectHints, matchers ...*labels.Matcher) storage.SeriesSet {
		var match []storage.Series
		for _, one := range s {
			if matchesAll(one.Labels(), matchers) {
				match = append(match, one)
			}
		}
		slices.SortFunc(match, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
		return &seriesSet{series: match, i: -1}
	}}, nil
}

func matchesAll(l labels.Labels, matchers []*labels.Matcher) bool {
	for _, m := range matchers {
		if !m.Matches(l.Get(m.Name)) {
			return false
		}
	}
	return true
}

type seriesSet struct {
	series []storage.Series
	i      int
}

func (s *seriesSet) Next() bool                        { s.i++; return s.i < len(s.series) }
func (s *seriesSet) At() storage.Series                { return s.series[s.i] }
func (s *seriesSet) Err() error                        { return nil }
func (s *seriesSet) Warnings() annotations.Annotations { return nil }

// floatSample is one float sample at a time since 0 (a `stale` in the notation is
// Prometheus's stale marker, which the engine reads as the series ending).
type floatSample struct {
	t time.Duration
	f float64
}

func (s floatSample) T() int64                      { return s.t.Milliseconds() }
func (s floatSample) ST() int64                     { return 0 }
func (s floatSample) F() float64                    { return s.f }
func (s floatSample) H() *histogram.Histogram       { return nil }
func (s floatSample) FH() *histogram.FloatHistogram { return nil }
func (s floatSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s floatSample) Copy() chunks.Sample           { return s }

// TestTokenNotIssuedFiresForACRThatNeverGotAToken: a CR that never got a token has no
// expiry and no renewal series, so CDTokenExpiresSoon cannot page for it; one whose
// Ready stayed False for 15 minutes (its reason changing as it retries) fires
// CDTokenNotIssued, once, naming it.
func TestTokenNotIssuedFiresForACRThatNeverGotAToken(t *testing.T) {
	const load = `
  cdcredops_condition{kind="CDCredential",namespace="team-a",name="pricing",type="Ready",status="False",reason="InvalidClient"} 1x9 stale
  cdcredops_condition{kind="CDCredential",namespace="team-a",name="pricing",type="Ready",status="False",reason="TokenRequestFailed"} _x10 1x10
  cdcredops_condition{kind="CDCredential",namespace="team-a",name="pricing",type="FlowMisuse",status="False",reason="FlowCorrect"} 1x20
`
	if got := firing(t, scraped+load, 14*time.Minute); len(got) != 0 {
		t.Errorf("firing after 14 minutes: %v, want nothing yet", got)
	}
	want := []string{"CDTokenNotIssued CDCredential/team-a/pricing"}
	if got := firing(t, scraped+load, 16*time.Minute); !slices.Equal(got, want) {
		t.Errorf("firing after 16 minutes: %v, want %v", got, want)
	}
}

// TestTokenNotIssuedLeavesWhatOtherAlertsCover: a CR that has a token (its renewals
// failing page as CDTokenExpiresSoon), a grant waiting for its customer
// (CDReauthorizationRequired), a flow misuse (CDFlowMisuse), a grant whose CDCredential
// is not Ready (the credential pages) and a CR that got its token within the 15 minutes
// do not fire CDTokenNotIssued.
func TestTokenNotIssuedLeavesWhatOtherAlertsCover(t *testing.T) {
	const load = `
  cdcredops_condition{kind="CDCredential",namespace="a",name="renewing",type="Ready",status="False",reason="TokenRequestFailed"} 1x20
  cdcredops_token_expiration_timestamp_seconds{kind="CDCredential",namespace="a",name="renewing"} 7200x20
  cdcredops_token_renewal_timestamp_seconds{kind="CDCredential",namespace="a",name="renewing"} 4800x20
  cdcredops_condition{kind="CDUserGrant",namespace="a",name="waiting",type="Ready",status="False",reason="AwaitingAuthorization"} 1x20
  cdcredops_condition{kind="CDUserGrant",namespace="a",name="waiting",type="ReauthorizationRequired",status="True",reason="RefreshTokenMissing"} 1x20
  cdcredops_condition{kind="CDUserGrant",namespace="a",name="misused",type="Ready",status="False",reason="UserGrantOnClientCredentials"} 1x20
  cdcredops_condition{kind="CDUserGrant",namespace="a",name="misused",type="FlowMisuse",status="True",reason="UserGrantOnClientCredentials"} 1x20
  cdcredops_condition{kind="CDUserGrant",namespace="a",name="behind",type="Ready",status="False",reason="CredentialNotReady"} 1x20
  cdcredops_condition{kind="CDCredential",namespace="a",name="late",type="Ready",status="False",reason="Reconciling"} 1x9 stale
  cdcredops_condition{kind="CDCredential",namespace="a",name="late",type="Ready",status="True",reason="TokenIssued"} _x10 1x10
  cdcredops_token_expiration_timestamp_seconds{kind="CDCredential",namespace="a",name="late"} _x10 7200x10
`
	for _, got := range firing(t, scraped+load, 20*time.Minute) {
		if strings.HasPrefix(got, "CDTokenNotIssued ") {
			t.Errorf("%s fired", got)
		}
	}
}

// TestTheEngineAgreesWithTheTokenAlertsModel: the schedule tests above read
// CDTokenExpiresSoon's thresholds out of its expression; Prometheus's engine, on the
// same rule, fires for a renewal missed by more than its threshold and not for one
// renewed on time.
func TestTheEngineAgreesWithTheTokenAlertsModel(t *testing.T) {
	// Renewal due at 600 s; renewed on time, the series move on at minute 10.
	const onTime = `
  cdcredops_token_expiration_timestamp_seconds{kind="CDCredential",namespace="a",name="fresh"} 900x10 1800x10
  cdcredops_token_renewal_timestamp_seconds{kind="CDCredential",namespace="a",name="fresh"} 600x10 1500x10
`
	if got := firing(t, scraped+onTime, 20*time.Minute); len(got) != 0 {
		t.Errorf("a renewal on schedule fired %v", got)
	}
	const missed = `
  cdcredops_token_expiration_timestamp_seconds{kind="CDCredential",namespace="a",name="stuck"} 900x20
  cdcredops_token_renewal_timestamp_seconds{kind="CDCredential",namespace="a",name="stuck"} 600x20
`
	want := []string{"CDTokenExpiresSoon CDCredential/a/stuck"}
	if got := firing(t, scraped+missed, 14*time.Minute); !slices.Equal(got, want) {
		t.Errorf("a renewal missed by 4 minutes: firing %v, want %v", got, want)
	}
}

// TestPerCRAlertsOutliveALeaderChange: only the leader publishes the per-CR series, so a
// rollout or a failover moves them to another pod (another target, other labels) with a
// scrape or two between. An alert with a for: clause that kept the pod's labels would
// start its wait afresh at each leader change, and one rollout after another would keep
// it from ever firing; a firing one would resolve and page again a minute later.
func TestPerCRAlertsOutliveALeaderChange(t *testing.T) {
	const load = `
  up{job="cd-credentials-operator-metrics",pod="a"} 1x20
  up{job="cd-credentials-operator-metrics",pod="b"} 1x20
  cdcredops_condition{pod="a",kind="CDUserGrant",namespace="a",name="acme",type="ReauthorizationRequired",status="True",reason="RefreshTokenRejected"} 1x3 stale
  cdcredops_condition{pod="b",kind="CDUserGrant",namespace="a",name="acme",type="ReauthorizationRequired",status="True",reason="RefreshTokenRejected"} _x4 1x10
  cdcredops_condition{pod="a",kind="CDCredential",namespace="a",name="pricing",type="Ready",status="False",reason="InvalidClient"} 1x9 stale
  cdcredops_condition{pod="b",kind="CDCredential",namespace="a",name="pricing",type="Ready",status="False",reason="InvalidClient"} _x10 1x10
  cdcredops_token_expiration_timestamp_seconds{pod="a",kind="CDCredential",namespace="a",name="stuck"} 3600x9 stale
  cdcredops_token_renewal_timestamp_seconds{pod="a",kind="CDCredential",namespace="a",name="stuck"} 60x9 stale
  cdcredops_token_expiration_timestamp_seconds{pod="b",kind="CDCredential",namespace="a",name="stuck"} _x10 3600x10
  cdcredops_token_renewal_timestamp_seconds{pod="b",kind="CDCredential",namespace="a",name="stuck"} _x10 60x10
`
	for _, tc := range []struct {
		name string
		at   time.Duration
		want []string
	}{
		{"6 minutes after the customer's grant was refused, across a leader change at 4", 6 * time.Minute,
			[]string{"CDReauthorizationRequired CDUserGrant/a/acme", "CDTokenExpiresSoon CDCredential/a/stuck"}},
		// The renewal of "stuck" is overdue since minute 3, and paged from minute 4.
		{"30 seconds after a leader change at 10, the renewal still overdue", 10*time.Minute + 30*time.Second,
			[]string{"CDReauthorizationRequired CDUserGrant/a/acme", "CDTokenExpiresSoon CDCredential/a/stuck"}},
		{"16 minutes in, across a leader change at 10", 16 * time.Minute,
			[]string{"CDReauthorizationRequired CDUserGrant/a/acme", "CDTokenExpiresSoon CDCredential/a/stuck", "CDTokenNotIssued CDCredential/a/pricing"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, firing(t, load, tc.at)); diff != "" {
				t.Errorf("firing at %s (-want +got):\n%s", tc.at, diff)
			}
		})
	}
}

// TestOperatorDownFiresWhenNothingPublishesThePerCRSeries: the per-CR alerts read series
// only a scraped leader publishes. Whatever keeps them from Prometheus (every replica
// down, scrapes refused, no replica leading), CDCredentialsOperatorDown says within 5
// minutes that the per-CR alerts are blind; a healthy operator, with leader election or
// without, and a failover do not fire it.
func TestOperatorDownFiresWhenNothingPublishesThePerCRSeries(t *testing.T) {
	down := []string{"CDCredentialsOperatorDown"}
	for _, tc := range []struct {
		name string
		load string
		at   time.Duration
		want []string
	}{
		// The leader renews on schedule until minute 4, then every replica crash-loops
		// (or is scaled to zero). The token expires at minute 15, and nobody renews it.
		{"every replica down since minute 5, the token expired at 15", `
  up{job="cd-credentials-operator-metrics",pod="op-0"} 1x4 0x20
  cdcredops_token_expiration_timestamp_seconds{kind="CDCredential",namespace="a",name="pricing"} 900x4 stale
  cdcredops_token_renewal_timestamp_seconds{kind="CDCredential",namespace="a",name="pricing"} 600x4 stale
  cdcredops_condition{kind="CDCredential",namespace="a",name="pricing",type="Ready",status="True",reason="TokenIssued"} 1x4 stale
`, 20 * time.Minute, down},
		// The chart's default metrics.readerSubjects is empty: a ServiceMonitor and a
		// PrometheusRule turned on without binding Prometheus get 403 at every scrape.
		{"every scrape refused from the start", `
  up{job="cd-credentials-operator-metrics",pod="op-0"} 0x30
`, 30 * time.Minute, down},
		{"every scrape refused, before the 5 minutes", `
  up{job="cd-credentials-operator-metrics",pod="op-0"} 0x30
`, 4 * time.Minute, nil},
		{"no scrape job at all (the ServiceMonitor selected by no Prometheus)", `
  up{job="another-operator-metrics",pod="x-0"} 1x30
`, 30 * time.Minute, down},
		// Both replicas serve metrics, neither holds the Lease (its RBAC taken away, the
		// API server unreachable from them): nobody renews, nothing publishes.
		{"both replicas scraped, neither leading", `
  up{job="cd-credentials-operator-metrics",pod="op-0"} 1x30
  up{job="cd-credentials-operator-metrics",pod="op-1"} 1x30
  leader_election_master_status{job="cd-credentials-operator-metrics",pod="op-0",name="cd-credentials-operator.credops.io"} 0x30
  leader_election_master_status{job="cd-credentials-operator-metrics",pod="op-1",name="cd-credentials-operator.credops.io"} 0x30
`, 10 * time.Minute, down},
		{"one replica scraped and leading, the other standing by", `
  up{job="cd-credentials-operator-metrics",pod="op-0"} 1x30
  up{job="cd-credentials-operator-metrics",pod="op-1"} 1x30
  leader_election_master_status{job="cd-credentials-operator-metrics",pod="op-0",name="cd-credentials-operator.credops.io"} 1x30
  leader_election_master_status{job="cd-credentials-operator-metrics",pod="op-1",name="cd-credentials-operator.credops.io"} 0x30
`, 30 * time.Minute, nil},
		{"one replica without leader election, scraped", scraped, 30 * time.Minute, nil},
		{"a failover with two minutes between the leaders", failoverReplicas, 30 * time.Minute, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, firing(t, tc.load, tc.at), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("firing at %s (-want +got):\n%s", tc.at, diff)
			}
		})
	}
}

// failoverReplicas are two replicas' scrapes through a failover: the leader (op-0) dies at
// minute 10, and the standby (op-1) leads from minute 12.
const failoverReplicas = `
  up{job="cd-credentials-operator-metrics",pod="op-0"} 1x9 stale
  up{job="cd-credentials-operator-metrics",pod="op-1"} 1x30
  leader_election_master_status{job="cd-credentials-operator-metrics",pod="op-0",name="cd-credentials-operator.credops.io"} 1x9 stale
  leader_election_master_status{job="cd-credentials-operator-metrics",pod="op-1",name="cd-credentials-operator.credops.io"} 0x11 1x18
`

// TestATokenAlertOutlivesItsPublisher: the critical CDTokenExpiresSoon fires for a
// failed renewal; then the operator dies, or the leader does and its successor is not
// scraped yet. Nothing renews the token meanwhile, so the page must not resolve (a
// resolve says "fixed"); it holds on the last values scraped until
// CDCredentialsOperatorDown has taken over. A CR deleted while the operator is scraped
// resolves at once.
func TestATokenAlertOutlivesItsPublisher(t *testing.T) {
	stuck := "CDTokenExpiresSoon CDCredential/a/pricing"
	// Renewal due at 120 s, failing; the token expires at 900 s.
	const died = `
  up{job="cd-credentials-operator-metrics",pod="op-0"} 1x9 0x30
  cdcredops_token_expiration_timestamp_seconds{kind="CDCredential",namespace="a",name="pricing"} 900x9 stale
  cdcredops_token_renewal_timestamp_seconds{kind="CDCredential",namespace="a",name="pricing"} 120x9 stale
`
	// The leader (op-0) dies at minute 10; op-1 leads and publishes from minute 12.
	const failover = failoverReplicas + `
  cdcredops_token_expiration_timestamp_seconds{pod="op-0",kind="CDCredential",namespace="a",name="pricing"} 900x9 stale
  cdcredops_token_renewal_timestamp_seconds{pod="op-0",kind="CDCredential",namespace="a",name="pricing"} 120x9 stale
  cdcredops_token_expiration_timestamp_seconds{pod="op-1",kind="CDCredential",namespace="a",name="pricing"} _x12 900x18
  cdcredops_token_renewal_timestamp_seconds{pod="op-1",kind="CDCredential",namespace="a",name="pricing"} _x12 120x18
`
	const deleted = `
  up{job="cd-credentials-operator-metrics",pod="op-0"} 1x30
  cdcredops_token_expiration_timestamp_seconds{kind="CDCredential",namespace="a",name="pricing"} 900x9 stale
  cdcredops_token_renewal_timestamp_seconds{kind="CDCredential",namespace="a",name="pricing"} 120x9 stale
`
	for _, tc := range []struct {
		name string
		load string
		at   time.Duration
		want []string
	}{
		{"the renewal failing, the operator up", died, 9 * time.Minute, []string{stuck}},
		{"2 minutes after the operator died", died, 12 * time.Minute, []string{stuck}},
		{"once CDCredentialsOperatorDown fires", died, 16 * time.Minute, []string{"CDCredentialsOperatorDown", stuck}},
		{"15 minutes after the last scrape: CDCredentialsOperatorDown alone", died, 25 * time.Minute, []string{"CDCredentialsOperatorDown"}},
		{"30 seconds into a failover's two minutes without a leader", failover, 10*time.Minute + 30*time.Second, []string{stuck}},
		{"after the failover", failover, 14 * time.Minute, []string{stuck}},
		{"a CR deleted while its alert fires, the operator up", deleted, 10*time.Minute + 30*time.Second, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, firing(t, tc.load, tc.at), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("firing at %s (-want +got):\n%s", tc.at, diff)
			}
		})
	}
}

// A rollout moves the leader twice
// within 15 minutes (op-0 -> op-1 -> op-2). op-1 renewed the CR at minute 6 (renewal
// next due at 30m, token good until 45m). In the gap before op-2 is scraped as leader,
// CDTokenExpiresSoon's "nothing publishes" branch takes last_over_time per series, so
// op-0's series (last scraped at minute 3, renewal due at 6m) still in the 15m window
// says "overdue", though a later publisher said otherwise.
func TestTwoFailoversDoNotPageForARenewedToken(t *testing.T) {
	const load = `
  up{job="cd-credentials-operator-metrics",pod="op-0"} 1x3 stale
  up{job="cd-credentials-operator-metrics",pod="op-1"} _x5 1x4 stale
  up{job="cd-credentials-operator-metrics",pod="op-2"} 1x25
  leader_election_master_status{job="cd-credentials-operator-metrics",pod="op-0",name="l"} 1x3 stale
  leader_election_master_status{job="cd-credentials-operator-metrics",pod="op-1",name="l"} _x5 1x4 stale
  leader_election_master_status{job="cd-credentials-operator-metrics",pod="op-2",name="l"} 0x11 1x14
  cdcredops_token_renewal_timestamp_seconds{pod="op-0",kind="CDCredential",namespace="a",name="pricing"} 360x3 stale
  cdcredops_token_expiration_timestamp_seconds{pod="op-0",kind="CDCredential",namespace="a",name="pricing"} 1200x3 stale
  cdcredops_token_renewal_timestamp_seconds{pod="op-1",kind="CDCredential",namespace="a",name="pricing"} _x5 360 1800x3 stale
  cdcredops_token_expiration_timestamp_seconds{pod="op-1",kind="CDCredential",namespace="a",name="pricing"} _x5 1200 2700x3 stale
  cdcredops_token_renewal_timestamp_seconds{pod="op-2",kind="CDCredential",namespace="a",name="pricing"} _x12 1800x10
  cdcredops_token_expiration_timestamp_seconds{pod="op-2",kind="CDCredential",namespace="a",name="pricing"} _x12 2700x10
`
	for _, at := range []time.Duration{9 * time.Minute, 11 * time.Minute, 11*time.Minute + 30*time.Second, 14 * time.Minute} {
		if diff := cmp.Diff([]string(nil), firing(t, load, at), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("firing at %s, the token renewed at 6m and good until 45m (-want +got):\n%s", at, diff)
		}
	}
}

// TestTokenExpiresSoonLeavesAGrantWaitingForItsCustomer: a grant stopped because only
// its customer can go on (its refresh token refused for good: a capped session's natural
// end; or spent by a rotation cut short) has a renewal time in the past that no renewal
// will move. Paging on call for it, critical, at every session's end says nothing
// CDReauthorizationRequired does not, and nothing on call can do. Every other wait still
// pages: a requested login (the grant renews its current token meanwhile), a
// refresh-token Secret gone (on call can put it back), and a grant whose customer logged
// in again but whose Secret write fails, while ReauthorizationRequired still says why the
// grant stopped before. Nothing changes while nothing publishes the series.
func TestTokenExpiresSoonLeavesAGrantWaitingForItsCustomer(t *testing.T) {
	// Every grant's token expires at 900 s (ended's with its session at 600 s) and is due
	// for renewal at 600 s (requested's at 300 s); none is renewed. From minute 10:
	//   ended:     the refresh at the session's end was refused (Ready says so);
	//   requested: a new login was asked for, and the renewal of the current token fails;
	//   moved:     its refresh-token Secret was deleted;
	//   quota:     the customer logged in again after a refusal, and the output Secret's
	//              write is refused (a quota) while ReauthorizationRequired stays.
	const grants = `
  cdcredops_token_expiration_timestamp_seconds{kind="CDUserGrant",namespace="a",name="ended"} 600x%[1]d %[2]s
  cdcredops_token_renewal_timestamp_seconds{kind="CDUserGrant",namespace="a",name="ended"} 600x%[1]d %[2]s
  cdcredops_condition{kind="CDUserGrant",namespace="a",name="ended",type="Ready",status="True",reason="TokenIssued"} 1x9 stale
  cdcredops_condition{kind="CDUserGrant",namespace="a",name="ended",type="Ready",status="False",reason="RefreshTokenRejected"} _x10 1x%[3]d %[2]s
  cdcredops_condition{kind="CDUserGrant",namespace="a",name="ended",type="ReauthorizationRequired",status="False",reason="RefreshTokenValid"} 1x9 stale
  cdcredops_condition{kind="CDUserGrant",namespace="a",name="ended",type="ReauthorizationRequired",status="True",reason="RefreshTokenRejected"} _x10 1x%[3]d %[2]s
  cdcredops_token_expiration_timestamp_seconds{kind="CDUserGrant",namespace="a",name="requested"} 900x%[1]d %[2]s
  cdcredops_token_renewal_timestamp_seconds{kind="CDUserGrant",namespace="a",name="requested"} 300x%[1]d %[2]s
  cdcredops_condition{kind="CDUserGrant",namespace="a",name="requested",type="ReauthorizationRequired",status="True",reason="ReauthorizationRequested"} 1x%[1]d %[2]s
  cdcredops_token_expiration_timestamp_seconds{kind="CDUserGrant",namespace="a",name="moved"} 900x%[1]d %[2]s
  cdcredops_token_renewal_timestamp_seconds{kind="CDUserGrant",namespace="a",name="moved"} 600x%[1]d %[2]s
  cdcredops_condition{kind="CDUserGrant",namespace="a",name="moved",type="Ready",status="False",reason="RefreshTokenMissing"} _x10 1x%[3]d %[2]s
  cdcredops_condition{kind="CDUserGrant",namespace="a",name="moved",type="ReauthorizationRequired",status="True",reason="RefreshTokenMissing"} _x10 1x%[3]d %[2]s
  cdcredops_token_expiration_timestamp_seconds{kind="CDUserGrant",namespace="a",name="quota"} 900x%[1]d %[2]s
  cdcredops_token_renewal_timestamp_seconds{kind="CDUserGrant",namespace="a",name="quota"} 600x%[1]d %[2]s
  cdcredops_condition{kind="CDUserGrant",namespace="a",name="quota",type="Ready",status="False",reason="SecretWriteFailed"} _x10 1x%[3]d %[2]s
  cdcredops_condition{kind="CDUserGrant",namespace="a",name="quota",type="ReauthorizationRequired",status="True",reason="RefreshTokenRejected"} 1x%[1]d %[2]s
`
	up := fmt.Sprintf(grants, 30, "", 20)
	// Every replica down from minute 20: the series end there.
	died := `
  up{job="cd-credentials-operator-metrics",pod="op-0"} 1x19 0x20
` + fmt.Sprintf(grants, 19, "stale", 9)
	pages := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, "CDTokenExpiresSoon CDUserGrant/a/"+n)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		load string
		at   time.Duration
		want []string
	}{
		{"at the session's end, before the refusal", scraped + up, 9*time.Minute + 30*time.Second,
			append(pages("requested"), "CDReauthorizationRequired CDUserGrant/a/quota", "CDReauthorizationRequired CDUserGrant/a/requested")},
		{"4 minutes after the refusal", scraped + up, 14 * time.Minute,
			append(pages("moved", "quota", "requested"), "CDReauthorizationRequired CDUserGrant/a/quota", "CDReauthorizationRequired CDUserGrant/a/requested")},
		{"10 minutes after the refusal", scraped + up, 20 * time.Minute,
			append(pages("moved", "quota", "requested"), "CDReauthorizationRequired CDUserGrant/a/ended", "CDReauthorizationRequired CDUserGrant/a/moved",
				"CDReauthorizationRequired CDUserGrant/a/quota", "CDReauthorizationRequired CDUserGrant/a/requested")},
		{"6 minutes after every replica died", died, 26 * time.Minute, append(pages("moved", "quota", "requested"), "CDCredentialsOperatorDown")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, firing(t, tc.load, tc.at), cmpopts.EquateEmpty(), cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
				t.Errorf("firing at %s (-want +got):\n%s", tc.at, diff)
			}
		})
	}
}

// TestConditionAlertsOutliveAFailoverGap: a failover leaves the per-CR series unpublished
// for a scrape or two (failoverReplicas: two minutes). A firing CDFlowMisuse,
// CDReauthorizationRequired or CDTokenNotIssued whose condition still holds must not
// resolve in that gap: a resolve says "fixed", and the alert would page again after the
// gap, or after its wait started afresh (five more minutes for
// CDReauthorizationRequired). One whose condition was fixed resolves within minutes.
func TestConditionAlertsOutliveAFailoverGap(t *testing.T) {
	const load = failoverReplicas + `
  cdcredops_condition{pod="op-0",kind="CDUserGrant",namespace="a",name="misused",type="FlowMisuse",status="True",reason="UserGrantOnClientCredentials"} 1x9 stale
  cdcredops_condition{pod="op-1",kind="CDUserGrant",namespace="a",name="misused",type="FlowMisuse",status="True",reason="UserGrantOnClientCredentials"} _x12 1x18
  cdcredops_condition{pod="op-0",kind="CDUserGrant",namespace="a",name="acme",type="ReauthorizationRequired",status="True",reason="RefreshTokenRejected"} 1x9 stale
  cdcredops_condition{pod="op-1",kind="CDUserGrant",namespace="a",name="acme",type="ReauthorizationRequired",status="True",reason="RefreshTokenRejected"} _x12 1x18
  cdcredops_condition{pod="op-0",kind="CDCredential",namespace="a",name="pricing",type="Ready",status="False",reason="InvalidClient"} 1x9 stale
  cdcredops_condition{pod="op-1",kind="CDCredential",namespace="a",name="pricing",type="Ready",status="False",reason="InvalidClient"} _x12 1x18
  cdcredops_condition{pod="op-1",kind="CDUserGrant",namespace="a",name="fixed",type="FlowMisuse",status="True",reason="UserGrantOnClientCredentials"} _x12 1x3 stale
  cdcredops_condition{pod="op-1",kind="CDUserGrant",namespace="a",name="fixed",type="FlowMisuse",status="False",reason="FlowCorrect"} _x16 1x13
`
	held := []string{"CDFlowMisuse CDUserGrant/a/misused", "CDReauthorizationRequired CDUserGrant/a/acme"}
	for _, tc := range []struct {
		name string
		at   time.Duration
		want []string
	}{
		{"before the failover", 9 * time.Minute, held},
		{"a minute into the gap", 11 * time.Minute, held},
		{"after the gap", 13 * time.Minute, append([]string{"CDFlowMisuse CDUserGrant/a/fixed"}, held...)},
		{"1 minute after a misuse was fixed", 17 * time.Minute, append([]string{"CDFlowMisuse CDUserGrant/a/fixed"}, held...)},
		{"3 minutes after a misuse was fixed", 19 * time.Minute, held},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, firing(t, load, tc.at), cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
				t.Errorf("firing at %s (-want +got):\n%s", tc.at, diff)
			}
		})
	}
}

// TestTokenNotIssuedOutlivesAFailoverGapOnceFiring: CDTokenNotIssued, firing for a
// credential that never got a token, holds across a failover's two minutes unpublished.
func TestTokenNotIssuedOutlivesAFailoverGapOnceFiring(t *testing.T) {
	// Failing since minute 0, firing from 15; op-0 leads until minute 19, op-1 is
	// scraped as leader from minute 22.
	late := `
  up{job="cd-credentials-operator-metrics",pod="op-0"} 1x19 stale
  up{job="cd-credentials-operator-metrics",pod="op-1"} 1x30
  leader_election_master_status{job="cd-credentials-operator-metrics",pod="op-0",name="l"} 1x19 stale
  leader_election_master_status{job="cd-credentials-operator-metrics",pod="op-1",name="l"} 0x21 1x8
  cdcredops_condition{pod="op-0",kind="CDCredential",namespace="a",name="pricing",type="Ready",status="False",reason="InvalidClient"} 1x19 stale
  cdcredops_condition{pod="op-1",kind="CDCredential",namespace="a",name="pricing",type="Ready",status="False",reason="InvalidClient"} _x22 1x8
`
	want := []string{"CDTokenNotIssued CDCredential/a/pricing"}
	for _, at := range []time.Duration{16 * time.Minute, 21 * time.Minute, 23 * time.Minute} {
		if diff := cmp.Diff(want, firing(t, late, at)); diff != "" {
			t.Errorf("firing at %s, a leader change from minute 20 to 22 (-want +got):\n%s", at, diff)
		}
	}
}

// TestNotInShardFiresForACRNoShardServes: a CR relabelled out of its shard, which the
// manager it left publishes as Ready=Unknown NotInShard, fires CDNotInShard after 5
// minutes; one another shard takes over within a minute does not.
func TestNotInShardFiresForACRNoShardServes(t *testing.T) {
	const load = `
  cdcredops_condition{kind="CDCredential",namespace="a",name="typo",type="Ready",status="True",reason="TokenIssued"} 1x2 stale
  cdcredops_condition{kind="CDCredential",namespace="a",name="typo",type="Ready",status="Unknown",reason="NotInShard"} _x3 1x20
  cdcredops_condition{kind="CDCredential",namespace="a",name="moved",type="Ready",status="Unknown",reason="NotInShard"} _x3 1 stale
  cdcredops_condition{kind="CDCredential",namespace="a",name="moved",type="Ready",status="True",reason="TokenIssued"} _x4 1x20
`
	if got := firing(t, scraped+load, 7*time.Minute); len(got) != 0 {
		t.Errorf("firing after 4 minutes out of every shard: %v, want nothing yet", got)
	}
	want := []string{"CDNotInShard CDCredential/a/typo"}
	if got := firing(t, scraped+load, 9*time.Minute); !slices.Equal(got, want) {
		t.Errorf("firing after 6 minutes: %v, want %v", got, want)
	}
}
