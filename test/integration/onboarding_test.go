package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
	"github.com/credops/cd-credentials-operator/internal/onboarding"
)

// onboardingFixture runs a manager with the callback server, a sandbox whose
// authorization-code client has the callback registered, and a credential "login".
type onboardingFixture struct {
	t           *testing.T
	ns          string
	idp         identityServer
	callbackURL string
}

func newOnboardingFixture(t *testing.T) *onboardingFixture {
	t.Helper()
	ns := newNamespace(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	callbackURL := "http://" + addr + "/callback"
	idp := startSandbox(t, cdsandbox.Options{Clients: []cdsandbox.Client{
		{ID: loginClientID, Secret: loginClientSecret, GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{callbackURL}},
	}})
	startManager(t, manager.Options{
		AllowedTokenHosts:   []string{idp.Host},
		WatchNamespaces:     []string{ns},
		CallbackBindAddress: addr,
		CallbackURL:         callbackURL,
		CallbackKeySecret:   types.NamespacedName{Namespace: ns, Name: "callback-key"},
	})
	create(t, clientSecret(ns, "login-client", loginClientID, loginClientSecret))
	create(t, credential(ns, "login", cdv1.FlowAuthorizationCode, "login-client", idp.URL))
	return &onboardingFixture{t: t, ns: ns, idp: idp, callbackURL: callbackURL}
}

// awaiting creates a grant with no refresh token and returns its authorization URL.
func (f *onboardingFixture) awaiting(name string) string {
	f.t.Helper()
	create(f.t, userGrant(f.ns, name, "login", name+"-refresh"))
	return f.awaitingURL(name)
}

// awaitingURL waits for a grant to await authorization and returns its link.
func (f *onboardingFixture) awaitingURL(name string) string {
	f.t.Helper()
	var authURL string
	eventually(f.t, 10*time.Second, "authorizationURL of "+name, func() error {
		g, err := getGrant(f.ns, name)
		if err != nil {
			return err
		}
		if authURL = g.Status.AuthorizationURL; authURL == "" {
			return fmt.Errorf("no authorizationURL; conditions %+v", g.Status.Conditions)
		}
		return conditionIs(g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.AwaitingAuthorizationReason)
	})
	return authURL
}

var noFollow = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}

// login opens the authorization URL as a browser would, submits the sandbox's login form
// and returns where the identity server redirects: the callback URL with code and state.
func (f *onboardingFixture) login(authURL, action string) string {
	f.t.Helper()
	resp, err := noFollow.Get(authURL)
	if err != nil {
		f.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("authorization page: HTTP %d", resp.StatusCode)
	}
	u, _ := url.Parse(authURL)
	form := u.Query()
	form.Set("username", "dispatcher@acme.example")
	form.Set("action", action)
	resp, err = noFollow.PostForm(f.idp.URL+"/connect/authorize", form)
	if err != nil {
		f.t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, f.callbackURL) {
		f.t.Fatalf("login: HTTP %d to %q", resp.StatusCode, loc)
	}
	return loc
}

// callback follows the redirect into the operator's callback.
func (f *onboardingFixture) callback(u string) (int, string) {
	f.t.Helper()
	resp, err := noFollow.Get(u)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (f *onboardingFixture) exchanges() int { return f.idp.Stats().TokenRequests["authorization_code"] }

// signer reads the key the manager created and shared through its Secret.
func (f *onboardingFixture) signer() *onboarding.Signer {
	f.t.Helper()
	s, err := getSecret(f.ns, "callback-key")
	if err != nil {
		f.t.Fatal(err)
	}
	signer, err := onboarding.NewSigner(s.Data["hmac-key"])
	if err != nil {
		f.t.Fatal(err)
	}
	return signer
}

func withState(u, state string) string {
	parsed, _ := url.Parse(u)
	q := parsed.Query()
	q.Set("state", state)
	parsed.RawQuery = q.Encode()
	return parsed.String()
}

func TestCustomerOnboardingRoundTrip(t *testing.T) {
	f := newOnboardingFixture(t)
	authURL := f.awaiting("acme")
	u, _ := url.Parse(authURL)
	q := u.Query()
	for k, want := range map[string]string{"client_id": loginClientID, "response_type": "code", "grant_type": "authorization_code", "redirect_uri": f.callbackURL, "scope": "marketplace offline_access", "code_challenge_method": "S256"} {
		if q.Get(k) != want {
			t.Errorf("authorization URL %s = %q, want %q", k, q.Get(k), want)
		}
	}
	if q.Get("state") == "" || q.Get("code_challenge") == "" || strings.Contains(authURL, "verifier") {
		t.Errorf("authorization URL lacks state or PKCE, or carries the verifier: %s", authURL)
	}

	status, body := f.callback(f.login(authURL, "login"))
	if status != http.StatusOK || !strings.Contains(body, "Authorized") {
		t.Fatalf("callback: %d %s", status, body)
	}
	eventually(t, 20*time.Second, "Ready and rotating", func() error {
		g, err := getGrant(f.ns, "acme")
		if err != nil {
			return err
		}
		if g.Status.RotationCount < 1 || g.Status.AuthorizationURL != "" {
			return fmt.Errorf("status %+v", g.Status)
		}
		return conditionIs(g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	})
	g, _ := getGrant(f.ns, "acme")
	rs, _ := getSecret(f.ns, "acme-refresh")
	if !metav1.IsControlledBy(rs, g) {
		t.Errorf("the refresh-token Secret the operator created is not owned by the grant")
	}
	if strings.Contains(body, string(rs.Data["refresh_token"])) || g.Status.Subject != "dispatcher@acme.example" {
		t.Errorf("the page shows a token, or the subject is wrong: %q", g.Status.Subject)
	}
	if n := f.exchanges(); n != 1 {
		t.Errorf("%d code exchanges, want 1", n)
	}
	if len(series(t, "cdcredops_token_requests_total", map[string]string{"kind": "CDUserGrant", "grant_type": "authorization_code", "result": "success"})) != 1 {
		t.Errorf("the code exchange is not counted in cdcredops_token_requests_total")
	}
	f.assertEvent(t, "acme", onboarding.CustomerAuthorizedReason)
}

func (f *onboardingFixture) assertEvent(t *testing.T, grant, reason string) {
	t.Helper()
	eventually(t, 10*time.Second, "event "+reason, func() error {
		evs := &eventsv1.EventList{}
		if err := k8s.List(context.Background(), evs, client.InNamespace(f.ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == grant && e.Reason == reason {
				return nil
			}
		}
		return fmt.Errorf("no %s event on %s", reason, grant)
	})
}

func TestCallbackRefusals(t *testing.T) {
	f := newOnboardingFixture(t)

	t.Run("a forged state", func(t *testing.T) {
		cb := f.login(f.awaiting("forged"), "login")
		parsed, _ := url.Parse(cb)
		state := parsed.Query().Get("state")
		before := f.exchanges()
		if status, _ := f.callback(withState(cb, state[:len(state)-2]+"AA")); status != http.StatusBadRequest {
			t.Errorf("HTTP %d, want 400", status)
		}
		if f.exchanges() != before {
			t.Errorf("a code was exchanged")
		}
	})

	t.Run("a replayed callback", func(t *testing.T) {
		cb := f.login(f.awaiting("replayed"), "login")
		if status, _ := f.callback(cb); status != http.StatusOK {
			t.Fatalf("first callback: HTTP %d", status)
		}
		before := f.exchanges()
		if status, _ := f.callback(cb); status != http.StatusConflict {
			t.Errorf("HTTP %d, want 409", status)
		}
		if f.exchanges() != before {
			t.Errorf("a replayed code was exchanged")
		}
	})

	t.Run("an expired state", func(t *testing.T) {
		cb := f.login(f.awaiting("expired"), "login")
		g, _ := getGrant(f.ns, "expired")
		st := onboarding.NewState(f.ns, "expired", g.UID, time.Now().Add(-time.Hour), 15*time.Minute)
		before := f.exchanges()
		status, body := f.callback(withState(cb, f.signer().Sign(st)))
		if status != http.StatusBadRequest || !strings.Contains(body, "expired") {
			t.Errorf("HTTP %d %s, want 400 expired", status, body)
		}
		if f.exchanges() != before {
			t.Errorf("a code was exchanged")
		}
		f.assertEvent(t, "expired", onboarding.AuthorizationFailedReason)
	})

	t.Run("a state bound to another grant's identity", func(t *testing.T) {
		cb := f.login(f.awaiting("victim"), "login")
		st := onboarding.NewState(f.ns, "victim", "some-other-uid", time.Now(), 15*time.Minute)
		before := f.exchanges()
		if status, _ := f.callback(withState(cb, f.signer().Sign(st))); status != http.StatusNotFound {
			t.Errorf("HTTP %d, want 404", status)
		}
		if f.exchanges() != before {
			t.Errorf("a code was exchanged")
		}
	})

	t.Run("a code already used", func(t *testing.T) {
		cb := f.login(f.awaiting("stolen"), "login")
		parsed, _ := url.Parse(cb)
		// Someone else redeems the code first.
		resp, err := http.PostForm(f.idp.URL+"/connect/token", url.Values{"grant_type": {"authorization_code"}, "code": {parsed.Query().Get("code")},
			"redirect_uri": {f.callbackURL}, "client_id": {loginClientID}, "client_secret": {loginClientSecret}})
		if err == nil {
			resp.Body.Close()
		}
		if status, _ := f.callback(cb); status != http.StatusBadGateway {
			t.Errorf("HTTP %d, want 502", status)
		}
		if _, err := getSecret(f.ns, "stolen-refresh"); err == nil {
			t.Errorf("a refresh token was stored")
		}
		f.assertEvent(t, "stolen", onboarding.AuthorizationFailedReason)
	})

	t.Run("the customer denies access", func(t *testing.T) {
		cb := f.login(f.awaiting("denied"), "deny")
		before := f.exchanges()
		status, body := f.callback(cb)
		if status != http.StatusForbidden || !strings.Contains(body, "access_denied") {
			t.Errorf("HTTP %d %s, want 403 access_denied", status, body)
		}
		if f.exchanges() != before {
			t.Errorf("a code was exchanged")
		}
		f.assertEvent(t, "denied", onboarding.AuthorizationFailedReason)
	})

	t.Run("the grant is deleted before the callback", func(t *testing.T) {
		cb := f.login(f.awaiting("gone"), "login")
		g, _ := getGrant(f.ns, "gone")
		if err := k8s.Delete(context.Background(), g); err != nil {
			t.Fatal(err)
		}
		before := f.exchanges()
		if status, _ := f.callback(cb); status != http.StatusNotFound {
			t.Errorf("HTTP %d, want 404", status)
		}
		if f.exchanges() != before {
			t.Errorf("a code was exchanged")
		}
	})
}

func TestReauthorizationReplacesADeadToken(t *testing.T) {
	f := newOnboardingFixture(t)
	create(t, refreshSecret(f.ns, "acme-refresh", "a-dead-refresh-token"))
	create(t, userGrant(f.ns, "acme", "login", "acme-refresh"))
	var authURL string
	eventually(t, 10*time.Second, "RefreshTokenRejected with an authorization URL", func() error {
		g, err := getGrant(f.ns, "acme")
		if err != nil {
			return err
		}
		if authURL = g.Status.AuthorizationURL; authURL == "" {
			return fmt.Errorf("no authorizationURL")
		}
		return conditionIs(g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenRejectedReason)
	})
	if status, body := f.callback(f.login(authURL, "login")); status != http.StatusOK {
		t.Fatalf("callback: %d %s", status, body)
	}
	eventually(t, 20*time.Second, "Ready again", func() error {
		if err := grantCondition(f.ns, "acme", cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenValidReason)(); err != nil {
			return err
		}
		return grantCondition(f.ns, "acme", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)()
	})
	rs, _ := getSecret(f.ns, "acme-refresh")
	if len(rs.OwnerReferences) != 0 {
		t.Errorf("the user's own refresh-token Secret became owned by the grant")
	}
}
