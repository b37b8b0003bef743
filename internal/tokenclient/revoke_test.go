package tokenclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
)

// revocationPath is where s.revocationURL points.
const revocationPath = "/connect/revocation"

func (s *idp) revocationURL() string { return s.URL + revocationPath }

func TestRevokeSendsTheRFC7009FormAuthenticatedAsConfigured(t *testing.T) {
	cases := map[string]struct {
		method AuthMethod
		hint   string
		want   seenRequest
	}{
		"ClientSecretPost with a hint puts the client in the body": {ClientSecretPost, "refresh_token", seenRequest{
			Method: http.MethodPost, ContentType: "application/x-www-form-urlencoded", UserAgent: userAgent,
			Form: url.Values{"token": {testRefresh}, "token_type_hint": {"refresh_token"}, "client_id": {testClientID}, "client_secret": {testSecret}},
		}},
		"ClientSecretBasic without a hint puts the client in the header only": {ClientSecretBasic, "", seenRequest{
			Method: http.MethodPost, ContentType: "application/x-www-form-urlencoded", UserAgent: userAgent,
			Form:     url.Values{"token": {testRefresh}},
			HasBasic: true, BasicUser: testClientID, BasicPass: url.QueryEscape(testSecret),
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := newIDP(t, reply(200, nil, ``))
			if err := s.client(Options{}).Revoke(context.Background(), s.endpoint(tc.method), s.revocationURL(), testRefresh, tc.hint); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, s.last(t)); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
			s.assertRequests(t, 1)
		})
	}
}

func TestRevokeOutcomes(t *testing.T) {
	cases := map[string]struct {
		respond http.HandlerFunc
		want    *Error
	}{
		"200 with a body is revoked": {reply(200, nil, `{"ok":true}`), nil},
		"204 is revoked too":         {reply(204, nil, ``), nil},
		"a wrong client secret": {reply(401, nil, `{"error":"invalid_client"}`),
			&Error{Kind: KindInvalidClient, StatusCode: 401, Code: "invalid_client"}},
		"a token type the server does not revoke is refused": {reply(400, nil, `{"error":"unsupported_token_type"}`),
			&Error{Kind: KindRefused, StatusCode: 400, Code: "unsupported_token_type"}},
		"a form-encoded error is read": {reply(400, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, `error=invalid_client&error_description=bad+secret`),
			&Error{Kind: KindInvalidClient, StatusCode: 400, Code: "invalid_client", Description: "bad secret"}},
		"503 with Retry-After asks to wait": {reply(503, map[string]string{"Retry-After": "9"}, `{"error":"temporarily_unavailable"}`),
			&Error{Kind: KindRateLimited, StatusCode: 503, Code: "temporarily_unavailable", RetryAfter: 9 * time.Second, Ambiguous: true}},
		"a 500 may have revoked it": {reply(500, nil, ``), &Error{Kind: KindTransient, StatusCode: 500, Ambiguous: true, Endpoint: revocationPath}},
		"a redirect is not followed": {reply(302, map[string]string{"Location": "https://elsewhere.example.com/revoke"}, ``),
			&Error{Kind: KindInvalidResponse, StatusCode: 302, Description: "token endpoint redirected to another location", Endpoint: revocationPath}},
		"an echoed token and secret are redacted": {func(w http.ResponseWriter, r *http.Request) {
			reply(400, nil, fmt.Sprintf(`{"error":"invalid_request","error_description":"token %s of %s"}`, r.PostForm.Get("token"), r.PostForm.Get("client_secret")))(w, r)
		}, &Error{Kind: KindRefused, StatusCode: 400, Code: "invalid_request", Description: "token [redacted] of [redacted]"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := newIDP(t, tc.respond)
			err := s.client(Options{}).Revoke(context.Background(), s.endpoint(ClientSecretPost), s.revocationURL(), testRefresh, "refresh_token")
			var got *Error
			if err != nil && !errors.As(err, &got) {
				t.Fatalf("err %v is not a *Error", err)
			}
			if diff := cmp.Diff(s.at(tc.want), got, ignoreCause); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if err != nil && (strings.Contains(err.Error(), testRefresh) || strings.Contains(err.Error(), testSecret)) {
				t.Errorf("Error() %q carries the token or the secret", err)
			}
			s.assertRequests(t, 1)
		})
	}
}

func TestRevokeSendsNothingThatCannotBeRight(t *testing.T) {
	cases := map[string]struct {
		method       AuthMethod
		url          func(*idp) string
		token        string
		want         *Error
		allowAnyHost bool
	}{
		"an empty token": {ClientSecretPost, (*idp).revocationURL, "",
			&Error{Kind: KindInvalidGrant, Description: "no token to revoke"}, true},
		"an unknown auth method": {"PrivateKeyJWT", (*idp).revocationURL, testRefresh,
			&Error{Kind: KindInvalidClient, Description: `unknown client auth method "PrivateKeyJWT": want ClientSecretPost or ClientSecretBasic`}, true},
		"a revocation host not on the allow-list": {ClientSecretPost, (*idp).revocationURL, testRefresh,
			&Error{Kind: KindHostNotAllowed, Description: "host 127.0.0.1 is not on the allowed token hosts"}, false},
		"plain http to a host that is not loopback": {ClientSecretPost, func(*idp) string { return "http://id.example.com/connect/revocation" }, testRefresh,
			&Error{Kind: KindHostNotAllowed, Description: "plain http is only allowed to loopback hosts; use https for id.example.com"}, true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := newIDP(t, reply(200, nil, ``))
			c := New(Options{AllowedHosts: []string{"id.example.com"}})
			if tc.allowAnyHost {
				c = s.client(Options{AllowedHosts: []string{"id.example.com"}})
			}
			err := c.Revoke(context.Background(), s.endpoint(tc.method), tc.url(s), tc.token, "refresh_token")
			if diff := cmp.Diff(tc.want, err, ignoreCause); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if n := s.conns.Load(); n != 0 {
				t.Errorf("%d connections to the server, want none", n)
			}
		})
	}
}

func TestARevocationWithoutAnAnswerIsAmbiguous(t *testing.T) {
	s := newIDP(t, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	err := s.client(Options{Timeout: 100 * time.Millisecond}).Revoke(context.Background(), s.endpoint(ClientSecretPost), s.revocationURL(), testRefresh, "")
	want := &Error{Kind: KindTransient, Description: "no answer within the timeout", Ambiguous: true}
	if diff := cmp.Diff(want, err, ignoreCause); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
	s.assertRequests(t, 1)
}

// TestRevokingAtTheSandboxEndsTheCustomersGrant revokes a refresh token at the
// sandbox's RFC 7009 endpoint, as deletionPolicy: Delete does.
func TestRevokingAtTheSandboxEndsTheCustomersGrant(t *testing.T) {
	for _, method := range []AuthMethod{ClientSecretPost, ClientSecretBasic} {
		t.Run(string(method), func(t *testing.T) {
			sb := cdsandbox.New(cdsandbox.Options{Clients: []cdsandbox.Client{
				{ID: testClientID, Secret: testSecret, GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"https://app.example.com/cb"}},
			}})
			srv := httptest.NewServer(sb)
			t.Cleanup(srv.Close)
			sb.SetIssuer(srv.URL)
			c := New(Options{AllowedHosts: []string{strings.TrimPrefix(srv.URL, "http://")}})
			ep := Endpoint{TokenURL: srv.URL + "/connect/token", AuthMethod: method, ClientID: testClientID, ClientSecret: testSecret}
			rt := sb.SeedGrant(testClientID, "dispatcher", []string{"marketplace", "offline_access"})

			if err := c.Revoke(context.Background(), ep, srv.URL+"/connect/revocation", rt, "refresh_token"); err != nil {
				t.Fatal(err)
			}
			if err := c.Revoke(context.Background(), ep, srv.URL+"/connect/revocation", "rt-nobody-knows", "refresh_token"); err != nil {
				t.Errorf("an unknown token: %v, want success (RFC 7009 §2.2)", err)
			}
			wrong := ep
			wrong.ClientSecret = "not-the-secret"
			if kind := KindOf(c.Revoke(context.Background(), wrong, srv.URL+"/connect/revocation", rt, "")); kind != KindInvalidClient {
				t.Errorf("a wrong secret: kind %q, want %q", kind, KindInvalidClient)
			}
			if _, err := c.Refresh(context.Background(), ep, rt); KindOf(err) != KindInvalidGrant {
				t.Errorf("refreshing a revoked token: %v, want %s", err, KindInvalidGrant)
			}
			st := sb.Stats()
			if got := []int{st.Revocations, st.GrantsRevoked}; !cmp.Equal(got, []int{2, 1}) {
				t.Errorf("revocations and grants revoked %v, want [2 1]", got)
			}
		})
	}
}
