package cdsandbox

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
)

const redirect = "https://app.example.com/cb"

type harness struct {
	t   *testing.T
	s   *Server
	url string
	now time.Time
}

// newHarness starts a sandbox with a client per flow, each unrestricted, and one per
// flow that may only have the scopes "openid marketplace offline_access". change
// adjusts the options.
func newHarness(t *testing.T, change ...func(*Options)) *harness {
	t.Helper()
	h := &harness{t: t, now: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	scopes := []string{"openid", "marketplace", "offline_access"}
	opts := Options{
		Clients: []Client{
			{ID: "api", Secret: "api-secret", GrantTypes: []string{"client_credentials"}},
			{ID: "login", Secret: "login-secret", GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{redirect}},
			{ID: "scoped-api", Secret: "scoped-api-secret", GrantTypes: []string{"client_credentials"}, Scopes: scopes},
			{ID: "scoped-login", Secret: "scoped-login-secret", GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{redirect}, Scopes: scopes},
		},
		AccessTokenTTL: 90 * time.Second,
		Now:            func() time.Time { return h.now },
	}
	for _, c := range change {
		c(&opts)
	}
	h.s = New(opts)
	srv := httptest.NewServer(h.s)
	t.Cleanup(srv.Close)
	h.url = srv.URL
	h.s.SetIssuer(srv.URL)
	return h
}

// post sends a token request; basic moves the client credentials into an HTTP Basic
// header (client_secret_basic).
func (h *harness) post(form url.Values, basic bool) (int, map[string]any) {
	h.t.Helper()
	id, secret := form.Get("client_id"), form.Get("client_secret")
	if basic {
		form = cloneValues(form)
		form.Del("client_id")
		form.Del("client_secret")
	}
	req, _ := http.NewRequest(http.MethodPost, h.url+"/connect/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

func refreshForm(rt string) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"login"}, "client_secret": {"login-secret"}}
}

func TestClientsAreRegisteredPerFlow(t *testing.T) {
	h := newHarness(t)
	rt := h.s.SeedGrant("login", "cust", []string{"offline_access"})
	cases := map[string]struct {
		form   url.Values
		status int
		code   string
	}{
		"client credentials for the client-credentials client": {url.Values{"grant_type": {"client_credentials"}, "client_id": {"api"}, "client_secret": {"api-secret"}}, 200, ""},
		"client credentials for the authorization-code client": {url.Values{"grant_type": {"client_credentials"}, "client_id": {"login"}, "client_secret": {"login-secret"}}, 400, "unauthorized_client"},
		"refresh for the client-credentials client":            {url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"api"}, "client_secret": {"api-secret"}}, 400, "unauthorized_client"},
		"a wrong secret":        {url.Values{"grant_type": {"client_credentials"}, "client_id": {"api"}, "client_secret": {"nope"}}, 401, "invalid_client"},
		"an unknown grant type": {url.Values{"grant_type": {"password"}, "client_id": {"api"}, "client_secret": {"api-secret"}}, 400, "unsupported_grant_type"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			status, body := h.post(tc.form, false)
			if status != tc.status || (tc.code != "" && body["error"] != tc.code) {
				t.Errorf("got %d %v, want %d %s", status, body, tc.status, tc.code)
			}
		})
	}
}

// A client authenticates one way: client_secret_basic works alone, and credentials in
// both the header and the body are refused as invalid_request (RFC 6749 §2.3) before
// the refresh token is looked at, so a live token is neither honoured nor spent.
func TestClientSecretBasicAndBothAtOnce(t *testing.T) {
	h := newHarness(t)
	rt := h.s.SeedGrant("login", "cust", []string{"offline_access"})
	status, body := h.post(refreshForm(rt), true)
	if status != http.StatusOK {
		t.Fatalf("basic auth refused: %d %v", status, body)
	}
	live := body["refresh_token"].(string)
	req, _ := http.NewRequest(http.MethodPost, h.url+"/connect/token", strings.NewReader(refreshForm(live).Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("login", "login-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var refused map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&refused)
	if resp.StatusCode != http.StatusBadRequest || refused["error"] != "invalid_request" {
		t.Errorf("credentials in both places with a live refresh token: HTTP %d %v, want 400 invalid_request", resp.StatusCode, refused)
	}
	if status, body := h.post(refreshForm(live), false); status != http.StatusOK {
		t.Errorf("the refresh token after the refused request: %d %v, want it still live", status, body)
	}
}

// A customer's refresh token is bound to the client it was issued to: another
// authorization-code client presenting it is refused, and does not spend it.
func TestARefreshTokenIsRefusedToAnotherClient(t *testing.T) {
	h := newHarness(t)
	rt := h.s.SeedGrant("login", "cust", []string{"offline_access"})
	other := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"scoped-login"}, "client_secret": {"scoped-login-secret"}}
	if status, body := h.post(other, false); status != http.StatusBadRequest || body["error"] != "invalid_grant" {
		t.Errorf("another client's refresh: %d %v, want 400 invalid_grant", status, body)
	}
	if status, body := h.post(refreshForm(rt), false); status != http.StatusOK {
		t.Errorf("the owner's refresh after another client's try: %d %v", status, body)
	}
}

func TestRefreshTokensAreSingleUseAndReuseRevokesTheGrant(t *testing.T) {
	h := newHarness(t)
	rt := h.s.SeedGrant("login", "cust", []string{"marketplace", "offline_access"})
	first := rt
	var access []string
	for range 10 {
		status, body := h.post(refreshForm(rt), false)
		if status != 200 {
			t.Fatalf("rotation refused: %d %v", status, body)
		}
		if body["expires_in"] != float64(90) || body["token_type"] != "Bearer" || body["scope"] != "marketplace offline_access" {
			t.Errorf("response %v", body)
		}
		if _, ok := h.s.Introspect(body["access_token"].(string)); !ok {
			t.Errorf("a fresh access token does not introspect")
		}
		access = append(access, body["access_token"].(string))
		rt = body["refresh_token"].(string)
	}
	status, body := h.post(refreshForm(first), false)
	if status != 400 || body["error"] != "invalid_grant" {
		t.Fatalf("a spent token: %d %v, want invalid_grant", status, body)
	}
	if status, _ := h.post(refreshForm(rt), false); status != 400 {
		t.Errorf("the newest refresh token still works after the grant was revoked")
	}
	if _, ok := h.s.Introspect(access[len(access)-1]); ok {
		t.Errorf("an access token of a revoked grant still introspects")
	}
	st := h.s.Stats()
	if st.RefreshTokensReused != 1 || st.GrantsRevoked != 1 || st.Issued["refresh_token"] != 10 || st.TokenRequests["refresh_token"] != 12 {
		t.Errorf("stats %+v", st)
	}
}

func TestAccessTokensExpireAndCarryClaims(t *testing.T) {
	h := newHarness(t)
	_, body := h.post(url.Values{"grant_type": {"client_credentials"}, "client_id": {"api"}, "client_secret": {"api-secret"}, "scope": {"marketplace"}}, false)
	tok := body["access_token"].(string)
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(tok, claims); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"iss": h.url, "sub": "api", "client_id": "api", "scope": "marketplace", "exp": float64(h.now.Add(90 * time.Second).Unix())}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("claim %s = %v, want %v", k, claims[k], v)
		}
	}
	h.now = h.now.Add(91 * time.Second)
	if _, ok := h.s.Introspect(tok); ok {
		t.Errorf("an expired token introspects")
	}
}

// login walks the authorize page and returns the redirect's query.
func (h *harness) login(params url.Values, action string) url.Values {
	h.t.Helper()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(h.url + "/connect/authorize?" + params.Encode())
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		h.t.Fatalf("authorize page: HTTP %d", resp.StatusCode)
	}
	form := url.Values{}
	for k, v := range params {
		form[k] = v
	}
	if form.Get("username") == "" {
		form.Set("username", "dispatcher")
	}
	form.Set("action", action)
	resp, err = noFollow.PostForm(h.url+"/connect/authorize", form)
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc.String(), redirect) {
		h.t.Fatalf("login: HTTP %d to %q", resp.StatusCode, loc)
	}
	return loc.Query()
}

// authorizeQuery is the authorization request the operator sends: with prompt=consent,
// which offline_access needs (OpenID Connect Core §11).
func authorizeQuery(challenge string) url.Values {
	return url.Values{"client_id": {"login"}, "response_type": {"code"}, "grant_type": {"authorization_code"}, "redirect_uri": {redirect},
		"scope": {"marketplace offline_access"}, "state": {"st-1"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"}, "prompt": {"consent"}}
}

func TestAuthorizationCodeFlowWithPKCE(t *testing.T) {
	h := newHarness(t)
	verifier := "verifier-0123456789-0123456789-0123456789"
	sum := sha256.Sum256([]byte(verifier))
	q := h.login(authorizeQuery(base64.RawURLEncoding.EncodeToString(sum[:])), "login")
	if q.Get("state") != "st-1" || q.Get("iss") != h.url || q.Get("scope") != "marketplace offline_access" || q.Get("code") == "" {
		t.Fatalf("redirect query %v", q)
	}
	exchange := func(code, verifier, redirectURI string) (int, map[string]any) {
		return h.post(url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI}, "code_verifier": {verifier}, "client_id": {"login"}, "client_secret": {"login-secret"}}, false)
	}
	if status, _ := exchange(q.Get("code"), "wrong-verifier", redirect); status != 400 {
		t.Errorf("a wrong PKCE verifier was accepted")
	}
	q = h.login(authorizeQuery(base64.RawURLEncoding.EncodeToString(sum[:])), "login")
	if status, _ := exchange(q.Get("code"), verifier, "https://evil.example.com/cb"); status != 400 {
		t.Errorf("a different redirect_uri was accepted")
	}
	q = h.login(authorizeQuery(base64.RawURLEncoding.EncodeToString(sum[:])), "login")
	status, body := exchange(q.Get("code"), verifier, redirect)
	if status != 200 || body["refresh_token"] == nil {
		t.Fatalf("exchange: %d %v", status, body)
	}
	if status, _ := exchange(q.Get("code"), verifier, redirect); status != 400 {
		t.Errorf("a code was accepted twice")
	}
	if _, ok := h.s.Introspect(body["access_token"].(string)); ok {
		t.Errorf("tokens from a replayed code are still valid")
	}
	q = h.login(authorizeQuery(base64.RawURLEncoding.EncodeToString(sum[:])), "login")
	h.now = h.now.Add(2 * time.Minute)
	if status, body := exchange(q.Get("code"), verifier, redirect); status != 400 {
		t.Errorf("an expired code was accepted: %v", body)
	}
}

func TestDenyAndBadAuthorizeRequests(t *testing.T) {
	h := newHarness(t)
	q := h.login(authorizeQuery(""), "deny")
	if diff := cmp.Diff(url.Values{"error": {"access_denied"}, "state": {"st-1"}}, q); diff != "" {
		t.Errorf("deny redirect (-want +got):\n%s", diff)
	}
	for name, mutate := range map[string]func(url.Values){
		"an unregistered redirect_uri":    func(v url.Values) { v.Set("redirect_uri", "https://evil.example.com/") },
		"a client-credentials client":     func(v url.Values) { v.Set("client_id", "api") },
		"an unknown client":               func(v url.Values) { v.Set("client_id", "nobody") },
		"a response_type other than code": func(v url.Values) { v.Set("response_type", "token") },
	} {
		t.Run(name, func(t *testing.T) {
			p := authorizeQuery("")
			mutate(p)
			resp, err := http.Get(h.url + "/connect/authorize?" + p.Encode())
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 400 {
				t.Errorf("HTTP %d, want an error page (400), never a redirect", resp.StatusCode)
			}
		})
	}
}

func TestMarketplaceAcceptsOnlyClientCredentialsTokens(t *testing.T) {
	h := newHarness(t)
	_, cc := h.post(url.Values{"grant_type": {"client_credentials"}, "client_id": {"api"}, "client_secret": {"api-secret"}}, false)
	_, user := h.post(refreshForm(h.s.SeedGrant("login", "cust", nil)), false)
	for name, tc := range map[string]struct {
		auth string
		want int
	}{
		"no token":                   {"", 401},
		"a client-credentials token": {"Bearer " + cc["access_token"].(string), 200},
		"a customer's token":         {"Bearer " + user["access_token"].(string), 403},
	} {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, h.url+"/marketplace/v2/listings", nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("HTTP %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

func TestFaults(t *testing.T) {
	h := newHarness(t)
	rt := h.s.SeedGrant("login", "cust", nil)
	h.s.InjectFault(Fault{GrantType: "refresh_token", After: true, Mode: FaultStatus, Status: 503, RetryAfter: "7"})
	if status, _ := h.post(refreshForm(rt), false); status != 503 {
		t.Fatalf("fault not applied: %d", status)
	}
	// The token was processed before the fault: it is spent.
	if status, body := h.post(refreshForm(rt), false); status != 400 || body["error"] != "invalid_grant" {
		t.Errorf("after an After fault the token still works: %d %v", status, body)
	}
	rt = h.s.SeedGrant("login", "cust", nil)
	h.s.InjectFault(Fault{Mode: FaultDropConnection})
	if _, err := http.PostForm(h.url+"/connect/token", refreshForm(rt)); err == nil {
		t.Errorf("a dropped connection returned a response")
	}
	if status, _ := h.post(refreshForm(rt), false); status != 200 {
		t.Errorf("a fault before processing spent the token: %d", status)
	}
}

func TestDiscoveryDocument(t *testing.T) {
	h := newHarness(t)
	resp, err := http.Get(h.url + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&doc)
	if doc["token_endpoint"] != h.url+"/connect/token" || doc["authorization_endpoint"] != h.url+"/connect/authorize" {
		t.Errorf("discovery %v", doc)
	}
}

func TestARefreshAfterTheAccessTokenExpiredCountsAsLate(t *testing.T) {
	h := newHarness(t)
	rt := h.s.SeedGrant("login", "cust", nil)
	_, body := h.post(refreshForm(rt), false)
	h.now = h.now.Add(60 * time.Second) // within the 90 s lifetime
	_, body = h.post(refreshForm(body["refresh_token"].(string)), false)
	if n := h.s.Stats().LateRenewals; n != 0 {
		t.Fatalf("%d late renewals, want 0", n)
	}
	h.now = h.now.Add(91 * time.Second)
	h.post(refreshForm(body["refresh_token"].(string)), false)
	if n := h.s.Stats().LateRenewals; n != 1 {
		t.Errorf("%d late renewals, want 1", n)
	}
}
