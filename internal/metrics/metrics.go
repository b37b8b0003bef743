// Package metrics holds the operator's Prometheus metrics, on controller-runtime's
// registry (served on --metrics-bind-address). Per-CR series are read from the manager's
// CRs when scraped, so they follow the CRs and cost no memory in between. No label ever
// carries a token, a secret or a client id.
package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

var (
	tokenRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cdcredops_token_requests_total",
		Help: "Token requests to identity servers, by CR kind, grant type and result; one the operator refused before sending (a token host not allowed, a wait for the client-side rate limit given up) counts as result error.",
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
	throttled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cdcredops_token_requests_throttled_total",
		Help: "Passes whose token request was told to wait for its turn, by namespace: the namespace had used its part of the manager's token requests, split among the namespaces asking for them.",
	}, []string{"namespace"})
)

func init() {
	metrics.Registry = withCRs{metrics.Registry}
	metrics.Registry.MustRegister(tokenRequests, tokenRequestDuration, rotations, throttled, reservedNames{})
}

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
	case tokenclient.KindRefused, tokenclient.KindEndpointNotFound:
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

// TokenRequestThrottled counts a pass of namespace whose token request waits for its
// turn (tokenclient.Share). The namespace is the only label: which of its CRs wait, each
// says on its Reconciling condition.
func TokenRequestThrottled(namespace string) { throttled.WithLabelValues(namespace).Inc() }

// Instrument wraps an Issuer so its requests are counted and timed under kind.
func Instrument(issuer tokenclient.Issuer, kind string) tokenclient.Issuer {
	return instrumented{Issuer: issuer, kind: kind}
}
