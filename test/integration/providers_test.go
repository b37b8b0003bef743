package integration

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
)

// TestEveryProvidersRefusalsEndTheLoop runs the operator against each provider profile
// of the sandbox, which words its refusals as that provider does (a spent refresh token
// is Dex's `invalid_request` "already been claimed", Auth0's 403, …): a grant holding a
// refresh token the provider refuses (spent, where tokens are single-use; revoked, where
// a spent one still works, as at Google, Entra and Okta within its grace period) asks
// for a new login after at most 3 refresh requests, and a credential asking for a scope
// the provider does not know stops after 1 request and names it.
func TestEveryProvidersRefusalsEndTheLoop(t *testing.T) {
	for _, profile := range cdsandbox.Profiles() {
		t.Run(string(profile), func(t *testing.T) {
			ns := newNamespace(t)
			clients := centralDispatchClients()
			clients[0].Scopes = []string{"marketplace"} // the client-credentials client
			idp := startSandbox(t, cdsandbox.Options{Profile: profile, Clients: clients})
			startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}})

			// A refresh token someone already spent, or revoked.
			rt := idp.SeedGrant(loginClientID, "acme", []string{"openid", "marketplace", "offline_access"})
			if profile.Rotation() == cdsandbox.RotateSingleUse {
				spend(t, idp, rt)
			} else {
				revoke(t, idp, rt)
			}
			spent := idp.Stats().TokenRequests["refresh_token"]
			create(t, clientSecret(ns, "login-client", loginClientID, loginClientSecret))
			create(t, credential(ns, "login", cdv1.FlowAuthorizationCode, "login-client", idp.URL))
			create(t, refreshSecret(ns, "acme-refresh", rt))
			create(t, userGrant(ns, "acme", "login", "acme-refresh"))

			// A scope the provider does not know.
			create(t, clientSecret(ns, "api-client", apiClientID, apiClientSecret))
			cc := credential(ns, "pricing", cdv1.FlowClientCredentials, "api-client", idp.URL)
			cc.Spec.Scopes = []string{"marketplace", "pricing"}
			create(t, cc)

			eventually(t, 30*time.Second, "ReauthorizationRequired and ScopeNotAllowed", func() error {
				g, err := getGrant(ns, "acme")
				if err != nil {
					return err
				}
				reauth := conditionIs(g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenRejectedReason)
				if reauth != nil && conditionIs(g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenRefusedReason) != nil {
					return reauth
				}
				return credentialCondition(ns, "pricing", cdv1.StalledCondition, metav1.ConditionTrue, cdv1.ScopeNotAllowedReason)()
			})
			if n := idp.Stats().TokenRequests["refresh_token"] - spent; n > 3 {
				t.Errorf("%d refresh requests with a spent token, want at most 3", n)
			}
			c, _ := getCredential(ns, "pricing")
			if msg := conditionMessage(c.Status.Conditions, cdv1.ReadyCondition); !strings.Contains(msg, "pricing") {
				t.Errorf("ScopeNotAllowed message %q does not name the scope", msg)
			}
			t.Logf("%s: %d refresh requests for the refused token, %d client-credentials requests", profile,
				idp.Stats().TokenRequests["refresh_token"]-spent, idp.Stats().TokenRequests["client_credentials"])
			if n := idp.Stats().TokenRequests["client_credentials"]; n != 1 {
				t.Errorf("%d client-credentials requests for a refused scope, want 1", n)
			}
		})
	}
}

// spend presents a refresh token once at the identity server, as another holder of it
// would have.
func spend(t *testing.T, idp identityServer, rt string) {
	t.Helper()
	resp, err := http.PostForm(idp.URL+"/connect/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt},
		"client_id": {loginClientID}, "client_secret": {loginClientSecret}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatal(fmt.Errorf("spending the token: HTTP %d", resp.StatusCode))
	}
}

// revoke revokes a refresh token, and with it its grant, at the identity server (RFC
// 7009), as its customer would have by signing the app out.
func revoke(t *testing.T, idp identityServer, rt string) {
	t.Helper()
	resp, err := http.PostForm(idp.URL+"/connect/revocation", url.Values{"token": {rt}, "token_type_hint": {"refresh_token"},
		"client_id": {loginClientID}, "client_secret": {loginClientSecret}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatal(fmt.Errorf("revoking the token: HTTP %d", resp.StatusCode))
	}
}
