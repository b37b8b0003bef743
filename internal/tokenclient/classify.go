package tokenclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

const (
	defaultRetryAfter = 30 * time.Second
	maxRetryAfter     = time.Hour
)

// asRetrieveError finds x/oauth2's error for an answer with a non-2xx status or an
// `error` field.
func asRetrieveError(err error) (*oauth2.RetrieveError, bool) {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		return re, true
	}
	return nil, false
}

// refusal classifies an answer the server meant as an error. endpoint is the URL that
// answered: an answer without an OAuth error code, and one from no token endpoint,
// name it, as a reader cannot tell a doubled path or a wrong host from "non-JSON
// response (text/plain)" alone.
func refusal(re *oauth2.RetrieveError, endpoint string, red redactor, now time.Time) *Error {
	status := re.Response.StatusCode
	code := strings.ToLower(strings.TrimSpace(re.ErrorCode))
	e := &Error{
		StatusCode:  status,
		Code:        truncate(red.scrub(re.ErrorCode), 64),
		Description: red.scrub(re.ErrorDescription),
	}
	p := kindFor(status, code, re.ErrorDescription, re.Response.Header)
	e.Kind, e.Ambiguous = p.kind, p.ambiguous
	if code == "" || e.Kind == KindEndpointNotFound {
		e.Endpoint = red.redact(endpointText(endpoint))
	}
	switch {
	case e.Kind == KindRateLimited:
		e.RetryAfter, e.RetryAfterGuessed = retryAfter(re.Response.Header, now, p.wait)
	case e.Kind == KindInvalidScope:
		e.Scopes = scopesNamed(re.ErrorDescription, re.Body, red)
	case status >= 300 && status < 400:
		e.Description = "token endpoint redirected to another location"
	case code == "" && e.Description == "":
		e.Description = describeBody(re.Response.Header.Get("Content-Type"), re.Body, red)
	}
	return e
}

// placement is what kindFor makes of an error answer.
type placement struct {
	kind ErrorKind
	// ambiguous: the server may have processed the request anyway.
	ambiguous bool
	// wait is how long a throttle lasts when the answer names no wait (0: the default).
	wait time.Duration
}

// kindFor maps an error answer to a kind, and says whether the server may have
// processed the request anyway. In order: a provider's known wording for this code (it
// may overrule the code), the code, what only the server side can mean (rate limits,
// temporarily_unavailable and server_error under any status, 5xx, redirects), a known
// wording under any code, the description's own words, the status (a 404 or 405 says
// the URL is no token endpoint), and last KindRefused: the server answered, but nothing
// here places it. A code that settles the grant (invalid_grant) wins over a 5xx status.
func kindFor(status int, code, description string, h http.Header) placement {
	d := normalizeDescription(description)
	if w, ok := wordingFor(code, d, false); ok {
		return placement{kind: w.kind, wait: w.wait()}
	}
	if k, ok := codeKinds[code]; ok {
		return placement{kind: k}
	}
	switch {
	case status == http.StatusTooManyRequests:
		return placement{kind: KindRateLimited}
	case status == http.StatusServiceUnavailable && h.Get("Retry-After") != "":
		return placement{kind: KindRateLimited, ambiguous: true}
	case serverConditions[code]:
		// Whatever the status: Entra sends these as a 400 like all its token errors.
		// server_error may come after the request was acted on, as a 5xx may.
		p := placement{kind: KindTransient, ambiguous: status >= 500 || code == "server_error"}
		if namesAWait(h) {
			p.kind = KindRateLimited
		}
		return p
	case status >= 500:
		return placement{kind: KindTransient, ambiguous: true}
	case status >= 300 && status < 400:
		return placement{kind: KindInvalidResponse}
	}
	if w, ok := wordingFor(code, d, true); ok {
		return placement{kind: w.kind, wait: w.wait()}
	}
	switch {
	case strings.Contains(code, "scope") || scopeRefused(d):
		return placement{kind: KindInvalidScope}
	case status == http.StatusBadRequest && grantTypeRefused(description):
		return placement{kind: KindGrantTypeNotAllowed}
	case status == http.StatusUnauthorized:
		return placement{kind: KindInvalidClient}
	case status == http.StatusPaymentRequired:
		return placement{kind: KindProductNotAllocated}
	case status == http.StatusForbidden:
		return placement{kind: KindGrantTypeNotAllowed}
	case status == http.StatusRequestTimeout:
		// The server gave up waiting for the request: nothing was processed.
		return placement{kind: KindTransient}
	case status == http.StatusNotFound || status == http.StatusMethodNotAllowed:
		// No token endpoint answers a POST at this URL. A code no row places does not
		// change that: Keycloak answers a wrong realm with 404 "Realm does not exist".
		return placement{kind: KindEndpointNotFound}
	}
	return placement{kind: KindRefused}
}

// serverConditions are the OAuth error codes that say the server, not the request, is at
// fault: RFC 6749 §4.1.2.1 defines them for the authorization endpoint, where a
// redirect cannot carry a 500 or a 503, and servers send them from the token endpoint
// too. Both are retried with backoff like an outage, never given up after a few tries:
// temporarily_unavailable is "a temporary overloading or maintenance of the server", and
// for server_error ("an unexpected condition") Microsoft Entra's token endpoint docs
// (v2-oauth2-auth-code-flow.md, "Error codes for token endpoint errors") say "Retry the
// request. These errors can result from temporary conditions." A server that means a
// request will never work says so with another code.
var serverConditions = map[string]bool{
	"temporarily_unavailable": true,
	"server_error":            true,
}

// namesAWait reports whether an answer says how long to wait (see retryAfter).
func namesAWait(h http.Header) bool {
	for _, name := range []string{"Retry-After", "X-Rate-Limit-Reset", "X-RateLimit-Reset", "RateLimit-Reset"} {
		if h.Get(name) != "" {
			return true
		}
	}
	return false
}

// scopeRefusals are how servers word "this scope is refused" when their code does not
// say so (an access_denied, a bare 403): "scope" with one of these in the description.
var scopeRefusals = []string{
	"invalid", "not allowed", "not granted", "unauthorized", "unauthorised", "not permitted",
	"unknown", "unrecognized", "unrecognised", "not valid", "isn't valid", "not configured", "denied", "missing required",
}

func scopeRefused(text string) bool {
	if !strings.Contains(text, "scope") {
		return false
	}
	for _, w := range scopeRefusals {
		if strings.Contains(text, w) {
			return true
		}
	}
	return false
}

// grantRefusals are how servers word "this client may not use this grant type" when
// they answer invalid_request instead of unauthorized_client.
var grantRefusals = []string{
	"not allowed", "disallowed", "not authorized", "not authorised", "unauthorized",
	"unauthorised", "not permitted", "not enabled", "not supported", "unsupported", "forbidden",
}

func grantTypeRefused(description string) bool {
	d := strings.ToLower(strings.NewReplacer("_", " ", "-", " ").Replace(description))
	if !strings.Contains(d, "grant") {
		return false
	}
	for _, w := range grantRefusals {
		if strings.Contains(d, w) {
			return true
		}
	}
	return false
}

// retryAfter reads how long a rate-limited answer asks to wait: Retry-After, in seconds
// or as an HTTP date; without it the time the provider's window resets, which Okta
// sends as X-Rate-Limit-Reset (also spelt X-RateLimit-Reset) in Unix seconds and the
// IETF draft as RateLimit-Reset in seconds from now. Times are measured against the
// answer's own Date so a skewed clock does not stretch or cancel the wait. Without any
// of them the wait is guessed (the second result): fallback when a provider's throttle
// is known to last that long, else 30 s. At least 1 s (a zero wait would mean "no
// requeue" to a controller), at most an hour.
func retryAfter(h http.Header, now time.Time, fallback time.Duration) (time.Duration, bool) {
	if date, err := http.ParseTime(h.Get("Date")); err == nil {
		now = date
	}
	d, guessed := defaultRetryAfter, false
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
			if secs >= 0 {
				d = time.Duration(min(secs, int64(maxRetryAfter/time.Second))) * time.Second
			}
		} else if at, err := http.ParseTime(v); err == nil {
			d = at.Sub(now)
		}
	} else if at, ok := headerInt(h, "X-Rate-Limit-Reset", "X-RateLimit-Reset"); ok {
		d = time.Unix(at, 0).Sub(now)
	} else if secs, ok := headerInt(h, "RateLimit-Reset"); ok && secs >= 0 {
		d = time.Duration(min(secs, int64(maxRetryAfter/time.Second))) * time.Second
	} else {
		guessed = true
		if fallback > 0 {
			d = fallback
		}
	}
	return min(max(d, time.Second), maxRetryAfter), guessed
}

// headerInt is the first of the named headers that holds an integer.
func headerInt(h http.Header, names ...string) (int64, bool) {
	for _, name := range names {
		if n, err := strconv.ParseInt(strings.TrimSpace(h.Get(name)), 10, 64); err == nil {
			return n, true
		}
	}
	return 0, false
}

// describeBody says something useful about an error answer without an OAuth error,
// never the body itself: an HTML error page can hold anything.
func describeBody(contentType string, body []byte, red redactor) string {
	if len(bytes.TrimSpace(body)) == 0 {
		return ""
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) == nil {
		for _, k := range []string{"message", "detail", "title"} {
			if s, ok := jsonString(m[k]); ok && s != "" {
				return red.scrub(s)
			}
		}
		return ""
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt = "unknown type"
	}
	return "non-JSON response (" + truncate(scrubPatterns(mt), 40) + ")"
}

// tooLarge classifies an answer whose body went over the limit. A 2xx that big cannot
// be read, so a refresh token in it is lost: the caller must treat the refresh as
// ambiguous.
func tooLarge(ex *exchange, limit int64, now time.Time) *Error {
	desc := fmt.Sprintf("response body larger than %d bytes", limit)
	if is2xx(ex.status) {
		return &Error{Kind: KindInvalidResponse, StatusCode: ex.status, Description: desc, Ambiguous: true}
	}
	e := refusal(&oauth2.RetrieveError{Response: &http.Response{StatusCode: ex.status, Header: ex.header}}, ex.url, nil, now)
	if e.Kind != KindInvalidResponse {
		e.Description = desc
	}
	return e
}

// success reads a 2xx answer. An unusable one that still carries a refresh token hands
// it back in the error, because the token it replaced is spent.
func success(ex *exchange, requested []string, red redactor) (*Token, error) {
	tok, err := parseTokenResponse(ex.header.Get("Content-Type"), ex.body, requested)
	if err == nil {
		return tok, nil
	}
	e := &Error{Kind: KindInvalidResponse, StatusCode: ex.status, Description: red.scrub(err.Error())}
	if tok != nil && tok.RefreshToken != "" {
		// With its own lifetime (refresh_expires_in), when the answer gave one: the
		// token is stored and sent later, and no wait may outlast it.
		e.Token = &Token{RefreshToken: tok.RefreshToken, RefreshLifetime: tok.RefreshLifetime}
	} else {
		e.Ambiguous = true
	}
	return nil, e
}

// transportFailure classifies a request that got no complete answer. It is ambiguous as
// soon as request bytes went out: the server may have acted on them.
func transportFailure(ctx context.Context, ex *exchange, err error, red redactor) *Error {
	e := &Error{Kind: KindTransient, StatusCode: ex.status, Ambiguous: ex.wrote.Load()}
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		e.cause = ctx.Err()
		e.Description = "the request was abandoned: " + ctx.Err().Error()
	case errors.As(err, &ne) && ne.Timeout():
		e.cause = context.DeadlineExceeded
		e.Description = "no answer within the timeout"
	case err == nil:
		e.Description = "no usable answer"
	default:
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is known to the caller; the cause is what matters
		}
		e.Description = red.scrub(err.Error())
	}
	return e
}

// retrieveError reads an error answer that did not go through x/oauth2 (a revocation)
// into the shape refusal classifies: the OAuth error fields of a JSON or form body.
func retrieveError(ex *exchange) *oauth2.RetrieveError {
	re := &oauth2.RetrieveError{Response: &http.Response{StatusCode: ex.status, Header: ex.header}, Body: ex.body}
	var fields struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	if json.Unmarshal(ex.body, &fields) == nil {
		re.ErrorCode, re.ErrorDescription = fields.Error, fields.ErrorDescription
	} else if mt, _, _ := mime.ParseMediaType(ex.header.Get("Content-Type")); formResponseMIMEType[mt] {
		if v, err := url.ParseQuery(string(ex.body)); err == nil {
			re.ErrorCode, re.ErrorDescription = v.Get("error"), v.Get("error_description")
		}
	}
	return re
}
