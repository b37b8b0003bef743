package tokenclient

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"golang.org/x/oauth2"
)

// ErrorKind says what a failed token request means for the caller.
type ErrorKind string

const (
	// KindHostNotAllowed: the host is not on the allow-list, or the URL is not https
	// (http to loopback excepted). Nothing was sent.
	KindHostNotAllowed ErrorKind = "HostNotAllowed"
	// KindInvalidClient: `invalid_client`, or 401: the client id or secret is wrong.
	KindInvalidClient ErrorKind = "InvalidClient"
	// KindInvalidGrant: `invalid_grant`: the refresh token or code is spent, expired or
	// revoked.
	KindInvalidGrant ErrorKind = "InvalidGrant"
	// KindGrantTypeNotAllowed: the server refused this grant type for this client
	// (`unauthorized_client`, `unsupported_grant_type`, 403, or a 400 saying so).
	KindGrantTypeNotAllowed ErrorKind = "GrantTypeNotAllowed"
	// KindProductNotAllocated: HTTP 402.
	KindProductNotAllocated ErrorKind = "ProductNotAllocated"
	// KindRateLimited: 429, or 503 with Retry-After; RetryAfter says how long to wait.
	KindRateLimited ErrorKind = "RateLimited"
	// KindTransient: 5xx, timeouts, connection errors, other 4xx.
	KindTransient ErrorKind = "Transient"
	// KindInvalidResponse: a success answer that cannot be used.
	KindInvalidResponse ErrorKind = "InvalidResponse"
)

// Error is the error every Issuer method returns.
type Error struct {
	Kind       ErrorKind
	StatusCode int    // 0 when there was no response
	Code       string // the OAuth `error` field
	// Description is the server's error_description (or our own words), scrubbed of
	// anything secret and cut short.
	Description string
	RetryAfter  time.Duration
	// Ambiguous is true when the server may have processed the request without the
	// caller getting a usable answer: for a refresh, the token may be spent, so the
	// caller must not simply send it again.
	Ambiguous bool
	// Token is set when an unusable success answer still carried a refresh token: the
	// old one is spent, so the caller must store this one.
	Token *Token
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("token endpoint: ")
	if e.Code != "" {
		b.WriteString(e.Code)
	} else {
		b.WriteString(strings.ToLower(string(e.Kind)))
	}
	if e.Description != "" {
		b.WriteString(": " + e.Description)
	}
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.StatusCode)
	}
	return b.String()
}

// Terminal reports whether retrying without a change cannot help.
func (e *Error) Terminal() bool {
	switch e.Kind {
	case KindInvalidClient, KindInvalidGrant, KindGrantTypeNotAllowed, KindProductNotAllocated, KindHostNotAllowed:
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

// classify turns what x/oauth2 returned, and the raw response, into an *Error.
func classify(err error, r *response, redact []string) *Error {
	var re *oauth2.RetrieveError
	switch {
	case r.tooBig:
		return &Error{Kind: KindInvalidResponse, StatusCode: r.status, Description: "response larger than the limit", Ambiguous: true}
	case errors.As(err, &re) && re.Response != nil:
		e := classifyRefusal(re.Response.StatusCode, re.ErrorCode, re.Response.Header)
		e.Description = scrub(re.ErrorDescription, redact)
		refineGrantType(e)
		return e
	case r.status >= 200 && r.status < 300:
		// x/oauth2 could not use a success answer (not JSON, no access_token).
		raw, _ := parseTokenResponse(r.body)
		t := salvage(raw.RefreshToken)
		return &Error{Kind: KindInvalidResponse, StatusCode: r.status, Description: "no usable access_token in the response", Token: t, Ambiguous: t == nil}
	}
	var op *net.OpError
	ambiguous := r.sent && !(errors.As(err, &op) && op.Op == "dial")
	return &Error{Kind: KindTransient, Description: scrub(networkError(err), redact), Ambiguous: ambiguous}
}

// classifyRefusal maps an error answer to a kind from its status and OAuth error code.
func classifyRefusal(status int, code string, h http.Header) *Error {
	e := &Error{StatusCode: status, Code: code}
	switch {
	case code == "invalid_client":
		e.Kind = KindInvalidClient
	case code == "invalid_grant":
		e.Kind = KindInvalidGrant
	case code == "unauthorized_client" || code == "unsupported_grant_type":
		e.Kind = KindGrantTypeNotAllowed
	case status == http.StatusUnauthorized:
		e.Kind = KindInvalidClient
	case status == http.StatusPaymentRequired:
		e.Kind = KindProductNotAllocated
	case status == http.StatusForbidden:
		e.Kind = KindGrantTypeNotAllowed
	case status == http.StatusTooManyRequests || (status == http.StatusServiceUnavailable && h.Get("Retry-After") != ""):
		e.Kind, e.RetryAfter = KindRateLimited, retryAfter(h.Get("Retry-After"), time.Now())
	case status >= 500:
		e.Kind, e.Ambiguous = KindTransient, true
	case status >= 300 && status < 400:
		e.Kind = KindInvalidResponse
	default:
		e.Kind = KindTransient
	}
	return e
}

// refineGrantType recognises a 400 whose description says the grant type is not
// allowed for the client; servers word it in many ways.
func refineGrantType(e *Error) {
	if e.Kind != KindTransient || e.StatusCode != http.StatusBadRequest {
		return
	}
	if grantTypeRefused(e.Description) {
		e.Kind = KindGrantTypeNotAllowed
	}
}

var refusalWords = []string{"not allowed", "not authorized", "not authorised", "not permitted", "unauthorized", "unauthorised", "disallowed", "not supported", "not enabled", "forbidden"}

func grantTypeRefused(description string) bool {
	d := strings.ToLower(strings.NewReplacer("_", " ", "-", " ").Replace(description))
	if !strings.Contains(d, "grant type") && !strings.Contains(d, "granttype") && !strings.Contains(d, "grant") {
		return false
	}
	for _, w := range refusalWords {
		if strings.Contains(d, w) {
			return true
		}
	}
	return false
}

// retryAfter reads a Retry-After header (seconds or an HTTP date): default 30 s, at most
// an hour.
func retryAfter(v string, now time.Time) time.Duration {
	d := 30 * time.Second
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, time.Second), time.Hour)
}

func networkError(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "no answer within the timeout"
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Op + ": " + op.Err.Error()
	}
	return "request failed"
}

var (
	jwtLike  = regexp.MustCompile(`[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}`)
	longBlob = regexp.MustCompile(`[A-Za-z0-9+/=_-]{32,}`)
)

// scrub makes a server's text safe for a condition, an event or a log line: anything
// that is, or looks like, a secret or a token is redacted, control characters dropped,
// and the result cut to 200 characters.
func scrub(s string, redact []string) string {
	for _, secret := range redact {
		if len(secret) >= 4 {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	s = jwtLike.ReplaceAllString(s, "[redacted]")
	s = longBlob.ReplaceAllString(s, "[redacted]")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 200 {
		s = string(r[:200]) + "…"
	}
	return s
}
