package manager

import (
	"crypto/tls"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMetricsServerOptions(t *testing.T) {
	for _, tc := range []struct {
		name       string
		opts       Options
		secure     bool
		filtered   bool
		certDir    string
		nextProtos []string // after the TLS options ran; nil: Go's default (h2 allowed)
	}{
		{
			name:       "by default metrics are served over HTTPS to authenticated, authorized callers, HTTP/1.1 only",
			opts:       Options{MetricsBindAddress: ":8443"},
			secure:     true,
			filtered:   true,
			nextProtos: []string{"http/1.1"},
		},
		{
			name:       "a cert dir is handed to the server (self-signed without one)",
			opts:       Options{MetricsBindAddress: ":8443", MetricsCertDir: "/etc/metrics-tls"},
			secure:     true,
			filtered:   true,
			certDir:    "/etc/metrics-tls",
			nextProtos: []string{"http/1.1"},
		},
		{
			name:     "HTTP/2 only when asked for",
			opts:     Options{MetricsBindAddress: ":8443", MetricsHTTP2: true},
			secure:   true,
			filtered: true,
		},
		{
			name: "plain HTTP without authentication only when asked for",
			opts: Options{MetricsBindAddress: ":8080", MetricsPlainHTTP: true},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := metricsServerOptions(tc.opts)
			if got.BindAddress != tc.opts.MetricsBindAddress {
				t.Errorf("bind address %q, want %q", got.BindAddress, tc.opts.MetricsBindAddress)
			}
			if got.SecureServing != tc.secure {
				t.Errorf("SecureServing %v, want %v", got.SecureServing, tc.secure)
			}
			if (got.FilterProvider != nil) != tc.filtered {
				t.Errorf("authentication and authorization filter set: %v, want %v", got.FilterProvider != nil, tc.filtered)
			}
			if got.CertDir != tc.certDir {
				t.Errorf("CertDir %q, want %q", got.CertDir, tc.certDir)
			}
			cfg := &tls.Config{}
			for _, o := range got.TLSOpts {
				o(cfg)
			}
			if diff := cmp.Diff(tc.nextProtos, cfg.NextProtos); diff != "" {
				t.Errorf("ALPN protocols (-want +got):\n%s", diff)
			}
		})
	}
}
