package tokenclient

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
)

// outcome is what a caller learns from one failed request.
type outcome struct {
	Kind   ErrorKind
	Scopes []string
}

func outcomeOf(t *testing.T, err error) outcome {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err %v is not a *Error", err)
	}
	return outcome{e.Kind, e.Scopes}
}

// TestEveryProfileRefusalIsClassified runs the client against the sandbox in each
// provider profile. The sandbox words its answers from its own table, not from the
// classifier's, so the two agreeing is a check on both.
func TestEveryProfileRefusalIsClassified(t *testing.T) {
	scopes := map[cdsandbox.Profile][]string{
		cdsandbox.ProfileCD:       nil,
		cdsandbox.ProfileDex:      {"pricing"},
		cdsandbox.ProfileKeycloak: {"marketplace", "pricing"},
		cdsandbox.ProfileEntra:    {"pricing"},
		cdsandbox.ProfileOkta:     nil,
		cdsandbox.ProfileAuth0:    {"pricing"},
		cdsandbox.ProfileGoogle:   {"pricing"},
	}
	for _, profile := range cdsandbox.Profiles() {
		t.Run(string(profile), func(t *testing.T) {
			now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
			sb := cdsandbox.New(cdsandbox.Options{Profile: profile, Now: func() time.Time { return now }, Clients: []cdsandbox.Client{
				{ID: "api", Secret: "api-secret", GrantTypes: []string{"client_credentials"}, Scopes: []string{"marketplace"}},
				{ID: "login", Secret: "login-secret", GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"https://app.example.com/cb"}},
			}})
			srv := httptest.NewServer(sb)
			t.Cleanup(srv.Close)
			sb.SetIssuer(srv.URL)
			c := New(Options{AllowedHosts: []string{strings.TrimPrefix(srv.URL, "http://")}})
			endpoint := func(id, secret string, scopes ...string) Endpoint {
				return Endpoint{TokenURL: srv.URL + "/connect/token", AuthMethod: ClientSecretPost, ClientID: id, ClientSecret: secret, Scopes: scopes}
			}
			ctx := context.Background()
			login := endpoint("login", "login-secret")

			first := sb.SeedGrant("login", "dispatcher", []string{"marketplace", "offline_access"})
			tok, err := c.Refresh(ctx, login, first)
			if err != nil {
				t.Fatal(err)
			}
			now = now.Add(cdsandbox.RotationGrace + time.Second) // past Okta's grace period
			newest := tok.RefreshToken
			if newest == "" { // Google: the one token serves every refresh
				newest = first
			}
			if r := profile.Rotation(); r == cdsandbox.RotateKeepOld || r == cdsandbox.NoRotation {
				// A spent token still works there: the grant is revoked instead, and
				// its token presented (the "spent" answer is of a revoked grant).
				if err := c.Revoke(ctx, login, srv.URL+"/connect/revocation", first, "refresh_token"); err != nil {
					t.Fatal(err)
				}
			}
			_, spent := c.Refresh(ctx, login, first)
			_, revoked := c.Refresh(ctx, login, newest)
			_, scope := c.ClientCredentials(ctx, endpoint("api", "api-secret", "marketplace", "pricing"))
			_, grantType := c.ClientCredentials(ctx, login)

			got := map[string]outcome{
				"a spent refresh token":               outcomeOf(t, spent),
				"the newest token of a revoked grant": outcomeOf(t, revoked),
				"an unknown scope":                    outcomeOf(t, scope),
				"a grant type the client may not use": outcomeOf(t, grantType),
			}
			want := map[string]outcome{
				"a spent refresh token":               {KindInvalidGrant, nil},
				"the newest token of a revoked grant": {KindInvalidGrant, nil},
				"an unknown scope":                    {KindInvalidScope, scopes[profile]},
				"a grant type the client may not use": {KindGrantTypeNotAllowed, nil},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("outcomes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(map[string]int{"refresh_token": 3, "client_credentials": 2}, sb.Stats().TokenRequests); diff != "" {
				t.Errorf("token requests (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEveryProfileRateLimitSaysHowLongToWait: each provider says how long to wait in its
// own header (Okta has no Retry-After, only the end of its window); the wait the client
// reports must be the one asked for, not the 30-second default.
func TestEveryProfileRateLimitSaysHowLongToWait(t *testing.T) {
	for _, profile := range cdsandbox.Profiles() {
		t.Run(string(profile), func(t *testing.T) {
			sb := cdsandbox.New(cdsandbox.Options{Profile: profile, Clients: []cdsandbox.Client{
				{ID: "api", Secret: "api-secret", GrantTypes: []string{"client_credentials"}},
			}})
			srv := httptest.NewServer(sb)
			t.Cleanup(srv.Close)
			sb.SetIssuer(srv.URL)
			sb.InjectFault(cdsandbox.Fault{Mode: cdsandbox.FaultStatus, Status: http.StatusTooManyRequests, RetryAfter: "90"})
			c := New(Options{AllowedHosts: []string{strings.TrimPrefix(srv.URL, "http://")}})
			_, err := c.ClientCredentials(context.Background(), Endpoint{TokenURL: srv.URL + "/connect/token", AuthMethod: ClientSecretPost, ClientID: "api", ClientSecret: "api-secret"})
			var e *Error
			if !errors.As(err, &e) || e.Kind != KindRateLimited {
				t.Fatalf("err %v, want a rate limit", err)
			}
			// The reset time is whole seconds and so is the answer's Date: a second either way.
			if e.RetryAfter < 89*time.Second || e.RetryAfter > 91*time.Second {
				t.Errorf("RetryAfter %s, want the 90 s the server asked for", e.RetryAfter)
			}
		})
	}
}
