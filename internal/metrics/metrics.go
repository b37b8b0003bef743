// Package metrics holds the operator's Prometheus metrics, on controller-runtime's
// registry (served on --metrics-bind-address). Per-CR series are read from the manager's
// CRs when scraped, so they follow the CRs and cost no memory in between. No label ever
// carries a token, a secret or a client id.
package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

var (
	tokenRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cdcredops_token_requests_total",
		Help: "Token requests sent to identity servers, by CR kind, grant type and result.",
	}, []string{"kind", "grant_type", "result"})
	tokenRequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cdcredops_token_request_duration_seconds",
		Help:    "Duration of token requests.",
		Buckets: prometheus.ExponentialBuckets(0.05, 2, 10),
	}, []string{"kind", "grant_type"})
	rotations = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cdcredops_refresh_token_rotations_total",
		Help: "Refresh tokens rotated and stored.",
	})

	tokenExpiration = prometheus.NewDesc("cdcredops_token_expiration_timestamp_seconds",
		"When the access token in a CR's output Secret expires (Unix seconds).", []string{"kind", "namespace", "name"}, nil)
	tokenRenewal = prometheus.NewDesc("cdcredops_token_renewal_timestamp_seconds",
		"When the operator will renew a CR's access token (Unix seconds).", []string{"kind", "namespace", "name"}, nil)
	condition = prometheus.NewDesc("cdcredops_condition",
		"1 for each current condition of a CR (Ready, FlowMisuse, ReauthorizationRequired) with its status and reason.",
		[]string{"kind", "namespace", "name", "type", "status", "reason"}, nil)
)

func init() {
	metrics.Registry.MustRegister(tokenRequests, tokenRequestDuration, rotations, crs)
}

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

func (c *crCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	sources := make([]Source, 0, len(c.sources))
	for _, s := range c.sources {
		sources = append(sources, s)
	}
	c.mu.Unlock()
	seen := map[[3]string]bool{}
	for _, src := range sources {
		src(func(cr CR) bool {
			key := [3]string{cr.Kind, cr.Namespace, cr.Name}
			if !seen[key] {
				seen[key] = true
				collectCR(ch, cr)
			}
			return true
		})
	}
}

func collectCR(ch chan<- prometheus.Metric, cr CR) {
	for _, typ := range conditionTypes {
		if cur := meta.FindStatusCondition(cr.Conditions, typ); cur != nil {
			ch <- prometheus.MustNewConstMetric(condition, prometheus.GaugeValue, 1, cr.Kind, cr.Namespace, cr.Name, typ, string(cur.Status), cur.Reason)
		}
	}
	if cr.ExpiresAt != nil {
		ch <- prometheus.MustNewConstMetric(tokenExpiration, prometheus.GaugeValue, float64(cr.ExpiresAt.Unix()), cr.Kind, cr.Namespace, cr.Name)
	}
	if cr.RenewalTime != nil {
		ch <- prometheus.MustNewConstMetric(tokenRenewal, prometheus.GaugeValue, float64(cr.RenewalTime.Unix()), cr.Kind, cr.Namespace, cr.Name)
	}
}

var conditionTypes = []string{cdv1.ReadyCondition, cdv1.FlowMisuseCondition, cdv1.ReauthorizationRequiredCondition}

// instrumented counts and times the token requests of one controller.
type instrumented struct {
	tokenclient.Issuer
	kind string
}

func (i instrumented) observe(grantType string, start time.Time, err error) {
	tokenRequestDuration.WithLabelValues(i.kind, grantType).Observe(time.Since(start).Seconds())
	tokenRequests.WithLabelValues(i.kind, grantType, requestResult(err)).Inc()
}

func (i instrumented) ClientCredentials(ctx context.Context, ep tokenclient.Endpoint) (*tokenclient.Token, error) {
	start := time.Now()
	t, err := i.Issuer.ClientCredentials(ctx, ep)
	i.observe("client_credentials", start, err)
	return t, err
}

func (i instrumented) Refresh(ctx context.Context, ep tokenclient.Endpoint, rt string) (*tokenclient.Token, error) {
	start := time.Now()
	t, err := i.Issuer.Refresh(ctx, ep, rt)
	i.observe("refresh_token", start, err)
	return t, err
}

func (i instrumented) Exchange(ctx context.Context, ep tokenclient.Endpoint, code, redirectURL, verifier string) (*tokenclient.Token, error) {
	start := time.Now()
	t, err := i.Issuer.Exchange(ctx, ep, code, redirectURL, verifier)
	i.observe("authorization_code", start, err)
	return t, err
}

// requestResult is the result label: a small fixed set, whatever the server said, so
// refusals are counted by what they mean, whichever provider worded them.
func requestResult(err error) string {
	switch tokenclient.KindOf(err) {
	case "":
		if err == nil {
			return "success"
		}
		return "error"
	case tokenclient.KindInvalidGrant:
		return "invalid_grant"
	case tokenclient.KindInvalidClient:
		return "invalid_client"
	case tokenclient.KindGrantTypeNotAllowed:
		return "unauthorized_client"
	case tokenclient.KindInvalidScope:
		return "invalid_scope"
	case tokenclient.KindRefused:
		return "refused"
	case tokenclient.KindRateLimited:
		return "rate_limited"
	case tokenclient.KindInvalidResponse:
		return "invalid_response"
	}
	return "error"
}

// RotationStored counts a refresh token rotated and stored.
func RotationStored() { rotations.Inc() }

// Instrument wraps an Issuer so its requests are counted and timed under kind.
func Instrument(issuer tokenclient.Issuer, kind string) tokenclient.Issuer {
	return instrumented{Issuer: issuer, kind: kind}
}
