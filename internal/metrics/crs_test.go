package metrics

import (
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// fleet is n grants over four namespaces, each with the three published conditions, an
// expiry and a renewal time: five series a grant, as a scrape of a healthy fleet sees,
// in no particular order, as the cache lists them.
func fleet(n int) []CR {
	at := metav1.NewTime(time.Unix(1800000000, 0))
	crs := make([]CR, n)
	for i := range crs {
		crs[i] = CR{Kind: "CDUserGrant", Namespace: fmt.Sprintf("team-%d", i%4), Name: fmt.Sprintf("grant-%05d", i), ExpiresAt: &at, RenewalTime: &at,
			Conditions: []metav1.Condition{
				{Type: cdv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: cdv1.TokenIssuedReason},
				{Type: cdv1.FlowMisuseCondition, Status: metav1.ConditionFalse, Reason: "FlowMatches"},
				{Type: cdv1.ReauthorizationRequiredCondition, Status: metav1.ConditionFalse, Reason: "RefreshTokenValid"},
			}}
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(n, func(i, j int) { crs[i], crs[j] = crs[j], crs[i] })
	return crs
}

func source(crs []CR) Source {
	return func(yield func(CR) bool) {
		for _, cr := range crs {
			if !yield(cr) {
				return
			}
		}
	}
}

// constMetrics is the straightforward collector the shared label pairs replace: one
// prometheus.MustNewConstMetric per series.
type constMetrics []CR

func (c constMetrics) Describe(ch chan<- *prometheus.Desc) { reservedNames{}.Describe(ch) }

func (c constMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, cr := range c {
		for _, typ := range conditionTypes {
			for _, cond := range cr.Conditions {
				if cond.Type == typ {
					ch <- prometheus.MustNewConstMetric(condition, prometheus.GaugeValue, 1, cr.Kind, cr.Namespace, cr.Name, typ, string(cond.Status), cond.Reason)
				}
			}
		}
		if cr.ExpiresAt != nil {
			ch <- prometheus.MustNewConstMetric(tokenExpiration, prometheus.GaugeValue, float64(cr.ExpiresAt.Unix()), cr.Kind, cr.Namespace, cr.Name)
		}
		if cr.RenewalTime != nil {
			ch <- prometheus.MustNewConstMetric(tokenRenewal, prometheus.GaugeValue, float64(cr.RenewalTime.Unix()), cr.Kind, cr.Namespace, cr.Name)
		}
	}
}

// exposition is the text a scrape of c's series through a pedantic registry serves.
func exposition(t testing.TB, c prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return text(t, families)
}

func text(t testing.TB, families []*dto.MetricFamily) string {
	t.Helper()
	var b strings.Builder
	for _, f := range families {
		if _, err := expfmt.MetricFamilyToText(&b, f); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func TestTheFamiliesExposeWhatConstMetricsWould(t *testing.T) {
	crs := fleet(6)
	crs[1].Conditions = crs[1].Conditions[:1] // Ready alone
	crs[2].Conditions, crs[2].ExpiresAt = nil, nil
	crs[3] = CR{Kind: "CDCredential", Namespace: "team-0", Name: "pricing"} // no series at all
	crs[4].Kind = "CDCredential"
	crs[5].Conditions = append([]metav1.Condition{{Type: "SomethingElse", Status: metav1.ConditionTrue, Reason: "NotPublished"}}, crs[5].Conditions...)
	c := &crSources{sources: map[int]Source{0: source(crs)}}
	want := exposition(t, constMetrics(crs))
	if diff := cmp.Diff(want, text(t, c.families())); diff != "" {
		t.Errorf("exposition (-const metrics through a pedantic registry +families):\n%s", diff)
	}
	for _, none := range []*crSources{{sources: map[int]Source{}}, {sources: map[int]Source{0: source(crs[3:4])}}} {
		if got := none.families(); len(got) != 0 {
			t.Errorf("families without a series: %v", got)
		}
	}
}

// TestTheRegistryServesThePerCRFamiliesInNameOrder checks the registry the metrics
// endpoint serves: the per-CR families among the registered ones, sorted by name as the
// registry sorts its own, and their names kept from any other registration.
func TestTheRegistryServesThePerCRFamiliesInNameOrder(t *testing.T) {
	remove := AddSource(source(fleet(2)))
	defer remove()
	reg := withCRs{prometheus.NewPedanticRegistry()}
	reg.MustRegister(reservedNames{},
		prometheus.NewCounter(prometheus.CounterOpts{Name: "a_total", Help: "a"}),
		prometheus.NewCounter(prometheus.CounterOpts{Name: "cdcredops_d_total", Help: "d"}),
		prometheus.NewCounter(prometheus.CounterOpts{Name: "z_total", Help: "z"}))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
	}
	want := []string{"a_total", conditionName, "cdcredops_d_total", expirationName, renewalName, "z_total"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("families (-want +got):\n%s", diff)
	}
	taken := prometheus.NewGauge(prometheus.GaugeOpts{Name: conditionName, Help: "another"})
	if err := reg.Register(taken); err == nil {
		t.Errorf("registering another %s was accepted", conditionName)
	}
}

// TestAScrapeAllocatesLittlePerCR bounds what building the per-CR families allocates per
// CR. Built with prometheus.MustNewConstMetric, the five series of a grant took 110
// allocations and a scrape of ten thousand grants 51 MB; gathered through the registry as
// a Collector, 12.
func TestAScrapeAllocatesLittlePerCR(t *testing.T) {
	const n = 1000
	c := &crSources{sources: map[int]Source{0: source(fleet(n))}}
	allocs := testing.AllocsPerRun(3, func() { c.families() })
	if perCR := allocs / n; perCR > 4 {
		t.Errorf("a scrape allocates %.1f times per CR, want at most 4", perCR)
	}
}

// BenchmarkScrape builds and encodes the per-CR series of ten thousand grants, as a
// Prometheus scrape of the manager does, and does the same with the const metrics they
// replaced, gathered through a registry.
func BenchmarkScrape(b *testing.B) {
	grants := fleet(10000)
	encode := func(b *testing.B, families []*dto.MetricFamily) {
		for _, f := range families {
			if _, err := expfmt.MetricFamilyToText(io.Discard, f); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("families", func(b *testing.B) {
		c := &crSources{sources: map[int]Source{0: source(grants)}}
		b.ReportAllocs()
		for b.Loop() {
			encode(b, c.families())
		}
	})
	b.Run("const-metrics", func(b *testing.B) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(constMetrics(grants))
		b.ReportAllocs()
		for b.Loop() {
			families, err := reg.Gather()
			if err != nil {
				b.Fatal(err)
			}
			encode(b, families)
		}
	})
}
