package tokenclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var ignoreCause = cmpopts.IgnoreUnexported(Error{})

func TestRefusalsAreClassifiedByCodeThenStatus(t *testing.T) {
	serverNow := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	html := map[string]string{"Content-Type": "text/html"}
	grantRefused := func(description string) Error {
		return Error{Kind: KindGrantTypeNotAllowed, StatusCode: 400, Code: "invalid_request", Description: description}
	}
	checkAnswers(t, map[string]answerCase{
		"IdentityServer's unauthorized_client":    {400, nil, `{"error":"unauthorized_client"}`, Error{Kind: KindGrantTypeNotAllowed, StatusCode: 400, Code: "unauthorized_client"}},
		"unsupported_grant_type":                  {400, nil, `{"error":"unsupported_grant_type"}`, Error{Kind: KindGrantTypeNotAllowed, StatusCode: 400, Code: "unsupported_grant_type"}},
		"invalid_request: grant type not allowed": {400, nil, `{"error":"invalid_request","error_description":"Grant type not allowed for this client"}`, grantRefused("Grant type not allowed for this client")},
		"invalid_request: not allowed to use grant type": {400, nil, `{"error":"invalid_request","error_description":"The client is not allowed to use grant type client_credentials"}`,
			grantRefused("The client is not allowed to use grant type client_credentials")},
		"invalid_request: unauthorized grant type": {400, nil, `{"error":"invalid_request","error_description":"Unauthorized grant type: refresh_token"}`, grantRefused("Unauthorized grant type: refresh_token")},
		"invalid_request: grant_type is not permitted": {400, nil, `{"error":"invalid_request","error_description":"grant_type 'client_credentials' is not permitted for this client"}`,
			grantRefused("grant_type 'client_credentials' is not permitted for this client")},
		"invalid_request: client is not authorized to use this grant type": {400, nil, `{"error":"invalid_request","error_description":"Client is not authorized to use this grant type"}`,
			grantRefused("Client is not authorized to use this grant type")},
		"Keycloak's direct access grants wording": {400, nil, `{"error":"invalid_request","error_description":"Client not allowed for direct access grants"}`, grantRefused("Client not allowed for direct access grants")},
		"invalid_request about something else is refused, not transient": {400, nil, `{"error":"invalid_request","error_description":"The redirect_uri parameter is missing"}`,
			Error{Kind: KindRefused, StatusCode: 400, Code: "invalid_request", Description: "The redirect_uri parameter is missing"}},
		"invalid_scope without a description names no scope": {400, nil, `{"error":"invalid_scope"}`, Error{Kind: KindInvalidScope, StatusCode: 400, Code: "invalid_scope"}},
		"a bare 403 with an empty body":                      {403, nil, ``, Error{Kind: KindGrantTypeNotAllowed, StatusCode: 403, Endpoint: tokenPath}},
		"402 with a message":                                 {402, nil, `{"message":"Product not allocated"}`, Error{Kind: KindProductNotAllocated, StatusCode: 402, Description: "Product not allocated", Endpoint: tokenPath}},
		"402 as the sandbox sends it":                        {402, nil, `{"message":"Payment Required"}`, Error{Kind: KindProductNotAllocated, StatusCode: 402, Description: "Payment Required", Endpoint: tokenPath}},
		"temporarily_unavailable as a 400 is an outage": {400, nil, `{"error":"temporarily_unavailable","error_description":"The server is temporarily too busy to handle the request."}`,
			Error{Kind: KindTransient, StatusCode: 400, Code: "temporarily_unavailable", Description: "The server is temporarily too busy to handle the request."}},
		"server_error as a 400 is an outage that may have acted": {400, nil, `{"error":"server_error"}`, Error{Kind: KindTransient, StatusCode: 400, Code: "server_error", Ambiguous: true}},
		"temporarily_unavailable as a 400 with Retry-After is a rate limit": {400, map[string]string{"Retry-After": "120"}, `{"error":"temporarily_unavailable"}`,
			Error{Kind: KindRateLimited, StatusCode: 400, Code: "temporarily_unavailable", RetryAfter: 2 * time.Minute}},
		"invalid_grant in a 503 still rejects the grant": {503, nil, `{"error":"invalid_grant"}`, Error{Kind: KindInvalidGrant, StatusCode: 503, Code: "invalid_grant"}},
		"invalid_client as a 400":                        {400, nil, `{"error":"invalid_client"}`, Error{Kind: KindInvalidClient, StatusCode: 400, Code: "invalid_client"}},
		"invalid_client as a 401":                        {401, nil, `{"error":"invalid_client"}`, Error{Kind: KindInvalidClient, StatusCode: 401, Code: "invalid_client"}},
		"a 401 HTML page":                                {401, html, `<html>Unauthorized</html>`, Error{Kind: KindInvalidClient, StatusCode: 401, Description: "non-JSON response (text/html)", Endpoint: tokenPath}},
		"invalid_grant":                                  {400, nil, `{"error":"invalid_grant","error_description":"refresh token expired"}`, Error{Kind: KindInvalidGrant, StatusCode: 400, Code: "invalid_grant", Description: "refresh token expired"}},
		"invalid_grant in a 200":                         {200, nil, `{"error":"invalid_grant"}`, Error{Kind: KindInvalidGrant, StatusCode: 200, Code: "invalid_grant"}},
		"a 500 may have spent the token":                 {500, nil, `{"error":"server_error"}`, Error{Kind: KindTransient, StatusCode: 500, Code: "server_error", Ambiguous: true}},
		"an HTML 502 page":                               {502, html, `<html><body><h1>502 Bad Gateway</h1>nginx</body></html>`, Error{Kind: KindTransient, StatusCode: 502, Description: "non-JSON response (text/html)", Ambiguous: true, Endpoint: tokenPath}},
		"503 with Retry-After seconds": {503, map[string]string{"Retry-After": "120"}, `{"error":"temporarily_unavailable"}`,
			Error{Kind: KindRateLimited, StatusCode: 503, Code: "temporarily_unavailable", RetryAfter: 2 * time.Minute, Ambiguous: true}},
		"503 without Retry-After": {503, nil, ``, Error{Kind: KindTransient, StatusCode: 503, Ambiguous: true, Endpoint: tokenPath}},
		"429 with an HTTP-date Retry-After": {429, map[string]string{"Date": serverNow.Format(http.TimeFormat), "Retry-After": serverNow.Add(10 * time.Minute).Format(http.TimeFormat)}, ``,
			Error{Kind: KindRateLimited, StatusCode: 429, RetryAfter: 10 * time.Minute, Endpoint: tokenPath}},
		"429 without Retry-After waits 30 s, a guess":              {429, nil, ``, Error{Kind: KindRateLimited, StatusCode: 429, RetryAfter: 30 * time.Second, RetryAfterGuessed: true, Endpoint: tokenPath}},
		"429 asking for a day waits an hour":                       {429, map[string]string{"Retry-After": "86400"}, ``, Error{Kind: KindRateLimited, StatusCode: 429, RetryAfter: time.Hour, Endpoint: tokenPath}},
		"429 asking for no wait waits a second":                    {429, map[string]string{"Retry-After": "0"}, ``, Error{Kind: KindRateLimited, StatusCode: 429, RetryAfter: time.Second, Endpoint: tokenPath}},
		"429 with a garbled Retry-After waits 30":                  {429, map[string]string{"Retry-After": "soon"}, ``, Error{Kind: KindRateLimited, StatusCode: 429, RetryAfter: 30 * time.Second, Endpoint: tokenPath}},
		"another 4xx is refused, not transient":                    {409, map[string]string{"Content-Type": "text/plain"}, `conflict`, Error{Kind: KindRefused, StatusCode: 409, Description: "non-JSON response (text/plain)", Endpoint: tokenPath}},
		"an unknown error code in a 4xx is refused":                {400, nil, `{"error":"invalid_target"}`, Error{Kind: KindRefused, StatusCode: 400, Code: "invalid_target"}},
		"a 408 is a timeout: transient, and nothing was processed": {408, nil, ``, Error{Kind: KindTransient, StatusCode: 408, Endpoint: tokenPath}},
		"a 403 that says a scope is refused": {403, nil, `{"error":"access_denied","error_description":"scope pricing is not permitted for this client"}`,
			Error{Kind: KindInvalidScope, StatusCode: 403, Code: "access_denied", Description: "scope pricing is not permitted for this client"}},
		"an invalid_request about a missing scope parameter is refused, not a scope refusal": {400, nil, `{"error":"invalid_request","error_description":"The scope parameter is missing"}`,
			Error{Kind: KindRefused, StatusCode: 400, Code: "invalid_request", Description: "The scope parameter is missing"}},
		"a code that names a scope is a scope refusal": {400, nil, `{"error":"insufficient_scope"}`, Error{Kind: KindInvalidScope, StatusCode: 400, Code: "insufficient_scope"}},
		"a 403 access_denied that says nothing of scopes is a grant type refusal": {403, nil, `{"error":"access_denied","error_description":"Unauthorized"}`,
			Error{Kind: KindGrantTypeNotAllowed, StatusCode: 403, Code: "access_denied", Description: "Unauthorized"}},
		"a 5xx whose page speaks of scopes is still transient": {500, nil, `{"error":"server_error","error_description":"scope store unknown"}`,
			Error{Kind: KindTransient, StatusCode: 500, Code: "server_error", Description: "scope store unknown", Ambiguous: true}},
		// A wrong URL: an issuer with the token path already in it, a mistyped path.
		"a 404 page is no token endpoint, and names the URL called": {404, map[string]string{"Content-Type": "text/plain"}, `404 page not found`,
			Error{Kind: KindEndpointNotFound, StatusCode: 404, Description: "non-JSON response (text/plain)", Endpoint: tokenPath}},
		"a 405 is no token endpoint either": {405, nil, ``, Error{Kind: KindEndpointNotFound, StatusCode: 405, Endpoint: tokenPath}},
		"a gateway's JSON 404 without a route": {404, nil, `{"message":"no Route matched with those values"}`,
			Error{Kind: KindEndpointNotFound, StatusCode: 404, Description: "no Route matched with those values", Endpoint: tokenPath}},
		"Keycloak's 404 for a realm that does not exist": {404, nil, `{"error":"Realm does not exist"}`,
			Error{Kind: KindEndpointNotFound, StatusCode: 404, Code: "Realm does not exist", Endpoint: tokenPath}},
		"a 404 with a code that places it is that code": {404, nil, `{"error":"invalid_grant"}`, Error{Kind: KindInvalidGrant, StatusCode: 404, Code: "invalid_grant"}},
		"a 302 is not followed": {302, map[string]string{"Location": "https://elsewhere.example.com/token"}, ``,
			Error{Kind: KindInvalidResponse, StatusCode: 302, Description: "token endpoint redirected to another location", Endpoint: tokenPath}},
	})
}

// answerCase is one answer from the token endpoint and the error it must become.
type answerCase struct {
	status int
	header map[string]string
	body   string
	want   Error
}

// checkAnswers sends one refresh per case to a server giving that answer.
func checkAnswers(t *testing.T, cases map[string]answerCase) {
	t.Helper()
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := newIDP(t, reply(tc.status, tc.header, tc.body))
			_, err := s.client(Options{}).Refresh(context.Background(), s.endpoint(ClientSecretPost), testRefresh)
			var got *Error
			if !errors.As(err, &got) {
				t.Fatalf("err %v is not a *Error", err)
			}
			if diff := cmp.Diff(s.at(&tc.want), got, ignoreCause); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			for _, secret := range []string{testSecret, testRefresh, "at-new-0001", "rt-new-0002", "rt-new-0009"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("Error() %q contains %q", err, secret)
				}
			}
			s.assertRequests(t, 1)
		})
	}
}

func TestUnusableSuccessAnswersAreRefusedWithoutLosingARefreshToken(t *testing.T) {
	html := map[string]string{"Content-Type": "text/html"}
	checkAnswers(t, map[string]answerCase{
		"malformed JSON on 200": {200, nil, `{"access_token": `, Error{Kind: KindInvalidResponse, StatusCode: 200, Description: "the response is not a JSON object", Ambiguous: true}},
		"an HTML page on 200":   {200, html, `<html>Welcome</html>`, Error{Kind: KindInvalidResponse, StatusCode: 200, Description: "the response is not a JSON object", Ambiguous: true}},
		"200 without access_token but with a new refresh token": {200, nil, `{"refresh_token":"rt-new-0009","expires_in":60}`,
			Error{Kind: KindInvalidResponse, StatusCode: 200, Description: "the response has no access_token", Token: &Token{RefreshToken: "rt-new-0009"}}},
		"200 without access_token but with a new refresh token and its lifetime": {200, nil, `{"refresh_token":"rt-new-0009","expires_in":60,"refresh_expires_in":1800}`,
			Error{Kind: KindInvalidResponse, StatusCode: 200, Description: "the response has no access_token", Token: &Token{RefreshToken: "rt-new-0009", RefreshLifetime: 30 * time.Minute}}},
		"200 without access_token or refresh token": {200, nil, `{"expires_in":60}`, Error{Kind: KindInvalidResponse, StatusCode: 200, Description: "the response has no access_token", Ambiguous: true}},
		"200 with an access_token that is not a string": {200, nil, `{"access_token":42,"refresh_token":"rt-new-0009"}`,
			Error{Kind: KindInvalidResponse, StatusCode: 200, Description: "the response has no access_token", Token: &Token{RefreshToken: "rt-new-0009"}}},
		"token_type mac with a new refresh token": {200, nil, tokenJSON(map[string]any{"token_type": "mac"}),
			Error{Kind: KindInvalidResponse, StatusCode: 200, Description: "the response's token_type is not Bearer", Token: &Token{RefreshToken: "rt-new-0002"}}},
		"token_type mac without a refresh token": {200, nil, tokenJSON(map[string]any{"token_type": "mac", "refresh_token": nil}),
			Error{Kind: KindInvalidResponse, StatusCode: 200, Description: "the response's token_type is not Bearer", Ambiguous: true}},
		"an access token that would split a header keeps the new refresh token": {200, nil, tokenJSON(map[string]any{"access_token": "at-1\r\nX-Injected: 1"}),
			Error{Kind: KindInvalidResponse, StatusCode: 200, Description: "the response's access_token is not an RFC 6750 bearer token (b64token)", Token: &Token{RefreshToken: "rt-new-0002"}}},
		"an access token with a space": {200, nil, tokenJSON(map[string]any{"access_token": "at 1"}),
			Error{Kind: KindInvalidResponse, StatusCode: 200, Description: "the response's access_token is not an RFC 6750 bearer token (b64token)", Token: &Token{RefreshToken: "rt-new-0002"}}},
		"an access token with padding in the middle": {200, nil, tokenJSON(map[string]any{"access_token": "at=1"}),
			Error{Kind: KindInvalidResponse, StatusCode: 200, Description: "the response's access_token is not an RFC 6750 bearer token (b64token)", Token: &Token{RefreshToken: "rt-new-0002"}}},
		"an access token with a non-ASCII letter": {200, nil, tokenJSON(map[string]any{"access_token": "at-é"}),
			Error{Kind: KindInvalidResponse, StatusCode: 200, Description: "the response's access_token is not an RFC 6750 bearer token (b64token)", Token: &Token{RefreshToken: "rt-new-0002"}}},
		"a refresh token with a line break cannot be stored: the refresh may be lost": {200, nil, tokenJSON(map[string]any{"refresh_token": "rt-new\n0002"}),
			Error{Kind: KindInvalidResponse, StatusCode: 200, Description: "the response's refresh_token has characters a refresh token cannot have (RFC 6749 appendix A.17)", Ambiguous: true}},
		"a refresh token with a control character": {200, nil, tokenJSON(map[string]any{"refresh_token": "rt-new\u00000002"}),
			Error{Kind: KindInvalidResponse, StatusCode: 200, Description: "the response's refresh_token has characters a refresh token cannot have (RFC 6749 appendix A.17)", Ambiguous: true}},
		"a refresh token with a non-ASCII letter": {200, nil, tokenJSON(map[string]any{"refresh_token": "rt-ñ"}),
			Error{Kind: KindInvalidResponse, StatusCode: 200, Description: "the response's refresh_token has characters a refresh token cannot have (RFC 6749 appendix A.17)", Ambiguous: true}},
		"a bad refresh token next to a bad access token is the one reported": {200, nil, tokenJSON(map[string]any{"access_token": "at\r\n", "refresh_token": "rt\r\n"}),
			Error{Kind: KindInvalidResponse, StatusCode: 200, Description: "the response's refresh_token has characters a refresh token cannot have (RFC 6749 appendix A.17)", Ambiguous: true}},
	})
}

func TestBodiesOverTheLimitAreNeverRead(t *testing.T) {
	const limit = 1024
	big := `{"access_token":"` + strings.Repeat("a", 4*limit) + `"}`
	cases := map[string]struct {
		status int
		header map[string]string
		body   string
		want   *Error
	}{
		"a 200 over the limit: the refresh may be spent": {200, nil, big, &Error{Kind: KindInvalidResponse, StatusCode: 200, Description: "response body larger than 1024 bytes", Ambiguous: true}},
		"a 500 over the limit":                           {500, nil, big, &Error{Kind: KindTransient, StatusCode: 500, Description: "response body larger than 1024 bytes", Ambiguous: true, Endpoint: tokenPath}},
		"a 429 over the limit still waits":               {429, map[string]string{"Retry-After": "5"}, big, &Error{Kind: KindRateLimited, StatusCode: 429, Description: "response body larger than 1024 bytes", RetryAfter: 5 * time.Second, Endpoint: tokenPath}},
		"a 200 exactly at the limit is read":             {200, nil, `{"access_token":"at","expires_in":60,"pad":"` + strings.Repeat("x", limit-len(`{"access_token":"at","expires_in":60,"pad":""}`)) + `"}`, nil},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := newIDP(t, reply(tc.status, tc.header, tc.body))
			_, err := s.client(Options{MaxResponseBytes: limit}).ClientCredentials(context.Background(), s.endpoint(ClientSecretPost))
			var got *Error
			if err != nil && !errors.As(err, &got) {
				t.Fatalf("err %v is not a *Error", err)
			}
			if diff := cmp.Diff(s.at(tc.want), got, ignoreCause); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			s.assertRequests(t, 1)
		})
	}
}

func TestARedirectIsNeverFollowed(t *testing.T) {
	for _, status := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			other := newIDP(t, reply(200, nil, tokenJSON(nil)))
			s := newIDP(t, reply(status, map[string]string{"Location": other.URL + "/connect/token"}, ``))
			c := New(Options{AllowedHosts: []string{s.host(), other.host()}})
			_, err := c.Refresh(context.Background(), s.endpoint(ClientSecretPost), testRefresh)
			want := &Error{Kind: KindInvalidResponse, StatusCode: status, Description: "token endpoint redirected to another location", Endpoint: tokenPath}
			if diff := cmp.Diff(s.at(want), err, ignoreCause); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			s.assertRequests(t, 1)
			if n := other.conns.Load() + other.requests.Load(); n != 0 {
				t.Errorf("the redirect target was contacted (%d connections and requests)", n)
			}
		})
	}
}

// TestAnAnswerLostAfterSendingIsAmbiguous: the server got the request, so a refresh
// token may be spent; the caller must know that, and nothing may be sent again.
func TestAnAnswerLostAfterSendingIsAmbiguous(t *testing.T) {
	cases := map[string]struct {
		respond http.HandlerFunc
		want    *Error
		is      error
	}{
		"a server slower than the timeout": {
			respond: func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
			},
			want: &Error{Kind: KindTransient, Description: "no answer within the timeout", Ambiguous: true}, is: context.DeadlineExceeded,
		},
		"a connection dropped after the request arrived": {
			respond: func(w http.ResponseWriter, r *http.Request) {
				conn, _, _ := w.(http.Hijacker).Hijack()
				conn.Close()
			},
			want: &Error{Kind: KindTransient, Description: "EOF", Ambiguous: true},
		},
		"a 200 whose body is cut short": {
			respond: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "500")
				w.WriteHeader(200)
				_, _ = w.Write([]byte(`{"access_token":"at-new-0001","refresh_token":"rt-new`))
			},
			want: &Error{Kind: KindTransient, StatusCode: 200, Description: "unexpected EOF", Ambiguous: true},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := newIDP(t, tc.respond)
			_, err := s.client(Options{Timeout: 200 * time.Millisecond}).Refresh(context.Background(), s.endpoint(ClientSecretPost), testRefresh)
			if diff := cmp.Diff(tc.want, err, ignoreCause); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) is false", err, tc.is)
			}
			s.assertRequests(t, 1)
		})
	}
}

// TestAFailureBeforeSendingIsNotAmbiguous: nothing reached a server, so the refresh
// token is untouched and may be sent later.
func TestAFailureBeforeSendingIsNotAmbiguous(t *testing.T) {
	t.Run("a connection refused", func(t *testing.T) {
		closed, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := closed.Addr().String()
		closed.Close()
		ep := Endpoint{TokenURL: "http://" + addr + "/connect/token", AuthMethod: ClientSecretPost, ClientID: testClientID, ClientSecret: testSecret}
		_, err := New(Options{AllowedHosts: []string{addr}}).Refresh(context.Background(), ep, testRefresh)
		want := &Error{Kind: KindTransient, Description: "dial tcp " + addr + ": connect: connection refused"}
		if diff := cmp.Diff(want, err, ignoreCause); diff != "" {
			t.Errorf("error (-want +got):\n%s", diff)
		}
	})
	t.Run("a caller that gave up before sending", func(t *testing.T) {
		s := newIDP(t, reply(200, nil, tokenJSON(nil)))
		cancelled, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := s.client(Options{}).Refresh(cancelled, s.endpoint(ClientSecretPost), testRefresh)
		want := &Error{Kind: KindTransient, Description: "the request was abandoned: context canceled"}
		if diff := cmp.Diff(want, err, ignoreCause); diff != "" {
			t.Errorf("error (-want +got):\n%s", diff)
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("errors.Is(%v, context.Canceled) is false", err)
		}
		s.assertRequests(t, 0)
	})
}

func TestNothingIsSentForARequestThatCannotBeRight(t *testing.T) {
	cases := map[string]struct {
		method AuthMethod
		call   call
		want   *Error
	}{
		"an empty auth method": {"", clientCredentials,
			&Error{Kind: KindInvalidClient, Description: `unknown client auth method "": want ClientSecretPost or ClientSecretBasic`}},
		"an auth method this client does not speak": {"PrivateKeyJWT", refresh,
			&Error{Kind: KindInvalidClient, Description: `unknown client auth method "PrivateKeyJWT": want ClientSecretPost or ClientSecretBasic`}},
		"a refresh without a refresh token": {ClientSecretPost, func(ctx context.Context, c *Client, ep Endpoint) (*Token, error) { return c.Refresh(ctx, ep, "") },
			&Error{Kind: KindInvalidGrant, Description: "no refresh token to send"}},
		"an exchange without a code": {ClientSecretPost, codeExchange("", "https://app.example.com/cb", ""),
			&Error{Kind: KindInvalidGrant, Description: "no authorization code to send"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := newIDP(t, reply(200, nil, tokenJSON(nil)))
			_, err := tc.call(context.Background(), s.client(Options{}), s.endpoint(tc.method))
			if diff := cmp.Diff(tc.want, err, ignoreCause); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if n := s.conns.Load(); n != 0 {
				t.Errorf("%d connections to the endpoint, want none", n)
			}
		})
	}
}

func TestTheRateLimiterNeverSendsAfterTheCallerGaveUp(t *testing.T) {
	s := newIDP(t, reply(200, nil, tokenJSON(nil)))
	c := s.client(Options{RequestsPerSecond: 0.001, Burst: 1})
	if _, err := c.ClientCredentials(context.Background(), s.endpoint(ClientSecretPost)); err != nil {
		t.Fatal(err) // the burst
	}
	shortly, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Refresh(shortly, s.endpoint(ClientSecretPost), testRefresh)
	want := &Error{Kind: KindTransient, Description: "gave up waiting for the token request rate limit: context deadline exceeded"}
	if diff := cmp.Diff(want, err, ignoreCause); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("errors.Is(%v, context.DeadlineExceeded) is false", err)
	}
	s.assertRequests(t, 1)
}

func TestAnAdmittedRequestGoesOutWithoutWaitingAgainAndOnlyOnce(t *testing.T) {
	s := newIDP(t, reply(200, nil, tokenJSON(nil)))
	c := s.client(Options{RequestsPerSecond: 0.001, Burst: 1})
	admitted, err := c.Admit(context.Background()) // the only turn for 1,000 s
	if err != nil {
		t.Fatal(err)
	}
	shortly, cancel := context.WithTimeout(admitted, 50*time.Millisecond)
	defer cancel()
	if _, err := c.Refresh(shortly, s.endpoint(ClientSecretPost), testRefresh); err != nil {
		t.Fatalf("the admitted request: %v", err)
	}
	_, err = c.Refresh(shortly, s.endpoint(ClientSecretPost), testRefresh)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a second request on the admitted context: %v, want it to wait for a turn of its own", err)
	}
	if _, err := c.Admit(shortly); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Admit without a turn in time: %v, want the deadline", err)
	}
	s.assertRequests(t, 1)
}

// A manager stopping (SIGTERM, a lost leader election) cancels its reconciles' context:
// a pass on its way to a rotation must mark and send nothing then, with a rate limit or
// without one (--token-requests-per-second=0), whose Admit never waited on the context.
func TestAdmitRefusesAStoppedCallerWithOrWithoutARateLimit(t *testing.T) {
	s := newIDP(t, reply(200, nil, tokenJSON(nil)))
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	for name, opts := range map[string]Options{
		"no rate limit": {},
		"a rate limit":  {RequestsPerSecond: 10, Burst: 10},
	} {
		if _, err := s.client(opts).Admit(stopped); !errors.Is(err, context.Canceled) {
			t.Errorf("%s: Admit on a cancelled context: %v, want it refused (context canceled)", name, err)
		}
	}
	if _, err := Admit(stopped, issuerWithoutAdmit{}); !errors.Is(err, context.Canceled) {
		t.Errorf("an issuer without a rate limit of its own: Admit on a cancelled context: %v, want it refused", err)
	}
	if _, err := Admit(context.Background(), issuerWithoutAdmit{}); err != nil {
		t.Errorf("an issuer without a rate limit of its own: Admit: %v, want a turn at once", err)
	}
	s.assertRequests(t, 0)
}

// issuerWithoutAdmit is an Issuer with no rate limit of its own (a test's fake).
type issuerWithoutAdmit struct{ Issuer }

func TestTheTransportRefusesASecondSend(t *testing.T) {
	s := newIDP(t, reply(200, nil, tokenJSON(nil)))
	tr := &onceTransport{base: http.DefaultTransport, ex: &exchange{max: 1 << 20}}
	for i, want := range []error{nil, errSentTwice} {
		req, _ := http.NewRequest(http.MethodPost, s.URL, strings.NewReader("grant_type=refresh_token"))
		resp, err := tr.RoundTrip(req)
		if !errors.Is(err, want) {
			t.Errorf("send %d: err %v, want %v", i+1, err, want)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}
	s.assertRequests(t, 1)
}

func TestSecretsNeverComeBackInErrors(t *testing.T) {
	const code, verifier = "code-abc-123", "verifier-xyz-789"
	// echo repeats everything the request carried, as a careless server might.
	echo := func(status int, contentType string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			said := fmt.Sprintf("refresh token %s / code %s / verifier %s used by %s with secret %s\x07 (%s) raw %s",
				r.PostForm.Get("refresh_token"), r.PostForm.Get("code"), r.PostForm.Get("code_verifier"), r.PostForm.Get("client_id"),
				r.PostForm.Get("client_secret"), r.Header.Get("Authorization"), r.PostForm.Encode())
			w.Header().Set("Content-Type", contentType)
			w.WriteHeader(status)
			if contentType == "application/json" {
				_, _ = fmt.Fprintf(w, `{"error":"invalid_grant %s","error_description":%q,"message":%q}`, r.PostForm.Get("refresh_token"), said, said)
				return
			}
			_, _ = w.Write([]byte("<html>" + said + "</html>"))
		}
	}
	secrets := []string{testSecret, "s3cret-Value%2B42", testRefresh, code, verifier, "\x07"}
	for _, method := range []AuthMethod{ClientSecretPost, ClientSecretBasic} {
		for _, status := range []int{400, 402, 404, 500, 200} {
			for _, ct := range []string{"application/json", "text/html"} {
				for grant, call := range map[string]call{"refresh": refresh, "exchange": codeExchange(code, "https://app.example.com/cb", verifier)} {
					name := fmt.Sprintf("%s %s %d %s", grant, method, status, ct)
					t.Run(name, func(t *testing.T) {
						s := newIDP(t, echo(status, ct))
						_, err := call(context.Background(), s.client(Options{}), s.endpoint(method))
						if err == nil {
							t.Fatal("no error")
						}
						msg := err.Error()
						for _, secret := range secrets {
							if strings.Contains(msg, secret) {
								t.Errorf("error %q contains %q", msg, secret)
							}
						}
					})
				}
			}
		}
	}
}

func TestAnEchoedSecretIsRedactedNotTheRestOfTheDescription(t *testing.T) {
	s := newIDP(t, reply(400, nil, `{"error":"invalid_grant","error_description":"refresh token `+testRefresh+` was already used by client-1 (secret `+testSecret+`)"}`))
	_, err := s.client(Options{}).Refresh(context.Background(), s.endpoint(ClientSecretPost), testRefresh)
	want := &Error{Kind: KindInvalidGrant, StatusCode: 400, Code: "invalid_grant", Description: "refresh token [redacted] was already used by client-1 (secret [redacted])"}
	if diff := cmp.Diff(want, err, ignoreCause); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
}

// The token URL is the user's own and not a secret, but what may ride along in it is:
// a query string (an API key some gateways take there), or a secret in the path.
func TestARefusalNamesItsEndpointWithoutQueryOrSecrets(t *testing.T) {
	s := newIDP(t, reply(404, map[string]string{"Content-Type": "text/plain"}, `404 page not found`))
	ep := s.endpoint(ClientSecretPost)
	ep.TokenURL = s.URL + "/t/" + testSecret + tokenPath + "?api_key=key-0001&tenant=t1#frag"
	_, err := s.client(Options{}).ClientCredentials(context.Background(), ep)
	want := &Error{Kind: KindEndpointNotFound, StatusCode: 404, Description: "non-JSON response (text/plain)", Endpoint: s.URL + "/t/[redacted]" + tokenPath}
	if diff := cmp.Diff(want, err, ignoreCause); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
	wantMsg := "no token endpoint at " + s.URL + "/t/[redacted]" + tokenPath + ": non-JSON response (text/plain) (HTTP 404)"
	if diff := cmp.Diff(wantMsg, err.Error()); diff != "" {
		t.Errorf("Error() (-want +got):\n%s", diff)
	}
}

func TestErrorMessages(t *testing.T) {
	cases := map[string]struct {
		err  *Error
		want string
	}{
		"a refusal names the code, the description and the status": {
			&Error{Kind: KindGrantTypeNotAllowed, StatusCode: 400, Code: "unauthorized_client", Description: "Client not authorized for this grant"},
			"token endpoint refused the request: unauthorized_client: Client not authorized for this grant (HTTP 400)",
		},
		"a rate limit says how long to wait": {
			&Error{Kind: KindRateLimited, StatusCode: 429, RetryAfter: 30 * time.Second},
			"token endpoint refused the request (HTTP 429), retry after 30s",
		},
		"a refused host says nothing was sent": {
			&Error{Kind: KindHostNotAllowed, Description: "host evil.example is not on the allowed token hosts"},
			"token request not sent: host evil.example is not on the allowed token hosts",
		},
		"a timeout says the server may have acted": {
			&Error{Kind: KindTransient, Description: "no answer within the timeout", Ambiguous: true},
			"token request failed: no answer within the timeout; the server may have processed the request",
		},
		"an unusable answer": {
			&Error{Kind: KindInvalidResponse, StatusCode: 200, Description: "the response has no access_token", Token: &Token{RefreshToken: "rt-new-0009"}},
			"token endpoint returned an unusable response: the response has no access_token (HTTP 200)",
		},
		"a wrong endpoint names the URL called": {
			&Error{Kind: KindEndpointNotFound, StatusCode: 404, Description: "non-JSON response (text/plain)", Endpoint: "https://id.example.com/connect/token/connect/token"},
			"no token endpoint at https://id.example.com/connect/token/connect/token: non-JSON response (text/plain) (HTTP 404)",
		},
		"an answer without an OAuth error names where it came from": {
			&Error{Kind: KindRefused, StatusCode: 400, Description: "non-JSON response (text/html)", Endpoint: "https://id.example.com/connect/token"},
			"token endpoint https://id.example.com/connect/token refused the request: non-JSON response (text/html) (HTTP 400)",
		},
		"a hand-built endpoint loses its userinfo, query and fragment": {
			&Error{Kind: KindEndpointNotFound, StatusCode: 405, Endpoint: "https://user:pw@id.example.com/token?client_secret=abc&x=y#top"},
			"no token endpoint at https://id.example.com/token (HTTP 405)",
		},
		"a tenant id in the endpoint's path is not taken for a token": {
			&Error{Kind: KindEndpointNotFound, StatusCode: 404, Endpoint: "https://login.example.com/0d0b5c42-7f5e-4a8e-9a3b-2f1c6d7e8f90/realms/operations-platform/oauth2/v2.0/token"},
			"no token endpoint at https://login.example.com/0d0b5c42-7f5e-4a8e-9a3b-2f1c6d7e8f90/realms/operations-platform/oauth2/v2.0/token (HTTP 404)",
		},
		"a JWT in a hand-built endpoint is redacted": {
			&Error{Kind: KindEndpointNotFound, StatusCode: 404, Endpoint: "https://id.example.com/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl/token"},
			"no token endpoint at https://id.example.com/[redacted]/token (HTTP 404)",
		},
		"a wrong endpoint without a URL still says what is wrong": {
			&Error{Kind: KindEndpointNotFound, StatusCode: 404},
			"no token endpoint at the URL called (HTTP 404)",
		},
		"a token in a hand-built error is still redacted": {
			&Error{Kind: KindTransient, StatusCode: 500, Description: "saw eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl\nand more"},
			"token endpoint refused the request: saw [redacted] and more (HTTP 500)",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.err.Error()); diff != "" {
				t.Errorf("Error() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTerminalKinds(t *testing.T) {
	want := map[ErrorKind]bool{
		KindHostNotAllowed: true, KindInvalidClient: true, KindInvalidGrant: true, KindInvalidScope: true, KindGrantTypeNotAllowed: true,
		KindProductNotAllocated: true, KindEndpointNotFound: true, KindRateLimited: false, KindTransient: false, KindRefused: false, KindInvalidResponse: false,
	}
	got := map[ErrorKind]bool{}
	for kind := range want {
		got[kind] = (&Error{Kind: kind}).Terminal()
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Terminal (-want +got):\n%s", diff)
	}
}

func TestKindOf(t *testing.T) {
	cases := map[string]struct {
		err  error
		want ErrorKind
	}{
		"nil":                     {nil, ""},
		"another error":           {errors.New("boom"), ""},
		"a token error":           {&Error{Kind: KindInvalidGrant}, KindInvalidGrant},
		"a wrapped token error":   {fmt.Errorf("refreshing: %w", &Error{Kind: KindRateLimited}), KindRateLimited},
		"a context error wrapped": {fmt.Errorf("x: %w", context.Canceled), ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := KindOf(tc.err); got != tc.want {
				t.Errorf("KindOf = %q, want %q", got, tc.want)
			}
		})
	}
}
