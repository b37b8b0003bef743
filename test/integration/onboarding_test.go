package integration

import (
	"context"
	"fmt"
	"io"
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
	"github.com/credops/cd-credentials-operator/test/support"
)

// onboardingFixture runs a manager with the callback server, a sandbox whose
// authorization-code client has the callback registered, and a credential "login".
type onboardingFixture struct {
	t           *testing.T
	ns          string
	idp         identityServer
	callbackURL string
}

// fixtureConfig is what an onboarding fixture starts from.
type fixtureConfig struct {
	sandbox *cdsandbox.Options
	cred    *cdv1.CDCredential
	// callbackPath is the path of the manager's --callback-url.
	callbackPath string
	// faults, when set, is around the manager's client.
	faults *faults
}

// fixtureOption changes the sandbox, the credential or the callback of an onboarding
// fixture.
type fixtureOption func(*fixtureConfig)

// asProvider makes the sandbox answer as another identity server would.
func asProvider(p cdsandbox.Profile) fixtureOption {
	return func(c *fixtureConfig) { c.sandbox.Profile = p }
}

// withCredential changes the credential "login" before it is created.
func withCredential(m func(*cdv1.CDCredential)) fixtureOption {
	return func(c *fixtureConfig) { m(c.cred) }
}

// withCallbackPath puts the manager's callback URL at another path.
func withCallbackPath(p string) fixtureOption {
	return func(c *fixtureConfig) { c.callbackPath = p }
}

// withManagerFaults puts fc around the manager's client, the callback's included.
func withManagerFaults(fc *faults) fixtureOption {
	return func(c *fixtureConfig) { c.faults = fc }
}

func newOnboardingFixture(t *testing.T, opts ...fixtureOption) *onboardingFixture {
	t.Helper()
	ns := newNamespace(t)
	addr := freeAddr(t)
	sandbox := cdsandbox.Options{}
	cred := credential(ns, "login", cdv1.FlowAuthorizationCode, "login-client", "")
	conf := fixtureConfig{sandbox: &sandbox, cred: cred, callbackPath: "/callback"}
	for _, o := range opts {
		o(&conf)
	}
	callbackURL := "http://" + addr + conf.callbackPath
	sandbox.Clients = append(sandbox.Clients, cdsandbox.Client{
		ID: loginClientID, Secret: loginClientSecret, GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{callbackURL},
	})
	idp := startSandbox(t, sandbox)
	mopts := manager.Options{
		AllowedTokenHosts:   []string{idp.Host},
		WatchNamespaces:     []string{ns},
		CallbackBindAddress: addr,
		CallbackURL:         callbackURL,
		KeySecret:           types.NamespacedName{Namespace: ns, Name: "operator-key"},
	}
	if conf.faults != nil {
		mopts.NewClient = conf.faults.newClient()
	}
	startManager(t, mopts)
	create(t, clientSecret(ns, "login-client", loginClientID, loginClientSecret))
	cred.Spec.Issuer = idp.URL
	if cred.Spec.AuthorizeURL != "" {
		cred.Spec.AuthorizeURL = idp.URL + cred.Spec.AuthorizeURL // a path and query of the sandbox's
	}
	create(t, cred)
	// A grant created while its credential turns Ready is reconciled once for each of the
	// credential's status writes; a pass that reads the grant from a cache not yet holding
	// the previous pass's status finds no link and mints another, and a test holding the
	// first would see it change.
	eventually(t, 10*time.Second, "the credential Ready", credentialCondition(ns, "login", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.ClientReadyReason))
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

var noFollow = support.NoFollow

// login opens the authorization URL as a browser would, submits the sandbox's login form
// and returns where the identity server redirects: the callback URL with code and state.
func (f *onboardingFixture) login(authURL, action string) string {
	f.t.Helper()
	return support.Login(f.t, f.idp.URL, authURL, f.callbackURL, action)
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
	s, err := getSecret(f.ns, "operator-key")
	if err != nil {
		f.t.Fatal(err)
	}
	signer, err := onboarding.SignerFromKey(s.Data["hmac-key"])
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
	for k, want := range map[string]string{"client_id": loginClientID, "response_type": "code", "grant_type": "authorization_code", "redirect_uri": f.callbackURL, "scope": "marketplace offline_access", "code_challenge_method": "S256", "prompt": "consent"} {
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
	if len(rs.OwnerReferences) != 0 || rs.Labels[cdv1.SecretTypeLabel] != cdv1.SecretTypeRefreshToken || rs.Annotations[cdv1.BoundToAnnotation] != "acme/"+string(g.UID) {
		t.Errorf("the refresh-token Secret the callback created is owned, not opted in or not bound: %+v", rs.ObjectMeta)
	}
	if a := g.Status.LastAuthorization; a == nil || a.Reason != cdv1.CustomerAuthorizedReason {
		t.Errorf("lastAuthorization %+v", a)
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
	f.assertEvent(t, "acme", cdv1.CustomerAuthorizedReason)
}

// TestACallbackURLUnderAPathPrefixCompletesTheLogin: the chart's Ingress and HTTPRoute
// forward the path of callback.url unchanged, so with
// https://apps.example.com/cd-operator/callback the customer comes back to
// /cd-operator/callback, and that is where the manager must answer.
func TestACallbackURLUnderAPathPrefixCompletesTheLogin(t *testing.T) {
	f := newOnboardingFixture(t, withCallbackPath("/cd-operator/callback"))
	status, body := f.callback(f.login(f.awaiting("acme"), "login"))
	if status != http.StatusOK || !strings.Contains(body, "Authorized") {
		t.Fatalf("callback at %s: HTTP %d %q", f.callbackURL, status, body)
	}
	eventually(t, 20*time.Second, "Ready", grantCondition(f.ns, "acme", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
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
		f.assertEvent(t, "expired", cdv1.AuthorizationFailedReason)
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
		f.assertEvent(t, "stolen", cdv1.AuthorizationFailedReason)
	})

	t.Run("the customer denies access, then changes their mind with the same link", func(t *testing.T) {
		authURL := f.awaiting("denied")
		before := f.exchanges()
		status, body := f.callback(f.login(authURL, "deny"))
		if status != http.StatusForbidden || !strings.Contains(body, "access_denied") {
			t.Errorf("HTTP %d %s, want 403 access_denied", status, body)
		}
		if f.exchanges() != before {
			t.Errorf("a code was exchanged")
		}
		f.assertEvent(t, "denied", cdv1.AuthorizationDeniedReason)
		eventually(t, 10*time.Second, "the grant says the customer declined", grantCondition(f.ns, "denied", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.AuthorizationDeniedReason))
		if status, body := f.callback(f.login(authURL, "login")); status != http.StatusOK {
			t.Errorf("the link no longer works after a denial: %d %s", status, body)
		}
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

func mustQuery(t *testing.T, raw string) url.Values {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query()
}

// TestACallbackWithoutACodeLeavesTheLinkWorking: a request to the callback that carries
// a genuine state but no code (a crawler, a curious customer, an attacker who saw the
// link) is refused without spending the link (issue 14, finding 6).
func TestACallbackWithoutACodeLeavesTheLinkWorking(t *testing.T) {
	f := newOnboardingFixture(t)
	authURL := f.awaiting("acme")
	state := mustQuery(t, authURL).Get("state")
	if status, _ := f.callback(f.callbackURL + "?state=" + url.QueryEscape(state)); status != http.StatusBadRequest {
		t.Errorf("HTTP %d, want 400", status)
	}
	if status, body := f.callback(f.login(authURL, "login")); status != http.StatusOK {
		t.Fatalf("the link no longer works: %d %s", status, body)
	}
	eventually(t, 20*time.Second, "Ready", grantCondition(f.ns, "acme", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
}

// TestTheIssuerInTheResponseMustBeTheCredentials is RFC 9207's mix-up defence: an
// authorization response naming another issuer, or none when the credential requires
// it, is refused before any code is exchanged, and the link still works afterwards.
func TestTheIssuerInTheResponseMustBeTheCredentials(t *testing.T) {
	cases := map[string]struct {
		require bool
		tamper  func(url.Values)
	}{
		"another issuer": {tamper: func(q url.Values) { q.Set("iss", "https://evil.example") }},
		"no issuer, with requireIssuerInResponse":         {require: true, tamper: func(q url.Values) { q.Del("iss") }},
		"the issuer twice, the second another's":          {tamper: func(q url.Values) { q.Add("iss", "https://evil.example") }},
		"an issuer that differs by a trailing slash only": {tamper: func(q url.Values) { q.Set("iss", q.Get("iss")+"/") }},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := newOnboardingFixture(t, withCredential(func(c *cdv1.CDCredential) { c.Spec.RequireIssuerInResponse = tc.require }))
			authURL := f.awaiting("acme")
			redirect := f.login(authURL, "login")
			u, _ := url.Parse(redirect)
			q := u.Query()
			tc.tamper(q)
			u.RawQuery = q.Encode()
			// The page may not name the CDCredential's issuer (its namespace writes it, and
			// the page is on a domain every tenant's customers trust): the grant says why.
			if status, body := f.callback(u.String()); status != http.StatusBadRequest {
				t.Errorf("HTTP %d %s, want 400", status, body)
			}
			if g, err := getGrant(f.ns, "acme"); err != nil || g.Status.LastAuthorization == nil || !strings.Contains(g.Status.LastAuthorization.Message, "RFC 9207") {
				t.Errorf("lastAuthorization %+v (%v), want the refusal naming RFC 9207", g.Status.LastAuthorization, err)
			}
			if n := f.exchanges(); n != 0 {
				t.Errorf("%d codes exchanged, want 0", n)
			}
			if status, body := f.callback(redirect); status != http.StatusOK {
				t.Errorf("the genuine response after the refusal: %d %s", status, body)
			}
		})
	}
}

// TestAuthorizationURLsCarryWhatTheProviderNeeds: an authorize endpoint with its own
// query keeps it, the credential's authorizationParameters are sent, prompt=consent is
// sent for offline_access unless the credential says otherwise, and the parameters the
// operator owns cannot be set (CEL, see cel_test.go).
func TestAuthorizationURLsCarryWhatTheProviderNeeds(t *testing.T) {
	f := newOnboardingFixture(t, withCredential(func(c *cdv1.CDCredential) {
		c.Spec.AuthorizeURL = "/connect/authorize?tenant=acme"
		c.Spec.AuthorizationParameters = map[string]string{"audience": "https://api.example", "prompt": "login consent"}
	}))
	authURL := f.awaiting("acme")
	q := mustQuery(t, authURL)
	for k, want := range map[string]string{"tenant": "acme", "audience": "https://api.example", "prompt": "login consent", "client_id": loginClientID} {
		if got := q.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if status, body := f.callback(f.login(authURL, "login")); status != http.StatusOK {
		t.Fatalf("callback: %d %s", status, body)
	}
	reqs := f.idp.AuthorizationRequests()
	if len(reqs) == 0 || reqs[len(reqs)-1].Get("tenant") != "acme" || reqs[len(reqs)-1].Get("audience") != "https://api.example" {
		t.Errorf("the identity server did not receive the parameters: %v", reqs)
	}
	eventually(t, 20*time.Second, "Ready", grantCondition(f.ns, "acme", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
}

// TestWithoutConsentACertifiedProviderIssuesNoRefreshTokenAndTheGrantSaysWhy: with
// `prompt: ""` the operator sends no prompt, a certified provider (the sandbox's default)
// then ignores offline_access (OpenID Connect Core §11), and the grant says so truthfully.
func TestWithoutConsentACertifiedProviderIssuesNoRefreshTokenAndTheGrantSaysWhy(t *testing.T) {
	f := newOnboardingFixture(t, withCredential(func(c *cdv1.CDCredential) {
		c.Spec.AuthorizationParameters = map[string]string{"prompt": ""}
	}))
	authURL := f.awaiting("acme")
	if q := mustQuery(t, authURL); q.Has("prompt") {
		t.Errorf("prompt %q sent although the credential turned it off", q.Get("prompt"))
	}
	status, body := f.callback(f.login(authURL, "login"))
	if status != http.StatusBadGateway || !strings.Contains(body, "issued no refresh token") {
		t.Errorf("callback: %d %s", status, body)
	}
	eventually(t, 10*time.Second, "the grant says why", func() error {
		g, err := getGrant(f.ns, "acme")
		if err != nil {
			return err
		}
		msg := conditionMessage(g.Status.Conditions, cdv1.ReadyCondition)
		if !strings.Contains(msg, "prompt=consent") || !strings.Contains(msg, "granted: marketplace") {
			return fmt.Errorf("Ready message %q does not name the likely cause and the granted scopes", msg)
		}
		return conditionIs(g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.AuthorizationFailedReason)
	})
}

// TestAGoogleStyleProviderNeedsAccessTypeOffline: Google ignores offline_access and
// issues a refresh token only for access_type=offline; the credential says so with
// authorizationParameters.
func TestAGoogleStyleProviderNeedsAccessTypeOffline(t *testing.T) {
	for name, params := range map[string]map[string]string{
		"without access_type the provider issues no refresh token": nil,
		"with access_type=offline and prompt=consent it does":      {"access_type": "offline", "prompt": "consent"},
	} {
		t.Run(name, func(t *testing.T) {
			f := newOnboardingFixture(t, asProvider(cdsandbox.ProfileGoogle), withCredential(func(c *cdv1.CDCredential) {
				c.Spec.Scopes = []string{"openid", "email"}
				c.Spec.AuthorizationParameters = params
			}))
			status, body := f.callback(f.login(f.awaiting("acme"), "login"))
			if ok := params != nil; (status == http.StatusOK) != ok {
				t.Fatalf("callback: %d %s", status, body)
			}
			if params != nil {
				eventually(t, 20*time.Second, "Ready", grantCondition(f.ns, "acme", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
			}
		})
	}
}

// TestAnAuthorizationErrorIsRecordedOnTheGrantAndTheLinkKept: Dex requires openid in
// every login and answers a login without it with error=invalid_scope. The customer
// sees why, the grant says what to change, and its link is not spent.
func TestAnAuthorizationErrorIsRecordedOnTheGrantAndTheLinkKept(t *testing.T) {
	f := newOnboardingFixture(t, asProvider(cdsandbox.ProfileDex), withCredential(func(c *cdv1.CDCredential) {
		c.Spec.Scopes = []string{"offline_access"}
	}))
	authURL := f.awaiting("acme")
	resp, err := noFollow.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	redirect := resp.Header.Get("Location")
	if q := mustQuery(t, redirect); q.Get("error") != "invalid_scope" {
		t.Fatalf("Dex's answer %d %q, want a redirect with error=invalid_scope", resp.StatusCode, redirect)
	}
	status, body := f.callback(redirect)
	if status != http.StatusForbidden || !strings.Contains(body, "invalid_scope") || !strings.Contains(body, "openid") {
		t.Errorf("callback: %d %s, want 403 explaining invalid_scope", status, body)
	}
	eventually(t, 10*time.Second, "the grant says invalid_scope", func() error {
		g, err := getGrant(f.ns, "acme")
		if err != nil {
			return err
		}
		if a := g.Status.LastAuthorization; a == nil || a.Error != "invalid_scope" {
			return fmt.Errorf("lastAuthorization %+v", a)
		}
		if g.Status.AuthorizationURL != authURL {
			return fmt.Errorf("the link changed or went: %q", g.Status.AuthorizationURL)
		}
		return conditionIs(g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.AuthorizationFailedReason)
	})
}

// TestReauthorizationOnRequestKeepsTheGrantWorkingUntilTheCustomerLogsIn: the
// cd.credops.io/reauthorize annotation (what `kubectl cd reauthorize` sets) offers a new
// link while the current refresh token keeps rotating; the login replaces the token and
// ends the request.
func TestReauthorizationOnRequestKeepsTheGrantWorkingUntilTheCustomerLogsIn(t *testing.T) {
	f := newOnboardingFixture(t)
	authURL := f.reauthorizationRequested(t, "acme")
	before, _ := getSecret(f.ns, "acme-refresh")
	if status, body := f.callback(f.login(authURL, "login")); status != http.StatusOK {
		t.Fatalf("callback: %d %s", status, body)
	}
	eventually(t, 20*time.Second, "request done, new token in use", func() error {
		g, err := getGrant(f.ns, "acme")
		if err != nil {
			return err
		}
		if _, still := g.Annotations[cdv1.ReauthorizeAnnotation]; still || g.Status.AuthorizationURL != "" {
			return fmt.Errorf("annotation or link left: %v %q", g.Annotations, g.Status.AuthorizationURL)
		}
		return conditionIs(g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenValidReason)
	})
	after, _ := getSecret(f.ns, "acme-refresh")
	if string(after.Data["refresh_token"]) == string(before.Data["refresh_token"]) {
		t.Errorf("the refresh token was not replaced by the new login")
	}
	f.assertNoReuse(t)
}

// TestADeclinedReauthorizationShowsOnTheGrant: while a reauthorization is pending the
// grant stays Ready on its old token, so a customer who declines the new login must
// show in a condition (`kubectl cd reauthorize` and people read conditions), not only
// in status.lastAuthorization.
func TestADeclinedReauthorizationShowsOnTheGrant(t *testing.T) {
	f := newOnboardingFixture(t)
	authURL := f.reauthorizationRequested(t, "acme")
	if status, body := f.callback(f.login(authURL, "deny")); status != http.StatusForbidden {
		t.Fatalf("callback: %d %s", status, body)
	}
	eventually(t, 10*time.Second, "ReauthorizationRequired names the denial", func() error {
		g, err := getGrant(f.ns, "acme")
		if err != nil {
			return err
		}
		if msg := conditionMessage(g.Status.Conditions, cdv1.ReauthorizationRequiredCondition); !strings.Contains(msg, "AuthorizationDenied") || !strings.Contains(msg, "access_denied") {
			return fmt.Errorf("ReauthorizationRequired message %q", msg)
		}
		return conditionIs(g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	})
}

// reauthorizationRequested makes a Ready grant name on a refresh-token Secret
// name+"-refresh", then asks for a new login with the cd.credops.io/reauthorize annotation (what `kubectl
// cd reauthorize` sets), and returns the link the grant offers while it stays Ready.
func (f *onboardingFixture) reauthorizationRequested(t *testing.T, name string) string {
	t.Helper()
	create(t, refreshSecret(f.ns, name+"-refresh", f.idp.SeedGrant(loginClientID, name, []string{"marketplace", "offline_access"})))
	create(t, userGrant(f.ns, name, "login", name+"-refresh"))
	eventually(t, 10*time.Second, "Ready", grantCondition(f.ns, name, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
	g, _ := getGrant(f.ns, name)
	patch := client.MergeFrom(g.DeepCopy())
	metav1.SetMetaDataAnnotation(&g.ObjectMeta, cdv1.ReauthorizeAnnotation, time.Now().UTC().Format(time.RFC3339))
	if err := k8s.Patch(context.Background(), g, patch); err != nil {
		t.Fatal(err)
	}
	var authURL string
	eventually(t, 10*time.Second, "a link while still Ready", func() error {
		g, err := getGrant(f.ns, name)
		if err != nil {
			return err
		}
		if authURL = g.Status.AuthorizationURL; authURL == "" {
			return fmt.Errorf("no link yet")
		}
		if err := conditionIs(g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.ReauthorizationRequestedReason); err != nil {
			return err
		}
		return conditionIs(g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	})
	return authURL
}

func (f *onboardingFixture) assertNoReuse(t *testing.T) {
	t.Helper()
	if n := f.idp.Stats().RefreshTokensReused; n != 0 {
		t.Errorf("%d spent refresh tokens presented again", n)
	}
}
