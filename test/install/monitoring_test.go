package install

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/prometheus/promql/parser"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/credops/cd-credentials-operator/internal/metrics"
)

// targetLabels are the labels the Prometheus Operator puts on every target of a
// ServiceMonitor, read from its config generator (pkg/prometheus/promcfg.go, "Relabel
// namespace and pod and service labels into proper labels"), plus job and instance,
// which Prometheus itself sets. With honor_labels false (the ServiceMonitor default) a
// scraped label of the same name is renamed exported_<name> and the target's value wins.
func targetLabels(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(moduleDir(t, prometheusOperatorModule, prometheusOperatorVersion), "pkg", "prometheus", "promcfg.go"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`\{Key: "source_labels", Value: \[\]string\{"__meta_kubernetes_namespace"\}\},\s*\{Key: "target_label", Value: "(\w+)"\}`).FindSubmatch(src)
	if m == nil {
		t.Fatal("promcfg.go no longer relabels __meta_kubernetes_namespace: update this test")
	}
	return []string{string(m[1]), "pod", "service", "container", "endpoint", "job", "instance"}
}

// TestScrapedPerCRSeriesKeepTheCRsNamespace: the per-CR series label a CR's namespace
// "namespace", which is also the label the Prometheus Operator sets on every target to
// the namespace of the scraped pod. Unless the ServiceMonitor honors the scraped labels,
// Prometheus stores the CR's namespace as exported_namespace and namespace becomes the
// operator's own: every alert then says `kubectl -n cd-credentials-operator describe
// CDUserGrant acme` for a grant of team-a, and Alertmanager routes every tenant's alert
// by the operator's namespace (the PrometheusRule's alerts name {{ $labels.namespace }}).
func TestScrapedPerCRSeriesKeepTheCRsNamespace(t *testing.T) {
	remove := metrics.AddSource(func(yield func(metrics.CR) bool) {
		now := metav1.Now()
		yield(metrics.CR{Kind: "CDUserGrant", Namespace: "team-a", Name: "acme", ExpiresAt: &now, RenewalTime: &now,
			Conditions: []metav1.Condition{{Type: "Ready", Status: "True", Reason: "TokenIssued"}}})
	})
	defer remove()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string][]string{} // label -> families
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "cdcredops_") {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if !slices.Contains(exported[l.GetName()], f.GetName()) {
					exported[l.GetName()] = append(exported[l.GetName()], f.GetName())
				}
			}
		}
	}
	reserved := targetLabels(t)

	for _, tc := range []struct {
		name string
		objs func(t *testing.T) []*unstructured.Unstructured
	}{
		{"the chart", func(t *testing.T) []*unstructured.Unstructured {
			return helmTemplate(t, "cd", "cd-system", allFeaturesValues)
		}},
		{"config/prometheus", func(t *testing.T) []*unstructured.Unstructured { return kustomizeBuild(t, "config/prometheus") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := tc.objs(t)
			sms := only(objs, "ServiceMonitor")
			if len(sms) != 1 {
				t.Fatalf("%d ServiceMonitors", len(sms))
			}
			endpoints, _, _ := unstructured.NestedSlice(sms[0].Object, "spec", "endpoints")
			for _, ep := range endpoints {
				if honor, _ := ep.(map[string]any)["honorLabels"].(bool); honor {
					continue
				}
				for _, l := range reserved {
					if fams := exported[l]; len(fams) > 0 {
						t.Errorf("ServiceMonitor %s has no honorLabels, but %v carry the label %q, which the Prometheus Operator sets on the target: Prometheus keeps the CR's %s as exported_%s", sms[0].GetName(), fams, l, l, l)
					}
				}
			}
		})
	}
}

// ruleJobs returns the job matchers of every rule expression of the PrometheusRules
// among objs.
func ruleJobs(t *testing.T, objs []*unstructured.Unstructured) []string {
	t.Helper()
	rules := only(objs, "PrometheusRule")
	if len(rules) != 1 {
		t.Fatalf("%d PrometheusRules", len(rules))
	}
	groups, _, _ := unstructured.NestedSlice(rules[0].Object, "spec", "groups")
	p := parser.NewParser(parser.Options{})
	var jobs []string
	for _, g := range groups {
		rs, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
		for _, r := range rs {
			src, _ := r.(map[string]any)["expr"].(string)
			expr, err := p.ParseExpr(src)
			if err != nil {
				t.Fatalf("%q: %v", src, err)
			}
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				if vs, ok := n.(*parser.VectorSelector); ok {
					for _, m := range vs.LabelMatchers {
						if m.Name == "job" {
							jobs = append(jobs, m.Type.String()+m.Value)
						}
					}
				}
				return nil
			})
		}
	}
	return jobs
}

// scrapedJob returns the job the ServiceMonitor's targets get: the name of the one
// Service among objs it selects by label and scrapes by port name (the Prometheus
// Operator names the job after it, as the ServiceMonitor sets no jobLabel), or the
// replacement of a relabeling of job.
func scrapedJob(t *testing.T, monitor *unstructured.Unstructured, objs []*unstructured.Unstructured) string {
	t.Helper()
	if l, _, _ := unstructured.NestedString(monitor.Object, "spec", "jobLabel"); l != "" {
		t.Fatalf("ServiceMonitor %s sets jobLabel %q: its targets' job is not the Service's name", monitor.GetName(), l)
	}
	selector, _, _ := unstructured.NestedStringMap(monitor.Object, "spec", "selector", "matchLabels")
	endpoints, _, _ := unstructured.NestedSlice(monitor.Object, "spec", "endpoints")
	var found []string
	for _, svc := range only(objs, "Service") {
		if !labels.SelectorFromSet(selector).Matches(labels.Set(svc.GetLabels())) {
			continue
		}
		ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
		for _, port := range ports {
			if port.(map[string]any)["name"] == endpoints[0].(map[string]any)["port"] {
				found = append(found, svc.GetName())
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("the ServiceMonitor scrapes the Services %v, want one", found)
	}
	relabelings, _, _ := unstructured.NestedSlice(endpoints[0].(map[string]any), "relabelings")
	for _, r := range relabelings {
		if r := r.(map[string]any); r["targetLabel"] == "job" {
			return r["replacement"].(string) // a relabeling names the job
		}
	}
	return found[0]
}

// TestTheOperatorDownAlertWatchesTheScrapedJob: CDCredentialsOperatorDown, and
// CDTokenExpiresSoon while nothing publishes, select the operator's targets by job, the
// name of the metrics Service the ServiceMonitor scrapes. A job named otherwise would
// fire CDCredentialsOperatorDown for ever beside a healthy operator (or, with a
// pattern, let another install's targets hide a dead one).
func TestTheOperatorDownAlertWatchesTheScrapedJob(t *testing.T) {
	for _, tc := range []struct {
		name string
		objs func(t *testing.T) []*unstructured.Unstructured
		job  string // empty: the Service the one ServiceMonitor scrapes
	}{
		{"config/prometheus beside config/default", func(t *testing.T) []*unstructured.Unstructured {
			return append(kustomizeBuild(t, "config/default"), kustomizeBuild(t, "config/prometheus")...)
		}, ""},
		{"config/prometheus-exported-namespace beside config/default", func(t *testing.T) []*unstructured.Unstructured {
			return append(kustomizeBuild(t, "config/default"), kustomizeBuild(t, "config/prometheus-exported-namespace")...)
		}, ""},
		{"the chart, release cd-credentials-operator", func(t *testing.T) []*unstructured.Unstructured {
			return helmTemplateSet(t, "cd-credentials-operator", "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true")
		}, ""},
		{"the chart, release creds", func(t *testing.T) []*unstructured.Unstructured {
			return helmTemplateSet(t, "creds", "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true")
		}, ""},
		{"the chart, a fullnameOverride", func(t *testing.T) []*unstructured.Unstructured {
			return helmTemplateSet(t, "creds", "fullnameOverride=pricing-creds", "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true")
		}, ""},
		{"the chart, the all-features values (a relabeling names the job)", func(t *testing.T) []*unstructured.Unstructured {
			return helmTemplate(t, "cd", "cd-system", allFeaturesValues)
		}, ""},
		{"the chart, metrics.prometheusRule.job for a scrape config of one's own", func(t *testing.T) []*unstructured.Unstructured {
			return helmTemplateSet(t, "creds", "metrics.service.enabled=false", "metrics.prometheusRule.enabled=true", "metrics.prometheusRule.job=creds")
		}, "creds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := tc.objs(t)
			job := tc.job
			if job == "" {
				sms := only(objs, "ServiceMonitor")
				if len(sms) != 1 {
					t.Fatalf("%d ServiceMonitors", len(sms))
				}
				job = scrapedJob(t, sms[0], objs)
			}
			jobs := ruleJobs(t, objs)
			if len(jobs) == 0 {
				t.Fatal("no rule selects the operator's scrape job")
			}
			for _, got := range jobs {
				if got != "="+job {
					t.Errorf("a rule selects job%s, want job=%q (the scraped metrics Service)", got, job)
				}
			}
		})
	}
}

// helmTemplateSet renders the chart as release in namespace cd-system with --set values.
func helmTemplateSet(t *testing.T, release string, set ...string) []*unstructured.Unstructured {
	t.Helper()
	args := []string{"template", release, chartDir, "--namespace", "cd-system"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return objects(t, run(t, helm(t), args...))
}

// TestTheChartWarnsWhenPrometheusCannotScrape: the chart's metrics.readerSubjects is
// empty by default, and the endpoint refuses (403) whoever is not allowed to get
// /metrics. A ServiceMonitor or PrometheusRule turned on without binding Prometheus
// gets no metric at all; the release notes say so (a binding of one's own is legitimate,
// so the chart does not refuse). The notes name who must be bound: with
// metrics.serviceMonitor.tokenSecret the ServiceMonitor presents that Secret's token, not
// Prometheus's own, and they said to bind Prometheus's ServiceAccount; they also said
// CDCredentialsOperatorDown would fire when the chart created no alert at all.
func TestTheChartWarnsWhenPrometheusCannotScrape(t *testing.T) {
	const warning = "WARNING: metrics.readerSubjects is empty"
	const (
		// Who is to be bound.
		ownToken    = "Prometheus's own ServiceAccount, whose token the ServiceMonitor presents"
		secretToken = "the ServiceMonitor presents: the one of the Secret cd-system/cd-metrics-scraper-token"
		ownScrape   = "the ServiceAccount whose token your scrape config presents"
		prometheus  = "Prometheus's"          // any mention of Prometheus's ServiceAccount
		stack       = "kube-prometheus-stack" // the name of Prometheus's ServiceAccount there
		monitor     = "ServiceMonitor"
		// What a refused scrape costs.
		alertsDown   = "No per-CR alert can fire then, and CDCredentialsOperatorDown fires instead"
		operatorDown = "CDCredentialsOperatorDown"
		noMetrics    = "Prometheus then gets none of the operator's metrics"
	)
	bound := []string{"metrics.readerSubjects[0].kind=ServiceAccount", "metrics.readerSubjects[0].name=prometheus-k8s", "metrics.readerSubjects[0].namespace=monitoring"}
	tokenSecret := "metrics.serviceMonitor.tokenSecret.name=cd-metrics-scraper-token"
	for _, tc := range []struct {
		name string
		set  []string
		want []string // in the warning; nil: no warning
		not  []string // not in it
	}{
		{"a ServiceMonitor, nobody bound", []string{"metrics.serviceMonitor.enabled=true"},
			[]string{warning, ownToken, stack, noMetrics}, []string{secretToken, operatorDown}},
		{"a PrometheusRule, nobody bound", []string{"metrics.prometheusRule.enabled=true"},
			[]string{warning, ownScrape, alertsDown}, []string{prometheus, stack, monitor}},
		{"both, nobody bound", []string{"metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true"},
			[]string{warning, ownToken, stack, alertsDown}, []string{secretToken, noMetrics}},
		{"a ServiceMonitor presenting a Secret's token, nobody bound", []string{"metrics.serviceMonitor.enabled=true", tokenSecret},
			[]string{warning, secretToken, noMetrics}, []string{prometheus, stack, operatorDown}},
		{"both, the ServiceMonitor presenting a Secret's token, nobody bound", []string{"metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true", tokenSecret},
			[]string{warning, secretToken, alertsDown}, []string{prometheus, stack, noMetrics}},
		{"a ServiceMonitor without the metrics Service it scrapes, and a PrometheusRule", []string{"metrics.serviceMonitor.enabled=true", "metrics.service.enabled=false", "metrics.prometheusRule.enabled=true"},
			[]string{warning, ownScrape, alertsDown}, []string{prometheus, stack, monitor}},
		{"a ServiceMonitor, Prometheus bound", append([]string{"metrics.serviceMonitor.enabled=true"}, bound...), nil, nil},
		{"a ServiceMonitor presenting a Secret's token, its ServiceAccount bound", append([]string{"metrics.serviceMonitor.enabled=true", tokenSecret}, bound...), nil, nil},
		{"a ServiceMonitor, plain HTTP", []string{"metrics.serviceMonitor.enabled=true", "metrics.secure=false"}, nil, nil},
		{"neither monitoring object", nil, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"install", "cd", chartDir, "--namespace", "cd-system", "--dry-run=client"}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			_, notes, _ := strings.Cut(string(run(t, helm(t), args...)), "\nNOTES:\n")
			// The notes wrap lines; the phrases are checked as one line of words, in the
			// warning alone.
			_, warned, found := strings.Cut(strings.Join(strings.Fields(notes), " "), warning)
			if found != (tc.want != nil) {
				t.Fatalf("the notes warn: %v, want %v:\n%s", found, tc.want != nil, notes)
			}
			warned = warning + warned
			for _, w := range tc.want {
				if !strings.Contains(warned, w) {
					t.Errorf("the warning lacks %q:\n%s", w, notes)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(warned, w) {
					t.Errorf("the warning says %q, which is not so here:\n%s", w, notes)
				}
			}
		})
	}
}

// TestThePerCRAlertsNameTheCRsNamespaceWherePrometheusKeepsIt: OpenShift's user-workload
// monitoring overrides honorLabels and enforces namespace = the target's, keeping the
// CR's namespace only in exported_namespace. Alerts grouped by, and naming, namespace
// would all say the operator's namespace there (`kubectl -n cd-credentials-operator
// describe CDUserGrant acme` for team-a's grant), and two tenants' CRs of one name would
// be one alert. metrics.prometheusRule.namespaceLabel puts the label the CR's namespace
// is in into every per-CR rule: what they group and match by, and what their words name.
// Kustomize users had no such choice but to edit config/prometheus's rules by hand;
// config/prometheus-exported-namespace is config/prometheus with exported_namespace.
func TestThePerCRAlertsNameTheCRsNamespaceWherePrometheusKeepsIt(t *testing.T) {
	chart := func(set ...string) func(t *testing.T) []*unstructured.Unstructured {
		return func(t *testing.T) []*unstructured.Unstructured {
			return helmTemplateSet(t, "cd", append([]string{"metrics.prometheusRule.enabled=true"}, set...)...)
		}
	}
	overlay := func(dir string) func(t *testing.T) []*unstructured.Unstructured {
		return func(t *testing.T) []*unstructured.Unstructured { return kustomizeBuild(t, dir) }
	}
	for _, tc := range []struct {
		name       string
		objs       func(t *testing.T) []*unstructured.Unstructured
		want, not  string
		perCRRules int
	}{
		{"the chart, by default, namespace", chart(), "namespace", "exported_namespace", 5},
		{"the chart on OpenShift's user-workload monitoring, exported_namespace", chart("metrics.prometheusRule.namespaceLabel=exported_namespace"), "exported_namespace", "namespace", 5},
		{"config/prometheus, namespace", overlay("config/prometheus"), "namespace", "exported_namespace", 5},
		{"config/prometheus-exported-namespace, exported_namespace", overlay("config/prometheus-exported-namespace"), "exported_namespace", "namespace", 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := tc.objs(t)
			rules := only(objs, "PrometheusRule")
			if len(rules) != 1 {
				t.Fatalf("%d PrometheusRules", len(rules))
			}
			groups, _, _ := unstructured.NestedSlice(rules[0].Object, "spec", "groups")
			perCR := 0
			for _, g := range groups {
				rs, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
				for _, r := range rs {
					r := r.(map[string]any)
					alert, _ := r["alert"].(string)
					words := ""
					if a, ok := r["annotations"].(map[string]any); ok {
						for _, v := range a {
							words += v.(string) + "\n"
						}
					}
					labels := exprLabels(t, r["expr"].(string))
					if !strings.Contains(words, "$labels.name") && !slices.Contains(labels, "name") {
						continue // not a per-CR rule
					}
					perCR++
					if slices.Contains(labels, tc.not) || strings.Contains(words, "$labels."+tc.not+" ") || strings.Contains(words, "$labels."+tc.not+"\n") {
						t.Errorf("%s groups, matches or names %q (expr labels %v; %q), want %q alone", alert, tc.not, labels, words, tc.want)
					}
					if strings.Contains(words, "$labels.name") && !strings.Contains(words, "$labels."+tc.want) {
						t.Errorf("%s names a CR without its namespace ($labels.%s): %q", alert, tc.want, words)
					}
					if slices.Contains(labels, "name") && !slices.Contains(labels, tc.want) {
						t.Errorf("%s groups by the CR's name but not by %s: %v", alert, tc.want, labels)
					}
				}
			}
			if perCR != tc.perCRRules {
				t.Errorf("%d per-CR rules, want %d", perCR, tc.perCRRules)
			}
		})
	}
}

// TestTheExportedNamespaceOverlayAlertsAsTheChart: config/prometheus-exported-namespace
// and the chart with metrics.prometheusRule.namespaceLabel=exported_namespace (for the
// release whose metrics job is install.yaml's) alert alike, rule for rule, and so do
// config/prometheus and the chart's default: both overlays follow config/prometheus by
// `make chart`, never by hand.
func TestTheExportedNamespaceOverlayAlertsAsTheChart(t *testing.T) {
	groups := func(t *testing.T, objs []*unstructured.Unstructured) []any {
		t.Helper()
		rules := only(objs, "PrometheusRule")
		if len(rules) != 1 {
			t.Fatalf("%d PrometheusRules", len(rules))
		}
		g, _, _ := unstructured.NestedSlice(rules[0].Object, "spec", "groups")
		return g
	}
	for _, tc := range []struct {
		overlay string
		set     []string
	}{
		{"config/prometheus", nil},
		{"config/prometheus-exported-namespace", []string{"metrics.prometheusRule.namespaceLabel=exported_namespace"}},
	} {
		t.Run(tc.overlay, func(t *testing.T) {
			chart := helmTemplateSet(t, "cd-credentials-operator", append([]string{"metrics.prometheusRule.enabled=true"}, tc.set...)...)
			if diff := cmp.Diff(groups(t, chart), groups(t, kustomizeBuild(t, tc.overlay))); diff != "" {
				t.Errorf("rule groups (-chart +%s); run make chart:\n%s", tc.overlay, diff)
			}
		})
	}
}

// exprLabels are the labels a rule expression groups by (by, without), matches on (on,
// ignoring) or selects by (a matcher), each once.
func exprLabels(t *testing.T, src string) []string {
	t.Helper()
	expr, err := parser.NewParser(parser.Options{}).ParseExpr(src)
	if err != nil {
		t.Fatalf("%q: %v", src, err)
	}
	var out []string
	add := func(ls ...string) {
		for _, l := range ls {
			if !slices.Contains(out, l) {
				out = append(out, l)
			}
		}
	}
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.AggregateExpr:
			add(n.Grouping...)
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				add(n.VectorMatching.MatchingLabels...)
			}
		case *parser.VectorSelector:
			for _, m := range n.LabelMatchers {
				if m.Name != "__name__" {
					add(m.Name)
				}
			}
		}
		return nil
	})
	return out
}
