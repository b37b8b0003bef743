package tokenclient

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// endpoint is a test token endpoint: it records each request's form and credentials and
// answers with the configured status, headers and body.
type endpoint struct {
	*httptest.Server
	requests atomic.Int32
	last     atomic.Pointer[seen]
	status   int
	header   map[string]string
	body     string
	delay    time.Duration
}

type seen struct {
	form                 map[string]string
	basicUser, basicPass string
	basicOK              bool
}

func newEndpoint(t *testing.T, status int, body string) *endpoint {
	t.Helper()
	e := &endpoint{status: status, body: body}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.requests.Add(1)
		_ = r.ParseForm()
		s := &seen{form: map[string]string{}}
		for k := range r.PostForm {
			s.form[k] = r.PostForm.Get(k)
		}
		s.basicUser, s.basicPass, s.basicOK = r.BasicAuth()
		e.last.Store(s)
		if e.delay > 0 {
			time.Sleep(e.delay) // the server is slow; the client's timeout is under test
		}
		w.Header().Set("Content-Type", "application/json")
		for k, v := range e.header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(e.status)
		_, _ = w.Write([]byte(e.body))
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *endpoint) host() string { return strings.TrimPrefix(e.URL, "http://") }

func (e *endpoint) ep(method AuthMethod) Endpoint {
	return Endpoint{TokenURL: e.URL + "/connect/token", AuthMethod: method, ClientID: "client-1", ClientSecret: "s3cret-value", Scopes: []string{"marketplace"}}
}

func okBody(extra map[string]any) string {
	m := map[string]any{"access_token": "at-1", "token_type": "Bearer", "expires_in": 1800, "scope": "marketplace offline_access", "refresh_token": "rt-2"}
	for k, v := range extra {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func TestAuthMethodIsExplicitAndRequestsCarryTheRightForm(t *testing.T) {
	cases := map[string]struct {
		method   AuthMethod
		call     func(*Client, Endpoint) (*Token, error)
		wantForm map[string]string
		basic    bool
	}{
		"client credentials with client_secret_post": {
			method:   ClientSecretPost,
			call:     func(c *Client, ep Endpoint) (*Token, error) { return c.ClientCredentials(context.Background(), ep) },
			wantForm: map[string]string{"grant_type": "client_credentials", "scope": "marketplace", "client_id": "client-1", "client_secret": "s3cret-value"},
		},
		"client credentials with client_secret_basic": {
			method:   ClientSecretBasic,
			call:     func(c *Client, ep Endpoint) (*Token, error) { return c.ClientCredentials(context.Background(), ep) },
			wantForm: map[string]string{"grant_type": "client_credentials", "scope": "marketplace"},
			basic:    true,
		},
		"refresh with client_secret_post": {
			method:   ClientSecretPost,
			call:     func(c *Client, ep Endpoint) (*Token, error) { return c.Refresh(context.Background(), ep, "rt-1") },
			wantForm: map[string]string{"grant_type": "refresh_token", "refresh_token": "rt-1", "client_id": "client-1", "client_secret": "s3cret-value"},
		},
		"refresh with client_secret_basic": {
			method:   ClientSecretBasic,
			call:     func(c *Client, ep Endpoint) (*Token, error) { return c.Refresh(context.Background(), ep, "rt-1") },
			wantForm: map[string]string{"grant_type": "refresh_token", "refresh_token": "rt-1"},
			basic:    true,
		},
		"code exchange with PKCE": {
			method: ClientSecretPost,
			call: func(c *Client, ep Endpoint) (*Token, error) {
				return c.Exchange(context.Background(), ep, "code-1", "https://app.example.com/cb", "verifier-1")
			},
			wantForm: map[string]string{"grant_type": "authorization_code", "code": "code-1", "redirect_uri": "https://app.example.com/cb", "code_verifier": "verifier-1", "client_id": "client-1", "client_secret": "s3cret-value"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEndpoint(t, 200, okBody(nil))
			c := New(Options{AllowedHosts: []string{e.host()}})
			tok, err := tc.call(c, e.ep(tc.method))
			if err != nil {
				t.Fatal(err)
			}
			s := e.last.Load()
			if diff := cmp.Diff(tc.wantForm, s.form); diff != "" {
				t.Errorf("form (-want +got):\n%s", diff)
			}
			if s.basicOK != tc.basic || (tc.basic && (s.basicUser != "client-1" || s.basicPass != "s3cret-value")) {
				t.Errorf("basic auth = %v %q %q, want %v", s.basicOK, s.basicUser, s.basicPass, tc.basic)
			}
			want := &Token{AccessToken: "at-1", TokenType: "Bearer", RefreshToken: "rt-2", Scopes: []string{"marketplace", "offline_access"}, Lifetime: 30 * time.Minute}
			if diff := cmp.Diff(want, tok); diff != "" {
				t.Errorf("token (-want +got):\n%s", diff)
			}
			if n := e.requests.Load(); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
		})
	}
}

func TestTokenResponseFields(t *testing.T) {
	cases := map[string]struct {
		body string
		want Token
	}{
		"expires_in as a string":       {okBody(map[string]any{"expires_in": "600"}), Token{Lifetime: 10 * time.Minute}},
		"expires_in missing":           {okBody(map[string]any{"expires_in": nil}), Token{Lifetime: 0}},
		"expires_in zero":              {okBody(map[string]any{"expires_in": 0}), Token{Lifetime: 0}},
		"expires_in negative":          {okBody(map[string]any{"expires_in": -5}), Token{Lifetime: 0}},
		"expires_in absurd is capped":  {okBody(map[string]any{"expires_in": 99999999999}), Token{Lifetime: 24 * time.Hour}},
		"expires_in not a number":      {okBody(map[string]any{"expires_in": "soon"}), Token{Lifetime: 0}},
		"no refresh token in response": {okBody(map[string]any{"refresh_token": nil}), Token{Lifetime: 30 * time.Minute}},
		"no scope: the requested ones": {okBody(map[string]any{"scope": nil}), Token{Lifetime: 30 * time.Minute, Scopes: []string{"marketplace"}}},
		"token_type in lower case":     {okBody(map[string]any{"token_type": "bearer"}), Token{Lifetime: 30 * time.Minute}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEndpoint(t, 200, tc.body)
			tok, err := New(Options{AllowedHosts: []string{e.host()}}).Refresh(context.Background(), e.ep(ClientSecretPost), "rt-1")
			if err != nil && !strings.Contains(name, "not a number") {
				t.Fatal(err)
			}
			if err != nil {
				// A non-numeric expires_in makes the answer unusable, but the new refresh
				// token in it must come back to the caller.
				var te *Error
				if !errors.As(err, &te) || te.Token == nil || te.Token.RefreshToken != "rt-2" {
					t.Fatalf("err %v does not carry the new refresh token", err)
				}
				return
			}
			if tok.Lifetime != tc.want.Lifetime {
				t.Errorf("Lifetime %s, want %s", tok.Lifetime, tc.want.Lifetime)
			}
			if tc.want.Scopes != nil && !cmp.Equal(tok.Scopes, tc.want.Scopes) {
				t.Errorf("Scopes %v, want %v", tok.Scopes, tc.want.Scopes)
			}
			if tok.TokenType != "Bearer" {
				t.Errorf("TokenType %q", tok.TokenType)
			}
		})
	}
}

func TestErrorClassification(t *testing.T) {
	cases := map[string]struct {
		status    int
		header    map[string]string
		body      string
		kind      ErrorKind
		ambiguous bool
		retry     time.Duration
		newRT     string
	}{
		"IdentityServer unauthorized_client":                    {400, nil, `{"error":"unauthorized_client"}`, KindGrantTypeNotAllowed, false, 0, ""},
		"unsupported_grant_type":                                {400, nil, `{"error":"unsupported_grant_type"}`, KindGrantTypeNotAllowed, false, 0, ""},
		"invalid_request saying grant not allowed":              {400, nil, `{"error":"invalid_request","error_description":"Grant type not allowed for this client"}`, KindGrantTypeNotAllowed, false, 0, ""},
		"Keycloak-style wording":                                {400, nil, `{"error":"invalid_request","error_description":"Client not allowed for direct access grants"}`, KindGrantTypeNotAllowed, false, 0, ""},
		"Okta-style wording":                                    {400, nil, `{"error":"invalid_request","error_description":"The client is not authorized to use the provided grant type. Configured grant types: [authorization_code, refresh_token]."}`, KindGrantTypeNotAllowed, false, 0, ""},
		"a bare 403":                                            {403, nil, ``, KindGrantTypeNotAllowed, false, 0, ""},
		"402 payment required":                                  {402, nil, `{"message":"product not allocated"}`, KindProductNotAllocated, false, 0, ""},
		"invalid_client as 400":                                 {400, nil, `{"error":"invalid_client"}`, KindInvalidClient, false, 0, ""},
		"invalid_client as 401":                                 {401, nil, `{"error":"invalid_client"}`, KindInvalidClient, false, 0, ""},
		"invalid_grant":                                         {400, nil, `{"error":"invalid_grant"}`, KindInvalidGrant, false, 0, ""},
		"a 500 may have spent the token":                        {500, nil, `{"error":"server_error"}`, KindTransient, true, 0, ""},
		"an HTML 502 page":                                      {502, map[string]string{"Content-Type": "text/html"}, `<html><body>Bad gateway</body></html>`, KindTransient, true, 0, ""},
		"503 with Retry-After seconds":                          {503, map[string]string{"Retry-After": "120"}, ``, KindRateLimited, false, 2 * time.Minute, ""},
		"429 with an HTTP-date Retry-After":                     {429, map[string]string{"Retry-After": time.Now().Add(10 * time.Minute).UTC().Format(http.TimeFormat)}, ``, KindRateLimited, false, 10 * time.Minute, ""},
		"429 without Retry-After waits 30 s":                    {429, nil, ``, KindRateLimited, false, 30 * time.Second, ""},
		"malformed JSON on 200":                                 {200, nil, `{"access_token": `, KindInvalidResponse, true, 0, ""},
		"200 without access_token but with a new refresh token": {200, nil, `{"refresh_token":"rt-9","expires_in":60}`, KindInvalidResponse, false, 0, "rt-9"},
		"200 without access_token or refresh token":             {200, nil, `{"expires_in":60}`, KindInvalidResponse, true, 0, ""},
		"token_type mac":                                        {200, nil, okBody(map[string]any{"token_type": "mac"}), KindInvalidResponse, false, 0, "rt-2"},
		"a redirect is not followed":                            {302, map[string]string{"Location": "https://elsewhere.example.com/token"}, ``, KindInvalidResponse, false, 0, ""},
		"another 4xx":                                           {404, nil, `not found`, KindTransient, false, 0, ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEndpoint(t, tc.status, tc.body)
			e.header = tc.header
			_, err := New(Options{AllowedHosts: []string{e.host()}}).Refresh(context.Background(), e.ep(ClientSecretPost), "rt-1")
			var te *Error
			if !errors.As(err, &te) {
				t.Fatalf("err %v is not a *Error", err)
			}
			if te.Kind != tc.kind || te.Ambiguous != tc.ambiguous {
				t.Errorf("Kind %s Ambiguous %v, want %s %v (%v)", te.Kind, te.Ambiguous, tc.kind, tc.ambiguous, te)
			}
			if tc.retry != 0 && (te.RetryAfter < tc.retry-2*time.Second || te.RetryAfter > tc.retry) {
				t.Errorf("RetryAfter %s, want about %s", te.RetryAfter, tc.retry)
			}
			gotRT := ""
			if te.Token != nil {
				gotRT = te.Token.RefreshToken
			}
			if gotRT != tc.newRT {
				t.Errorf("salvaged refresh token %q, want %q", gotRT, tc.newRT)
			}
			if n := e.requests.Load(); n != 1 {
				t.Errorf("%d requests, want exactly 1", n)
			}
		})
	}
}

func TestHostsOffTheAllowListGetNothing(t *testing.T) {
	var conns atomic.Int32
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: http.NotFoundHandler(), ConnState: func(net.Conn, http.ConnState) { conns.Add(1) }}}
	srv.Start()
	defer srv.Close()
	cases := map[string]Endpoint{
		"a host not on the list":            {TokenURL: srv.URL + "/token", AuthMethod: ClientSecretPost, ClientSecret: "x"},
		"plain http to a non-loopback host": {TokenURL: "http://id.centraldispatch.com/connect/token", AuthMethod: ClientSecretPost, ClientSecret: "x"},
		"not a URL":                         {TokenURL: "id.centraldispatch.com", AuthMethod: ClientSecretPost},
	}
	c := New(Options{AllowedHosts: []string{"id.centraldispatch.com", "127.0.0.1:1"}})
	for name, ep := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := c.ClientCredentials(context.Background(), ep)
			if KindOf(err) != KindHostNotAllowed {
				t.Errorf("err %v, want HostNotAllowed", err)
			}
		})
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("%d connections to a host off the list", n)
	}
}

func TestARedirectToAnotherHostSendsItNothing(t *testing.T) {
	other := newEndpoint(t, 200, okBody(nil))
	e := newEndpoint(t, 307, ``)
	e.header = map[string]string{"Location": other.URL + "/connect/token"}
	_, err := New(Options{AllowedHosts: []string{e.host(), other.host()}}).Refresh(context.Background(), e.ep(ClientSecretPost), "rt-1")
	if KindOf(err) != KindInvalidResponse {
		t.Errorf("err %v, want InvalidResponse", err)
	}
	if n := other.requests.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests", n)
	}
}

func TestASlowServerTimesOutAmbiguouslyAndOnce(t *testing.T) {
	e := newEndpoint(t, 200, okBody(nil))
	e.delay = 500 * time.Millisecond
	_, err := New(Options{AllowedHosts: []string{e.host()}, Timeout: 100 * time.Millisecond}).Refresh(context.Background(), e.ep(ClientSecretPost), "rt-1")
	var te *Error
	if !errors.As(err, &te) || te.Kind != KindTransient || !te.Ambiguous {
		t.Fatalf("err %v, want an ambiguous transient error", err)
	}
	if n := e.requests.Load(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestAConnectionRefusedIsNotAmbiguous(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	_, err := New(Options{AllowedHosts: []string{addr}}).Refresh(context.Background(), Endpoint{TokenURL: "http://" + addr + "/t", AuthMethod: ClientSecretPost}, "rt-1")
	var te *Error
	if !errors.As(err, &te) || te.Kind != KindTransient || te.Ambiguous {
		t.Fatalf("err %+v, want a transient, unambiguous error", err)
	}
}

func TestAHugeBodyIsRefused(t *testing.T) {
	e := newEndpoint(t, 200, `{"access_token":"`+strings.Repeat("a", 4096)+`"}`)
	_, err := New(Options{AllowedHosts: []string{e.host()}, MaxResponseBytes: 1024}).ClientCredentials(context.Background(), e.ep(ClientSecretPost))
	if KindOf(err) != KindInvalidResponse {
		t.Errorf("err %v, want InvalidResponse", err)
	}
}

func TestErrorsNeverCarrySecrets(t *testing.T) {
	jwt := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjdXN0b21lciJ9.c2lnbmF0dXJlLXZhbHVlLWhlcmU"
	e := newEndpoint(t, 400, `{"error":"invalid_grant","error_description":"token rt-secret-1 for client with secret s3cret-value rejected; last access `+jwt+`\u0007"}`)
	_, err := New(Options{AllowedHosts: []string{e.host()}}).Refresh(context.Background(), e.ep(ClientSecretPost), "rt-secret-1")
	msg := err.Error()
	for _, secret := range []string{"rt-secret-1", "s3cret-value", jwt, "\a"} {
		if strings.Contains(msg, secret) {
			t.Errorf("error %q contains %q", msg, secret)
		}
	}
	if !strings.Contains(msg, "invalid_grant") || !strings.Contains(msg, "[redacted]") {
		t.Errorf("error %q lost its meaning", msg)
	}
}

func TestARequestCancelledWhileRateLimitedIsUnambiguousAndNotSent(t *testing.T) {
	e := newEndpoint(t, 200, okBody(nil))
	c := New(Options{AllowedHosts: []string{e.host()}, RequestsPerSecond: 0.001, Burst: 1})
	if _, err := c.ClientCredentials(context.Background(), e.ep(ClientSecretPost)); err != nil {
		t.Fatal(err) // the burst
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Refresh(ctx, e.ep(ClientSecretPost), "rt-1")
	var te *Error
	if !errors.As(err, &te) || te.Kind != KindTransient || te.Ambiguous {
		t.Errorf("err %v: a request cancelled while waiting for the limiter must be unambiguous", err)
	}
	if n := e.requests.Load(); n != 1 {
		t.Errorf("%d requests, want 1 (the second never sent)", n)
	}
}

func FuzzParseTokenResponse(f *testing.F) {
	for _, seed := range []string{okBody(nil), `{}`, `[]`, `null`, `{"expires_in":"12"}`, `{"expires_in":1e400}`, `<html>`, `{"refresh_token":5}`, ``} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		raw, _ := parseTokenResponse(body)
		if d := lifetime(raw.ExpiresIn); d < 0 || d > maxLifetime {
			t.Errorf("lifetime %s out of range", d)
		}
		_ = scrub(string(body), []string{"secret"})
	})
}
