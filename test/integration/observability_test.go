package integration

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// series returns the metric families' series whose labels include want.
func series(t *testing.T, name string, want map[string]string) []*dto.Metric {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []*dto.Metric
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			out = append(out, m)
		}
	}
	return out
}

func TestMetricsFollowTheCRsAndAreRemovedWithThem(t *testing.T) {
	f := newGrantFixture(t, 2*time.Second)
	startManager(t, f.opts)
	f.addGrant("acme")
	eventually(t, 20*time.Second, "2 rotations", f.rotations("acme", 2))
	id := map[string]string{"kind": "CDUserGrant", "namespace": f.ns, "name": "acme"}
	ready := map[string]string{"kind": "CDUserGrant", "namespace": f.ns, "name": "acme", "type": "Ready", "status": "True", "reason": cdv1.TokenIssuedReason}
	eventually(t, 5*time.Second, "condition and expiry series", func() error {
		if len(series(t, "cdcredops_condition", ready)) != 1 {
			return fmt.Errorf("no Ready condition series")
		}
		if len(series(t, "cdcredops_token_expiration_timestamp_seconds", id)) != 1 || len(series(t, "cdcredops_token_renewal_timestamp_seconds", id)) != 1 {
			return fmt.Errorf("no expiry or renewal series")
		}
		return nil
	})
	if len(series(t, "cdcredops_token_requests_total", map[string]string{"kind": "CDUserGrant", "grant_type": "refresh_token", "result": "success"})) != 1 {
		t.Errorf("no token request counter")
	}
	g, _ := getGrant(f.ns, "acme")
	if err := k8s.Delete(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "series removed with the CR", func() error {
		for _, name := range []string{"cdcredops_condition", "cdcredops_token_expiration_timestamp_seconds", "cdcredops_token_renewal_timestamp_seconds"} {
			if n := len(series(t, name, id)); n != 0 {
				return fmt.Errorf("%d %s series left", n, name)
			}
		}
		return nil
	})
}

// encodings are the forms a secret takes on its way through an API request or response
// body, a header or a URL.
func encodings(s string) map[string]string {
	return map[string]string{
		"raw":          s,
		"in base64":    base64.StdEncoding.EncodeToString([]byte(s)),
		"in base64url": base64.RawURLEncoding.EncodeToString([]byte(s)),
		"in hex":       hex.EncodeToString([]byte(s)),
		"URL-escaped":  url.QueryEscape(s),
	}
}

// TestNoSecretLeavesTheOperator runs rotations and misuse at the highest log verbosity
// the --zap-log-level flag accepts (where client-go would log request and response
// bodies) and searches every log line, event, status and metric for the secrets
// involved, raw and encoded.
func TestNoSecretLeavesTheOperator(t *testing.T) {
	f := newGrantFixture(t, 2*time.Second)
	startManager(t, f.opts)
	secrets := []string{loginClientSecret, apiClientSecret}
	rt := f.idp.SeedGrant(loginClientID, "acme", []string{"offline_access"})
	secrets = append(secrets, rt)
	create(t, refreshSecret(f.ns, "acme-refresh", rt))
	create(t, userGrant(f.ns, "acme", "login", "acme-refresh"))
	create(t, refreshSecret(f.ns, "dead-refresh", "dead-refresh-token-value"))
	create(t, userGrant(f.ns, "dead", "login", "dead-refresh"))
	secrets = append(secrets, "dead-refresh-token-value")
	create(t, clientSecret(f.ns, "misused-client", loginClientID, loginClientSecret))
	create(t, credential(f.ns, "misused", cdv1.FlowClientCredentials, "misused-client", f.idp.URL))
	eventually(t, 30*time.Second, "rotations, a rejection and a misuse", func() error {
		if err := f.rotations("acme", 4)(); err != nil {
			return err
		}
		if err := grantCondition(f.ns, "dead", cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenRejectedReason)(); err != nil {
			return err
		}
		return credentialCondition(f.ns, "misused", cdv1.FlowMisuseCondition, metav1.ConditionTrue, cdv1.GrantTypeNotAllowedReason)()
	})
	// The grant's current refresh and access tokens.
	rs, _ := getSecret(f.ns, "acme-refresh")
	ts, _ := getSecret(f.ns, "acme-token")
	secrets = append(secrets, string(rs.Data["refresh_token"]), string(ts.Data[cdv1.AccessTokenKey]))

	var haystacks []string
	haystacks = append(haystacks, logSink.String())
	evs := &eventsv1.EventList{}
	if err := k8s.List(context.Background(), evs, client.InNamespace(f.ns)); err != nil {
		t.Fatal(err)
	}
	if len(evs.Items) == 0 {
		t.Fatal("no events recorded")
	}
	for _, e := range evs.Items {
		haystacks = append(haystacks, e.Note, e.Reason)
	}
	for _, n := range []string{"acme", "dead"} {
		g, _ := getGrant(f.ns, n)
		haystacks = append(haystacks, fmt.Sprintf("%+v", g.Status))
	}
	c, _ := getCredential(f.ns, "misused")
	haystacks = append(haystacks, fmt.Sprintf("%+v", c.Status))
	families, _ := metrics.Registry.Gather()
	haystacks = append(haystacks, fmt.Sprint(families))

	for _, h := range haystacks {
		for _, s := range secrets {
			for form, encoded := range encodings(s) {
				if strings.Contains(h, encoded) {
					t.Errorf("a secret (%d chars, starting %q) appears %s in logs, events, status or metrics", len(s), s[:4], form)
				}
			}
		}
	}
	if !strings.Contains(logSink.String(), "cdusergrant") && !strings.Contains(logSink.String(), "CDUserGrant") {
		t.Errorf("the log capture holds nothing from the controllers: the scrape proves nothing")
	}
}
