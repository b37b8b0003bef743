package tokenclient

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// call is one Issuer method with fixed grant arguments.
type call func(context.Context, *Client, Endpoint) (*Token, error)

func clientCredentials(ctx context.Context, c *Client, ep Endpoint) (*Token, error) {
	return c.ClientCredentials(ctx, ep)
}

func refresh(ctx context.Context, c *Client, ep Endpoint) (*Token, error) {
	return c.Refresh(ctx, ep, testRefresh)
}

func codeExchange(code, redirectURL, verifier string) call {
	return func(ctx context.Context, c *Client, ep Endpoint) (*Token, error) {
		return c.Exchange(ctx, ep, code, redirectURL, verifier)
	}
}

func TestTheClientAuthenticatesExactlyWhereItsAuthMethodSays(t *testing.T) {
	type credentials struct {
		FormClientID, FormClientSecret string
		HasBasic                       bool
		BasicUser, BasicPass           string
	}
	inForm := credentials{FormClientID: testClientID, FormClientSecret: testSecret}
	inHeader := credentials{HasBasic: true, BasicUser: testClientID, BasicPass: url.QueryEscape(testSecret)}
	cases := map[string]struct {
		method AuthMethod
		call   call
		want   credentials
	}{
		"client credentials with ClientSecretPost put them in the body only":    {ClientSecretPost, clientCredentials, inForm},
		"client credentials with ClientSecretBasic put them in the header only": {ClientSecretBasic, clientCredentials, inHeader},
		"a refresh with ClientSecretPost puts them in the body only":            {ClientSecretPost, refresh, inForm},
		"a refresh with ClientSecretBasic puts them in the header only":         {ClientSecretBasic, refresh, inHeader},
		"a code exchange with ClientSecretPost puts them in the body only":      {ClientSecretPost, codeExchange("code-1", "https://app.example.com/cb", ""), inForm},
		"a code exchange with ClientSecretBasic puts them in the header only":   {ClientSecretBasic, codeExchange("code-1", "https://app.example.com/cb", ""), inHeader},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := newIDP(t, reply(200, nil, tokenJSON(nil)))
			if _, err := tc.call(context.Background(), s.client(Options{}), s.endpoint(tc.method)); err != nil {
				t.Fatal(err)
			}
			seen := s.last(t)
			got := credentials{
				FormClientID: seen.Form.Get("client_id"), FormClientSecret: seen.Form.Get("client_secret"),
				HasBasic: seen.HasBasic, BasicUser: seen.BasicUser, BasicPass: seen.BasicPass,
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("credentials (-want +got):\n%s", diff)
			}
			s.assertRequests(t, 1)
		})
	}
}

func TestEachGrantSendsTheFormTheProtocolAsksFor(t *testing.T) {
	client := url.Values{"client_id": {testClientID}, "client_secret": {testSecret}}
	with := func(v url.Values) url.Values {
		for k, vv := range client {
			v[k] = vv
		}
		return v
	}
	cases := map[string]struct {
		scopes []string
		call   call
		want   url.Values
	}{
		"client credentials ask for the scopes, space-separated": {
			[]string{"marketplace", "pricing"}, clientCredentials,
			with(url.Values{"grant_type": {"client_credentials"}, "scope": {"marketplace pricing"}}),
		},
		"client credentials without scopes send no scope": {
			nil, clientCredentials, with(url.Values{"grant_type": {"client_credentials"}}),
		},
		"a refresh sends the refresh token and no scope": {
			[]string{"marketplace"}, refresh, with(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {testRefresh}}),
		},
		"a code exchange with PKCE sends the code, the redirect URI and the verifier": {
			nil, codeExchange("code-1", "https://app.example.com/cb", "verifier-1"),
			with(url.Values{"grant_type": {"authorization_code"}, "code": {"code-1"}, "redirect_uri": {"https://app.example.com/cb"}, "code_verifier": {"verifier-1"}}),
		},
		"a code exchange without PKCE sends no verifier": {
			nil, codeExchange("code-1", "https://app.example.com/cb", ""),
			with(url.Values{"grant_type": {"authorization_code"}, "code": {"code-1"}, "redirect_uri": {"https://app.example.com/cb"}}),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := newIDP(t, reply(200, nil, tokenJSON(nil)))
			ep := s.endpoint(ClientSecretPost)
			ep.Scopes = tc.scopes
			if _, err := tc.call(context.Background(), s.client(Options{}), ep); err != nil {
				t.Fatal(err)
			}
			seen := s.last(t)
			if diff := cmp.Diff(tc.want, seen.Form); diff != "" {
				t.Errorf("form (-want +got):\n%s", diff)
			}
			head := []string{seen.Method, seen.ContentType, seen.UserAgent}
			if diff := cmp.Diff([]string{http.MethodPost, "application/x-www-form-urlencoded", "cd-credentials-operator"}, head); diff != "" {
				t.Errorf("method, Content-Type, User-Agent (-want +got):\n%s", diff)
			}
			s.assertRequests(t, 1)
		})
	}
}

func TestASuccessfulAnswerBecomesAToken(t *testing.T) {
	std := Token{AccessToken: "at-new-0001", TokenType: "Bearer", RefreshToken: "rt-new-0002", Scopes: []string{"marketplace", "offline_access"}, Lifetime: 30 * time.Minute}
	changed := func(f func(*Token)) *Token {
		t := std
		f(&t)
		return &t
	}
	lifetime := func(d time.Duration) *Token { return changed(func(t *Token) { t.Lifetime = d }) }
	cases := map[string]struct {
		contentType string
		body        string
		want        *Token
	}{
		"Central Dispatch's answer":                               {"", tokenJSON(nil), &std},
		"expires_in as a numeric string":                          {"", tokenJSON(map[string]any{"expires_in": "600"}), lifetime(10 * time.Minute)},
		"expires_in as a decimal string":                          {"", tokenJSON(map[string]any{"expires_in": "3600.0"}), lifetime(time.Hour)},
		"expires_in as a fraction of a second":                    {"", tokenJSON(map[string]any{"expires_in": 0.5}), lifetime(0)},
		"expires_in missing":                                      {"", tokenJSON(map[string]any{"expires_in": nil}), lifetime(0)},
		"expires_in zero":                                         {"", tokenJSON(map[string]any{"expires_in": 0}), lifetime(0)},
		"expires_in negative":                                     {"", tokenJSON(map[string]any{"expires_in": -60}), lifetime(0)},
		"expires_in not a number":                                 {"", tokenJSON(map[string]any{"expires_in": "soon"}), lifetime(0)},
		"expires_in a boolean":                                    {"", tokenJSON(map[string]any{"expires_in": true}), lifetime(0)},
		"expires_in huge is capped at a day":                      {"", tokenJSON(map[string]any{"expires_in": 99999999999}), lifetime(24 * time.Hour)},
		"expires_in beyond float64 is capped at a day":            {"", `{"access_token":"at-new-0001","expires_in":1e400}`, &Token{AccessToken: "at-new-0001", TokenType: "Bearer", Scopes: []string{"marketplace"}, Lifetime: 24 * time.Hour}},
		"no refresh token: empty, the caller keeps the old one":   {"", tokenJSON(map[string]any{"refresh_token": nil}), changed(func(t *Token) { t.RefreshToken = "" })},
		"no scope: the requested ones":                            {"", tokenJSON(map[string]any{"scope": nil}), changed(func(t *Token) { t.Scopes = []string{"marketplace"} })},
		"an empty scope: the requested ones":                      {"", tokenJSON(map[string]any{"scope": " "}), changed(func(t *Token) { t.Scopes = []string{"marketplace"} })},
		"scope with extra spaces":                                 {"", tokenJSON(map[string]any{"scope": " marketplace  pricing "}), changed(func(t *Token) { t.Scopes = []string{"marketplace", "pricing"} })},
		"scope as a list":                                         {"", tokenJSON(map[string]any{"scope": []string{"a", "b"}}), changed(func(t *Token) { t.Scopes = []string{"a", "b"} })},
		"no token_type: Bearer":                                   {"", tokenJSON(map[string]any{"token_type": nil}), &std},
		"token_type in lower case is written canonically":         {"", tokenJSON(map[string]any{"token_type": "bearer"}), &std},
		"JSON labelled text/plain":                                {"text/plain", tokenJSON(nil), &std},
		"a form-encoded answer labelled as one":                   {"application/x-www-form-urlencoded", "access_token=at-new-0001&token_type=bearer&expires_in=1800&scope=marketplace+offline_access&refresh_token=rt-new-0002", &std},
		"an unknown field is ignored":                             {"", tokenJSON(map[string]any{"id_token": "x", "expires_at": 5}), &std},
		"a refresh_token of the wrong type counts as none at all": {"", tokenJSON(map[string]any{"refresh_token": 12}), changed(func(t *Token) { t.RefreshToken = "" })},
		"every b64token character and trailing padding":           {"", tokenJSON(map[string]any{"access_token": "aZ09-._~+/=="}), changed(func(t *Token) { t.AccessToken = "aZ09-._~+/==" })},
		"a refresh token may hold any VSCHAR, a space included":   {"", tokenJSON(map[string]any{"refresh_token": "rt ~!{}"}), changed(func(t *Token) { t.RefreshToken = "rt ~!{}" })},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := newIDP(t, reply(200, map[string]string{"Content-Type": tc.contentType}, tc.body))
			if tc.contentType == "" {
				s.respond = reply(200, nil, tc.body)
			}
			got, err := s.client(Options{}).Refresh(context.Background(), s.endpoint(ClientSecretPost), testRefresh)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("token (-want +got):\n%s", diff)
			}
			s.assertRequests(t, 1)
		})
	}
}

func TestConcurrentRequestsDoNotShareState(t *testing.T) {
	s := newIDP(t, func(w http.ResponseWriter, r *http.Request) {
		reply(200, nil, tokenJSON(map[string]any{"access_token": "at-for-" + r.PostForm.Get("refresh_token")}))(w, r)
	})
	c := s.client(Options{RequestsPerSecond: 1000, Burst: 16})
	var wg sync.WaitGroup
	got := make([]string, 16)
	for i := range got {
		wg.Go(func() {
			tok, err := c.Refresh(context.Background(), s.endpoint(ClientSecretPost), "rt-"+string(rune('a'+i)))
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = tok.AccessToken
		})
	}
	wg.Wait()
	for i, at := range got {
		if want := "at-for-rt-" + string(rune('a'+i)); at != want {
			t.Errorf("request %d got %q, want %q", i, at, want)
		}
	}
	s.assertRequests(t, 16)
}

func TestConcurrentRequestsReuseTheirConnections(t *testing.T) {
	const parallel, rounds = 16, 5
	// Every request of a round waits at the server until the whole round arrived, so
	// the round needs parallel connections at once.
	var round sync.WaitGroup
	s := newIDP(t, func(w http.ResponseWriter, r *http.Request) {
		round.Done()
		round.Wait()
		reply(200, nil, tokenJSON(nil))(w, r)
	})
	c := s.client(Options{})
	for range rounds {
		round.Add(parallel)
		var wg sync.WaitGroup
		for range parallel {
			wg.Go(func() {
				if _, err := c.Refresh(context.Background(), s.endpoint(ClientSecretPost), testRefresh); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	s.assertRequests(t, parallel*rounds)
	if n := s.conns.Load(); n > parallel {
		t.Errorf("%d connections for %d rounds of %d parallel requests, want at most %d: idle connections were thrown away", n, rounds, parallel, parallel)
	}
}

// x/oauth2 turns any 2xx with an `error` field into a RetrieveError. No listed provider
// sends one with a token, but a refresh token in an answer is the only successor of
// the one just spent: a 2xx carrying a token is read as a success answer, and only one
// with nothing but an error is a refusal.
func TestA2xxWithAnErrorFieldNeverDropsItsRefreshToken(t *testing.T) {
	cases := map[string]struct {
		body      string
		want      *Token
		wantErr   *Error
		tokenHeld string
	}{
		"an error field beside a whole token: the token is issued": {
			body: tokenJSON(map[string]any{"error": "x"}),
			want: &Token{AccessToken: "at-new-0001", TokenType: "Bearer", RefreshToken: "rt-new-0002", Scopes: []string{"marketplace", "offline_access"}, Lifetime: 30 * time.Minute},
		},
		"an error field beside a refresh token alone: unusable, the refresh token held": {
			body:    `{"error":"x","refresh_token":"rt-new-0002"}`,
			wantErr: &Error{Kind: KindInvalidResponse, StatusCode: 200, Description: errNoAccessToken.Error(), Token: &Token{RefreshToken: "rt-new-0002"}},
		},
		"an error field alone is still a refusal": {
			body:    `{"error":"invalid_grant"}`,
			wantErr: &Error{Kind: KindInvalidGrant, StatusCode: 200, Code: "invalid_grant"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := newIDP(t, reply(200, nil, tc.body))
			got, err := s.client(Options{}).Refresh(context.Background(), s.endpoint(ClientSecretPost), testRefresh)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("token (-want +got):\n%s", diff)
			}
			var gotErr *Error
			if err != nil {
				var ok bool
				if gotErr, ok = err.(*Error); !ok {
					t.Fatalf("error %T %v", err, err)
				}
			}
			if diff := cmp.Diff(tc.wantErr, gotErr, cmpopts.IgnoreUnexported(Error{})); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}
