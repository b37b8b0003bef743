package install

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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
