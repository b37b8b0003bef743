package manager

import (
	"crypto/tls"

	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// metricsServerOptions serve metrics the way kubebuilder v4 does: over HTTPS, every
// request authenticated with a TokenReview and authorized with a SubjectAccessReview
// (the scraper needs get on the /metrics non-resource URL, which the chart's
// metrics-reader ClusterRole grants). The certificate comes from MetricsCertDir when it
// holds tls.crt and tls.key (reloaded when they change), else it is self-signed in
// memory. Plain HTTP without authentication only when MetricsPlainHTTP says so.
func metricsServerOptions(opts Options) metricsserver.Options {
	o := metricsserver.Options{BindAddress: opts.MetricsBindAddress}
	if opts.MetricsPlainHTTP {
		return o
	}
	o.SecureServing = true
	o.FilterProvider = filters.WithAuthenticationAndAuthorization
	o.CertDir = opts.MetricsCertDir
	if !opts.MetricsHTTP2 {
		// HTTP/2 stays off unless asked for: the Rapid Reset and Stream Cancellation
		// advisories (CVE-2023-44487, CVE-2023-39325) made HTTP/1.1 kubebuilder's default.
		o.TLSOpts = append(o.TLSOpts, http1Only)
	}
	return o
}

func http1Only(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }
