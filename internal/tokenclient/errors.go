package tokenclient

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// ErrorKind says what a failed token request means for the caller.
type ErrorKind string

const (
	// KindHostNotAllowed: the host is not on the allow-list, or the URL is not https
	// (http to loopback excepted). Nothing was sent.
	KindHostNotAllowed ErrorKind = "HostNotAllowed"
	// KindInvalidClient: `invalid_client`, or 401 without a recognised code: the client
	// id or secret is wrong. Also an unknown AuthMethod (nothing sent).
	KindInvalidClient ErrorKind = "InvalidClient"
	// KindInvalidGrant: the refresh token or code is rejected for good: spent, expired,
	// revoked, its session gone, or user interaction required, whatever the provider's
	// wording (`invalid_grant`, OIDC's `interaction_required`, Dex's `invalid_request`
	// "already been claimed", …). Only a new authorization helps.
	KindInvalidGrant ErrorKind = "InvalidGrant"
	// KindInvalidScope: a requested scope is refused (`invalid_scope`, or a 403 saying a
	// scope was not granted). Error.Scopes names the scopes the answer named.
	KindInvalidScope ErrorKind = "InvalidScope"
	// KindGrantTypeNotAllowed: the server refused this grant type for this client
	// (`unauthorized_client`, `unsupported_grant_type`, 403, or a 400 saying so): the
	// credential is used for the wrong flow.
	KindGrantTypeNotAllowed ErrorKind = "GrantTypeNotAllowed"
	// KindProductNotAllocated: HTTP 402.
	KindProductNotAllocated ErrorKind = "ProductNotAllocated"
	// KindRateLimited: 429, 503 with Retry-After, or a provider's known throttle answer
	// (Entra's AADSTS50196, sent as invalid_grant); RetryAfter says how long to wait.
	KindRateLimited ErrorKind = "RateLimited"
	// KindTransient: 5xx, timeouts, connection errors, and a client-side rate-limit
	// wait that was given up. Sending again later may work.
	KindTransient ErrorKind = "Transient"
	// KindEndpointNotFound: a 404 or 405 that no OAuth error code places: the URL is no
	// token endpoint (an issuer with the token path already in it, a mistyped path, a
	// gateway with no route). Error.Endpoint names the URL that answered. Only a new URL,
	// or the server adding the route, helps.
	KindEndpointNotFound ErrorKind = "EndpointNotFound"
	// KindRefused: the server answered with a 4xx that no known code, wording or status
	// places. It answered, so it is not ambiguous; it may work again (a fault at the
	// server) or never (a configuration the server rejects), so callers retry it a
	// bounded number of times, never in a loop.
	KindRefused ErrorKind = "Refused"
	// KindInvalidResponse: a 2xx that cannot be used, or a redirect.
	KindInvalidResponse ErrorKind = "InvalidResponse"
)

// Error is the error every Issuer method returns.
type Error struct {
	Kind       ErrorKind
	StatusCode int    // 0 when there was no response
	Code       string // the OAuth `error` field, scrubbed
	// Description is the server's error_description, or this package's own words,
	// scrubbed of anything secret and cut to 200 runes.
	Description string
	RetryAfter  time.Duration
	// RetryAfterGuessed: the answer named no wait (no Retry-After or rate-limit reset
	// header), so RetryAfter is this package's estimate of the provider's throttle, not
	// the server's demand: a caller may cut it short for a token about to expire.
	RetryAfterGuessed bool
	// Ambiguous is true when the server may have processed the request without the
	// caller getting a usable answer: a timeout or a broken connection after the request
	// was written, a 5xx, an unreadable 2xx. How a refresh is retried after one is
	// rotation.Judge's call: it counts only an attempt with no answer at all against the
	// one resend DESIGN §6.5 allows. A 5xx came from a server that answered; were the
	// token spent behind a gateway's 502, the resend is refused with invalid_grant and
	// the customer logs in again, as after a lost answer, while counting 5xx answers
	// would give live tokens up during an identity-server outage.
	Ambiguous bool
	// Token is set only on an unusable 2xx that still carried a refresh token (only
	// RefreshToken is filled in): the old one is spent, so the caller must store this one.
	Token *Token
	// Scopes are the scope names a KindInvalidScope answer named, scrubbed like the
	// description; empty when none could be read with confidence.
	Scopes []string
	// Endpoint is the URL that answered, set on KindEndpointNotFound and whenever the
	// answer carried no OAuth error code to say what was wrong: then where it came from
	// is what the reader needs (a doubled path, the wrong host). Only scheme, host and
	// path are ever kept, with this request's secrets redacted: a query string or
	// userinfo may hold a secret.
	Endpoint string

	// cause is a context error, for errors.Is; never anything that holds a body.
	cause error
}

// Error never includes a token, a secret, a code or the form: it ends up in conditions,
// events and logs.
func (e *Error) Error() string {
	var b strings.Builder
	for _, part := range []string{e.Code, e.Description} {
		if part != "" {
			b.WriteString(": " + part)
		}
	}
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.StatusCode)
	}
	if e.Kind == KindRateLimited && e.RetryAfter > 0 {
		fmt.Fprintf(&b, ", retry after %s", e.RetryAfter)
	}
	if e.Ambiguous {
		b.WriteString("; the server may have processed the request")
	}
	// The fields are scrubbed where they are filled in; this catches an Error built
	// by hand, without cutting the message short. The lead is left out of the
	// patterns: the endpoint in it is the user's own URL, cut down to scheme, host and
	// path, and longRun would take a tenant id or a long realm path for a token.
	msg := strings.Map(dropControl, b.String())
	return e.lead() + longRun.ReplaceAllString(jwtLike.ReplaceAllString(msg, redacted), redacted)
}

func (e *Error) lead() string {
	ep := endpointText(e.Endpoint)
	at := "token endpoint"
	if ep != "" {
		at += " " + ep
	}
	switch {
	case e.Kind == KindHostNotAllowed || e.StatusCode == 0 && e.Terminal():
		return "token request not sent"
	case e.Kind == KindEndpointNotFound && ep == "":
		return "no token endpoint at the URL called"
	case e.Kind == KindEndpointNotFound:
		return "no token endpoint at " + ep
	case e.Kind == KindInvalidResponse:
		return at + " returned an unusable response"
	case e.StatusCode >= 300:
		return at + " refused the request"
	}
	return "token request failed"
}

// endpointText is the part of a URL that may be shown: scheme, host and path. Userinfo,
// a query string and a fragment are dropped, whatever they hold; a URL that does not
// parse is not shown at all.
func endpointText(raw string) string {
	u, err := url.Parse(raw)
	if raw == "" || err != nil || u.Host == "" {
		return ""
	}
	shown := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	s := strings.Map(dropControl, shown.String())
	return truncate(jwtLike.ReplaceAllString(s, redacted), maxDescription)
}

// Unwrap gives errors.Is access to context.Canceled and context.DeadlineExceeded.
func (e *Error) Unwrap() error { return e.cause }

// Terminal reports whether sending the same request again cannot help until something
// changes: the client, its secret, the grant or the configuration.
func (e *Error) Terminal() bool {
	switch e.Kind {
	case KindInvalidClient, KindInvalidGrant, KindInvalidScope, KindGrantTypeNotAllowed, KindProductNotAllocated, KindHostNotAllowed, KindEndpointNotFound:
		return true
	}
	return false
}

// KindOf returns the kind of a token error, "" for nil or another error.
func KindOf(err error) ErrorKind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return ""
}
