package onboarding

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// Keycloak answers the code exchange with refresh_expires_in, as it answers every
// refresh: a login's refresh token dies after the realm's SSO Session Idle unless it is
// an offline token (offline_access, refresh_expires_in 0). The callback stores that
// expiry with the token, in the same write, so the grant's first renewal and its retries
// (a provider outage right after the login) are held to it; with no limit said, nothing
// is recorded, and a previous token's record is not left behind.
func TestTheCallbackStoresTheLoginsRefreshTokenExpiry(t *testing.T) {
	const refreshTTL = 45 * time.Second
	cases := map[string]struct {
		profile cdsandbox.Profile
		scopes  []string
		before  *corev1.Secret // acme-refresh when the customer logs in; nil: missing
		// limited: refresh_expires_in is refreshTTL; false: no annotation.
		limited bool
	}{
		"keycloak, a browser session's token, into a new Secret": {
			profile: cdsandbox.ProfileKeycloak, scopes: []string{"marketplace"}, limited: true,
		},
		"keycloak, a browser session's token, replacing a dead one": {
			profile: cdsandbox.ProfileKeycloak, scopes: []string{"marketplace"}, limited: true,
			before: refreshSecret("acme/uid-acme", "rt-dead"),
		},
		"keycloak, an offline token (refresh_expires_in 0)": {
			profile: cdsandbox.ProfileKeycloak, scopes: []string{"marketplace", "offline_access"},
		},
		"keycloak, an offline token replacing a dead one whose expiry was recorded": {
			profile: cdsandbox.ProfileKeycloak, scopes: []string{"marketplace", "offline_access"},
			before: withRefreshLife(refreshSecret("acme/uid-acme", "rt-dead")),
		},
		"a server that sends no refresh_expires_in": {
			profile: cdsandbox.ProfileCD, scopes: []string{"marketplace", "offline_access"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			now := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
			sb := cdsandbox.New(cdsandbox.Options{Profile: tc.profile, RefreshTokenTTL: refreshTTL, Now: func() time.Time { return now }, Clients: []cdsandbox.Client{
				{ID: "login-client", Secret: "s3cr3t-value", GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"https://cd-callback.example.com/callback"}},
			}})
			srv := httptest.NewServer(sb)
			t.Cleanup(srv.Close)
			sb.SetIssuer(srv.URL)
			tokens := tokenclient.New(tokenclient.Options{AllowedHosts: []string{strings.TrimPrefix(srv.URL, "http://")}})
			o := newOnboarding(t, now, tokens, nil)
			cred := &cdv1.CDCredential{}
			if err := o.client.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "login"}, cred); err != nil {
				t.Fatal(err)
			}
			cred.Spec.TokenURL = srv.URL + "/connect/token"
			cred.Spec.Scopes = tc.scopes
			if err := o.client.Update(t.Context(), cred); err != nil {
				t.Fatal(err)
			}
			if tc.before != nil {
				if err := o.client.Create(t.Context(), tc.before.DeepCopy()); err != nil {
					t.Fatal(err)
				}
			}

			state := o.link()
			rec := o.login(sandboxCode(t, srv.URL, tc.scopes, state), state)
			if rec.Code != http.StatusOK {
				t.Fatalf("login: HTTP %d %q", rec.Code, rec.Body.String())
			}
			s := &corev1.Secret{}
			if err := o.client.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "acme-refresh"}, s); err != nil {
				t.Fatal(err)
			}
			rt := string(s.Data["refresh_token"])
			if rt == "" || rt == "rt-dead" {
				t.Fatalf("acme-refresh holds %q, want the login's refresh token", rt)
			}
			life, ok := secrets.RefreshLife(s, rotation.Hash(rt))
			switch v, recorded := s.Annotations[cdv1.RefreshExpiresAtAnnotation]; {
			case tc.limited && (!ok || !life.Issued.Equal(now) || !life.ExpiresAt.Equal(now.Add(refreshTTL))):
				t.Errorf("the refresh-token Secret's %s is %q, want the login's token issued at %s and dying at %s (refresh_expires_in %s)",
					cdv1.RefreshExpiresAtAnnotation, v, now.Format(time.RFC3339), now.Add(refreshTTL).Format(time.RFC3339), refreshTTL)
			case !tc.limited && recorded:
				t.Errorf("the refresh-token Secret's %s is %q, want none: the server said no limit", cdv1.RefreshExpiresAtAnnotation, v)
			}
		})
	}
}

// withRefreshLife records on s that its token dies in an hour.
func withRefreshLife(s *corev1.Secret) *corev1.Secret {
	issued := time.Date(2026, 11, 30, 17, 0, 0, 0, time.UTC)
	secrets.SetRefreshLife(s, rotation.Hash(string(s.Data["refresh_token"])), rotation.Schedule{Issued: issued, ExpiresAt: issued.Add(2 * time.Hour)})
	return s
}

// sandboxCode logs the customer in at the sandbox, consenting to scopes, and returns
// the authorization code its redirect back carries.
func sandboxCode(t *testing.T, idpURL string, scopes []string, state string) string {
	t.Helper()
	form := url.Values{
		"client_id": {"login-client"}, "redirect_uri": {"https://cd-callback.example.com/callback"}, "response_type": {"code"},
		"scope": {strings.Join(scopes, " ")}, "prompt": {"consent"}, "state": {state}, "username": {"customer"}, "action": {"login"},
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.PostForm(idpURL+"/connect/authorize", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound || loc.Query().Get("code") == "" {
		t.Fatalf("login at the sandbox: HTTP %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query().Get("code")
}
