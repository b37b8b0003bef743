// Package metrics holds the operator's Prometheus metrics, on controller-runtime's
// registry (served on --metrics-bind-address). Per-CR series are deleted when the CR is,
// so cardinality follows the number of CRs. No label ever carries a token, a secret or a
// client id.
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
	tokenExpiration = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cdcredops_token_expiration_timestamp_seconds",
		Help: "When the access token in a CR's output Secret expires (Unix seconds).",
	}, []string{"kind", "namespace", "name"})
	tokenRenewal = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cdcredops_token_renewal_timestamp_seconds",
		Help: "When the operator will renew a CR's access token (Unix seconds).",
	}, []string{"kind", "namespace", "name"})
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
	conditionGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cdcredops_condition",
		Help: "1 for each current condition of a CR (Ready, FlowMisuse, ReauthorizationRequired) with its status and reason.",
	}, []string{"kind", "namespace", "name", "type", "status", "reason"})
)

func init() {
	metrics.Registry.MustRegister(tokenExpiration, tokenRenewal, tokenRequests, tokenRequestDuration, rotations, conditionGauge)
}

// published remembers the condition series last set per CR and condition type, so a
// change deletes exactly the old series. (A partial-match delete walks every series of
// every CR: at ten thousand grants it made each reconcile cost O(N).)
var published sync.Map // "kind/namespace/name/type" -> [2]string{status, reason}

// ObserveStatus publishes a CR's conditions and token times after a reconcile.
func ObserveStatus(kind string, obj metav1.Object, conds []metav1.Condition, expires, renew *metav1.Time) {
	ns, name := obj.GetNamespace(), obj.GetName()
	for _, typ := range conditionTypes {
		key := kind + "/" + ns + "/" + name + "/" + typ
		prev, had := published.Load(key)
		cur := meta.FindStatusCondition(conds, typ)
		var now [2]string
		if cur != nil {
			now = [2]string{string(cur.Status), cur.Reason}
		}
		if had && prev.([2]string) != now {
			p := prev.([2]string)
			conditionGauge.DeleteLabelValues(kind, ns, name, typ, p[0], p[1])
		}
		if cur == nil {
			published.Delete(key)
			continue
		}
		conditionGauge.WithLabelValues(kind, ns, name, typ, now[0], now[1]).Set(1)
		published.Store(key, now)
	}
	if expires != nil {
		tokenExpiration.WithLabelValues(kind, ns, name).Set(float64(expires.Unix()))
	}
	if renew != nil {
		tokenRenewal.WithLabelValues(kind, ns, name).Set(float64(renew.Unix()))
	}
}

var conditionTypes = []string{cdv1.ReadyCondition, cdv1.FlowMisuseCondition, cdv1.ReauthorizationRequiredCondition}

// Forget drops a deleted CR's series, each by its exact labels.
func Forget(kind, namespace, name string) {
	for _, typ := range conditionTypes {
		key := kind + "/" + namespace + "/" + name + "/" + typ
		if prev, ok := published.LoadAndDelete(key); ok {
			p := prev.([2]string)
			conditionGauge.DeleteLabelValues(kind, namespace, name, typ, p[0], p[1])
		}
	}
	tokenExpiration.DeleteLabelValues(kind, namespace, name)
	tokenRenewal.DeleteLabelValues(kind, namespace, name)
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
