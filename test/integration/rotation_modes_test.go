package integration

import (
	"net/http/httptest"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
)

// journaledSandbox starts a sandbox of the given profile with its journal on (which
// must be before it serves), 2-second access tokens and Central Dispatch's clients.
func journaledSandbox(t *testing.T, profile cdsandbox.Profile) identityServer {
	t.Helper()
	s := cdsandbox.New(cdsandbox.Options{Profile: profile, Clients: centralDispatchClients(), AccessTokenTTL: 2 * time.Second})
	s.EnableJournal()
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	s.SetIssuer(hs.URL)
	return identityServer{Server: s, URL: hs.URL, Host: hs.Listener.Addr().String()}
}

// Google answers a refresh with no refresh token and the same one keeps working; Entra
// issues a new one without revoking the old. A grant renews against either as against
// Central Dispatch: each refresh presents the token the provider expects (Google's one
// token; Entra's newest), the Secret ends up holding it, and nothing is taken for an
// interrupted rotation or a refused token.
func TestGrantRenewsAgainstProvidersThatDoNotRotateSingleUse(t *testing.T) {
	for _, profile := range []cdsandbox.Profile{cdsandbox.ProfileGoogle, cdsandbox.ProfileEntra} {
		t.Run(string(profile), func(t *testing.T) {
			idp := journaledSandbox(t, profile)
			f := newGrantFixtureOn(t, idp)
			m := startManager(t, f.opts)
			f.addGrant("acme")
			seeded, err := getSecret(f.ns, "acme-refresh")
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, 60*time.Second, "5 renewals", f.rotations("acme", 5))
			m.Stop(t)

			// Each refresh presented the token the provider expects: the one the last
			// answer issued, or the one held before when it issued none.
			expected := cdsandbox.TokenHash(string(seeded.Data["refresh_token"]))
			var refreshes int
			for _, e := range idp.Journal(0) {
				if e.GrantType != "refresh_token" {
					continue
				}
				refreshes++
				if e.Presented != expected || e.Status != 200 {
					t.Errorf("refresh %d presented %s (HTTP %d), want %s", e.Seq, e.Presented, e.Status, expected)
				}
				if e.IssuedRefresh != "" {
					expected = e.IssuedRefresh
				}
			}
			stored, _ := getSecret(f.ns, "acme-refresh")
			if got := cdsandbox.TokenHash(string(stored.Data["refresh_token"])); got != expected {
				t.Errorf("the Secret holds %s, want the provider's current token %s", got, expected)
			}
			if changed := expected != cdsandbox.TokenHash(string(seeded.Data["refresh_token"])); changed != (profile == cdsandbox.ProfileEntra) {
				t.Errorf("the refresh token changed: %v, want it to only for entra", changed)
			}
			g, _ := getGrant(f.ns, "acme")
			if err := conditionIs(g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenValidReason); err != nil {
				t.Error(err)
			}
			for _, c := range g.Status.Conditions {
				if c.Reason == cdv1.RotationInterruptedReason || c.Reason == cdv1.RefreshTokenRejectedReason {
					t.Errorf("condition %s is %s: %s", c.Type, c.Reason, c.Message)
				}
			}
			if g.Status.LastFailure != nil {
				t.Errorf("last failure %+v", g.Status.LastFailure)
			}
			t.Logf("%s: %d renewals, %d refresh requests", profile, g.Status.RotationCount, refreshes)
			f.assertStoredTokenLive("acme")
		})
	}
}
