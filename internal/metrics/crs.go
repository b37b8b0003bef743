package metrics

import (
	"cmp"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

var (
	tokenExpiration = prometheus.NewDesc("cdcredops_token_expiration_timestamp_seconds",
		"When the access token in a CR's output Secret expires (Unix seconds).", []string{"kind", "namespace", "name"}, nil)
	tokenRenewal = prometheus.NewDesc("cdcredops_token_renewal_timestamp_seconds",
		"When the operator will renew a CR's access token (Unix seconds).", []string{"kind", "namespace", "name"}, nil)
	condition = prometheus.NewDesc("cdcredops_condition",
		"1 for each current condition of a CR (Ready, FlowMisuse, ReauthorizationRequired) with its status and reason.",
		[]string{"kind", "namespace", "name", "type", "status", "reason"}, nil)
)

var conditionTypes = [...]string{cdv1.ReadyCondition, cdv1.FlowMisuseCondition, cdv1.ReauthorizationRequiredCondition}

// CR is what the per-CR series say about one CDCredential or CDUserGrant.
type CR struct {
	Kind        string
	Namespace   string
	Name        string
	Conditions  []metav1.Condition
	ExpiresAt   *metav1.Time
	RenewalTime *metav1.Time
}

// Source yields the CRs a manager reconciles, as they are stored.
type Source func(yield func(CR) bool)

// crs publishes the per-CR series at scrape time from the CRs of every source. Kept as
// gauges, they cost the manager some 4 KiB of memory per CR (each series holds its label
// pairs) and a map update per reconcile; read from the manager's cache when scraped,
// they cost nothing in between, and a deleted CR's series go with it.
var crs = &crCollector{sources: map[int]Source{}}

type crCollector struct {
	mu      sync.Mutex
	next    int
	sources map[int]Source
}

// AddSource publishes the per-CR series of the CRs src yields until remove is called.
// Several managers in one process (tests) may yield the same CR: it is published once.
func AddSource(src Source) (remove func()) {
	crs.mu.Lock()
	defer crs.mu.Unlock()
	id := crs.next
	crs.next++
	crs.sources[id] = src
	return func() {
		crs.mu.Lock()
		defer crs.mu.Unlock()
		delete(crs.sources, id)
	}
}

func (c *crCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- tokenExpiration
	ch <- tokenRenewal
	ch <- condition
}

// Collect sends every CR's series. At ten thousand CRs a scrape is some fifty thousand
// series; made with prometheus.MustNewConstMetric each carried its own copy of every
// label pair (22 allocations a series; a scrape took 246 ms, 46 MB and 1.1 million
// allocations, BenchmarkScrape, and the manager's RSS rose from 200 to 330 MiB at the
// first one after a cold start). Here the series of one scrape share their label pairs —
// one per kind, namespace and condition value, one per CR for its name — and a CR's
// series, label lists and name take three allocations. They are sent in the order the
// registry sorts them into, which it then finds in one pass.
func (c *crCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	sources := make([]Source, 0, len(c.sources))
	for _, s := range c.sources {
		sources = append(sources, s)
	}
	c.mu.Unlock()
	var all []CR
	for _, src := range sources {
		src(func(cr CR) bool {
			all = append(all, cr)
			return true
		})
	}
	// By the label values in the order of the label names: kind, name, namespace.
	slices.SortFunc(all, func(a, b CR) int {
		return cmp.Or(strings.Compare(a.Kind, b.Kind), strings.Compare(a.Name, b.Name), strings.Compare(a.Namespace, b.Namespace))
	})
	pairs := labelPairs{}
	for i, cr := range all {
		// Several managers in one process (tests) may yield the same CR.
		if i > 0 && cr.Kind == all[i-1].Kind && cr.Name == all[i-1].Name && cr.Namespace == all[i-1].Namespace {
			continue
		}
		pairs.collect(ch, cr)
	}
}

// labelPairs are the label pairs one scrape shares between series, by name and value.
type labelPairs map[[2]string]*dto.LabelPair

func (p labelPairs) get(name, value string) *dto.LabelPair {
	key := [2]string{name, value}
	lp, ok := p[key]
	if !ok {
		lp = &dto.LabelPair{Name: proto.String(name), Value: proto.String(value)}
		p[key] = lp
	}
	return lp
}

// collect sends cr's series. Label pairs go in the order of their names (kind, name,
// namespace, reason, status, type), which saves the registry a sorted copy of each list.
func (p labelPairs) collect(ch chan<- prometheus.Metric, cr CR) {
	var conds [len(conditionTypes)]*metav1.Condition
	n := 0
	for i, typ := range conditionTypes {
		if conds[i] = meta.FindStatusCondition(cr.Conditions, typ); conds[i] != nil {
			n++
		}
	}
	if cr.ExpiresAt != nil {
		n++
	}
	if cr.RenewalTime != nil {
		n++
	}
	if n == 0 {
		return
	}
	name := &namePair{value: cr.Name}
	name.pair = dto.LabelPair{Name: &nameLabel, Value: &name.value}
	labels := make([]*dto.LabelPair, 0, 3+6*len(conditionTypes))
	labels = append(labels, p.get("kind", cr.Kind), &name.pair, p.get("namespace", cr.Namespace))
	object := labels[:3:3]
	series := make([]gaugeSeries, n)
	k := 0
	add := func(desc *prometheus.Desc, labels []*dto.LabelPair, value float64) {
		s := &series[k]
		s.desc, s.labels, s.value = desc, labels, value
		k++
	}
	order, present := conditionOrder(&conds)
	for _, i := range order[:present] {
		c := conds[i]
		start := len(labels)
		labels = append(labels, object...)
		labels = append(labels, p.get("reason", c.Reason), p.get("status", string(c.Status)), p.get("type", conditionTypes[i]))
		add(condition, labels[start:len(labels):len(labels)], 1)
	}
	if cr.ExpiresAt != nil {
		add(tokenExpiration, object, float64(cr.ExpiresAt.Unix()))
	}
	if cr.RenewalTime != nil {
		add(tokenRenewal, object, float64(cr.RenewalTime.Unix()))
	}
	for i := range series {
		ch <- &series[i]
	}
}

// conditionOrder returns the indexes of the conditions present, in the order of their
// reason, status and type labels, and how many there are.
func conditionOrder(conds *[len(conditionTypes)]*metav1.Condition) (order [len(conditionTypes)]int, present int) {
	for i, c := range conds {
		if c != nil {
			order[present] = i
			present++
		}
	}
	slices.SortFunc(order[:present], func(a, b int) int {
		ca, cb := conds[a], conds[b]
		return cmp.Or(strings.Compare(ca.Reason, cb.Reason), strings.Compare(string(ca.Status), string(cb.Status)), strings.Compare(conditionTypes[a], conditionTypes[b]))
	})
	return order, present
}

var nameLabel = "name"

// namePair is a CR's name label pair with the string it points to, in one allocation.
type namePair struct {
	pair  dto.LabelPair
	value string
}

// gaugeSeries is one gauge series whose label pairs are shared; the registry treats
// them as immutable, and nothing changes them once sent.
type gaugeSeries struct {
	desc   *prometheus.Desc
	labels []*dto.LabelPair
	value  float64
	gauge  dto.Gauge
}

func (s *gaugeSeries) Desc() *prometheus.Desc { return s.desc }

func (s *gaugeSeries) Write(m *dto.Metric) error {
	s.gauge.Value = &s.value
	m.Label, m.Gauge = s.labels, &s.gauge
	return nil
}
