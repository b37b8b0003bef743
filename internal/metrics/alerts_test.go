package metrics

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/credops/cd-credentials-operator/internal/rotation"
)

// tokenAlert is CDTokenExpiresSoon as config/prometheus ships it (the chart's copy is
// generated from it), read into the thresholds of its expression.
type tokenAlert struct {
	overdue time.Duration // the renewal time passed more than this long ago
	expiry  time.Duration // or it passed and the token expires within this
	window  time.Duration // for:
}

// holds is the alert's expression at now for a CR whose series say the token expires
// at expires and is renewed at renewal.
func (a tokenAlert) holds(now, expires, renewal time.Time) bool {
	return now.Sub(renewal) > a.overdue || (expires.Sub(now) < a.expiry && now.After(renewal))
}

func readTokenAlert(t *testing.T) tokenAlert {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "config", "prometheus", "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		Spec struct {
			Groups []struct {
				Rules []struct {
					Alert string `json:"alert"`
					Expr  string `json:"expr"`
					For   string `json:"for"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &rule); err != nil {
		t.Fatal(err)
	}
	// The test on the series scraped now, then the same test on the latest values any pod
	// published, per CR, for while nothing publishes the series (the engine tests cover when).
	expr := regexp.MustCompile(`^max by \(kind, namespace, name\) \(\s*` +
		`time\(\) - cdcredops_token_renewal_timestamp_seconds > ([0-9]+)\s+` +
		`or \(cdcredops_token_expiration_timestamp_seconds - time\(\) < ([0-9]+) and time\(\) > cdcredops_token_renewal_timestamp_seconds\)\s*\)\s*` +
		`unless on \(kind, namespace, name\) \(\s*cdcredops_condition\{[^}]*\}\s*and on \(kind, namespace, name, reason\) cdcredops_condition\{[^}]*\}\s*\)\s*` +
		`or on \(kind, namespace, name\) \(\s*\(\s*` +
		`time\(\) - max by \(kind, namespace, name\) \(last_over_time\(cdcredops_token_renewal_timestamp_seconds\[[0-9]+m\]\)\) > ([0-9]+)\s+` +
		`or \(\s*max by \(kind, namespace, name\) \(last_over_time\(cdcredops_token_expiration_timestamp_seconds\[[0-9]+m\]\)\) - time\(\) < ([0-9]+)\s+` +
		`and time\(\) > max by \(kind, namespace, name\) \(last_over_time\(cdcredops_token_renewal_timestamp_seconds\[[0-9]+m\]\)\)\s*\)\s*\)\s*` +
		`unless on \(\) \(`)
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert != "CDTokenExpiresSoon" {
				continue
			}
			m := expr.FindStringSubmatch(r.Expr)
			if m == nil {
				t.Fatalf("CDTokenExpiresSoon's expression %q is not the one this test reads", r.Expr)
			}
			if m[1] != m[3] || m[2] != m[4] {
				t.Fatalf("CDTokenExpiresSoon tests the last values scraped (> %s, < %s) otherwise than the series scraped now (> %s, < %s)", m[3], m[4], m[1], m[2])
			}
			overdue, _ := strconv.Atoi(m[1])
			expiry, _ := strconv.Atoi(m[2])
			window, err := time.ParseDuration(r.For)
			if err != nil {
				t.Fatal(err)
			}
			return tokenAlert{time.Duration(overdue) * time.Second, time.Duration(expiry) * time.Second, window}
		}
	}
	t.Fatal("no CDTokenExpiresSoon alert")
	return tokenAlert{}
}

// scheduleCases are the token lifetimes and spec.renewBefore values the README names.
var scheduleCases = map[string]struct{ lifetime, renewBefore time.Duration }{
	"Central Dispatch's 1-hour token, default schedule": {time.Hour, 0},
	// Keycloak (README, Providers) issues 5-minute access tokens by default.
	"Keycloak's default 5-minute token, default schedule": {5 * time.Minute, 0},
	// Entra ID's and Okta's shortest configurable lifetimes.
	"a 10-minute token, default schedule": {10 * time.Minute, 0},
	// The README: renewBefore is honoured down to 2 minutes (kubelet's refresh).
	"a 1-hour token with spec.renewBefore 2m, the documented minimum": {time.Hour, 2 * time.Minute},
	"a 1-hour token with spec.renewBefore 5m":                         {time.Hour, 5 * time.Minute},
	// No usable expires_in: the operator assumes rotation.FallbackLifetime.
	"a token endpoint that gives no expires_in": {0, 0},
}

// seen is how late Prometheus sees a renewal done on schedule: the request and the
// status patch, then up to a scrape interval (30 s) before the new series is scraped.
const seen = 45 * time.Second

// The critical CDTokenExpiresSoon says a token was not renewed. A CR renewed on the
// schedule rotation.Plan sets (as late as 2 minutes before expiry) must never hold its
// condition for the whole `for:` window, or the page fires at every renewal of a CR
// nothing is wrong with (it did: "expires within 5 minutes" held for up to 3 minutes
// before each renewal of Keycloak's 5-minute tokens).
func TestTokenExpiresSoonDoesNotFireForATokenRenewedOnSchedule(t *testing.T) {
	alert := readTokenAlert(t)
	start := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for name, tc := range scheduleCases {
		t.Run(name, func(t *testing.T) {
			for seed := range 50 {
				s, _ := rotation.Plan(start, tc.lifetime, tc.renewBefore, strconv.Itoa(seed))
				var held time.Duration
				// Three renewals in a row, each seen late by `seen`.
				for now, renewals := start, 0; renewals < 3; now = now.Add(time.Second) {
					if !now.Before(s.RenewAt.Add(seen)) {
						s, _ = rotation.Plan(s.RenewAt, tc.lifetime, tc.renewBefore, strconv.Itoa(seed))
						renewals++
					}
					if !alert.holds(now, s.ExpiresAt, s.RenewAt) {
						held = 0
						continue
					}
					if held += time.Second; held >= alert.window {
						t.Fatalf("seed %d: a CR renewed on schedule (seen %s late) holds CDTokenExpiresSoon's condition for %s at %s (token expires %s, renewal %s): the critical alert fires on a healthy CR",
							seed, seen, held, now.Format(time.TimeOnly), s.ExpiresAt.Format(time.TimeOnly), s.RenewAt.Format(time.TimeOnly))
					}
				}
			}
		})
	}
}

// A CR whose renewal fails keeps the series of the token in its Secret: the alert must
// fire within a few minutes of the missed renewal, and never later than the token's
// expiry plus a minute.
func TestTokenExpiresSoonFiresForAMissedRenewal(t *testing.T) {
	alert := readTokenAlert(t)
	start := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for name, tc := range scheduleCases {
		t.Run(name, func(t *testing.T) {
			for seed := range 50 {
				s, _ := rotation.Plan(start, tc.lifetime, tc.renewBefore, strconv.Itoa(seed))
				var held time.Duration
				now := start
				for ; held < alert.window; now = now.Add(time.Second) {
					if alert.holds(now, s.ExpiresAt, s.RenewAt) {
						held += time.Second
					} else {
						held = 0
					}
				}
				if late := now.Sub(s.RenewAt); late > 3*time.Minute+time.Second {
					t.Errorf("seed %d: the alert fires %s after the missed renewal, more than 3 minutes", seed, late)
				}
				if now.After(s.ExpiresAt.Add(time.Minute)) {
					t.Errorf("seed %d: the alert fires %s after the token expired", seed, now.Sub(s.ExpiresAt))
				}
			}
		})
	}
}
