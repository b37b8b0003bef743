package tokenclient

import (
	"cmp"
	"encoding/base64"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode"
)

const (
	redacted = "[redacted]"
	// maxDescription bounds a description in runes: it ends up in a condition message.
	maxDescription = 200
	// mark stands in for a redaction until the end, so later patterns cannot eat into
	// "[redacted]" and a secret such as "e" cannot be found inside it. Control
	// characters are gone by the time it is used.
	mark = "\x00"
)

var (
	// jwtLike: three or more base64url segments separated by dots, the first one a JSON
	// header ("{\"" encodes as eyJ), so that short and unsigned JWTs go too. Requiring
	// eyJ keeps host names (also dotted base64url-ish segments) readable in messages;
	// a JWT written some other way still loses its payload and signature to longRun.
	jwtLike = regexp.MustCompile(`eyJ[A-Za-z0-9_-]*(\.[A-Za-z0-9_-]*){2,}`)
	// longRun: opaque tokens, refresh tokens, hex digests and base64 blobs.
	longRun = regexp.MustCompile(`[A-Za-z0-9+/=_-]{32,}`)
)

// redactor holds the exact strings one request must never see echoed back: the client
// secret, the refresh token or code being spent, and the forms they took on the wire.
type redactor []string

func newRedactor(ep Endpoint, spent ...string) redactor {
	var r redactor
	add := func(v string) {
		if v != "" && !slices.Contains(r, v) {
			r = append(r, v)
		}
	}
	for _, v := range append([]string{ep.ClientSecret}, spent...) {
		add(v)
		add(url.QueryEscape(v))
	}
	if ep.ClientSecret != "" {
		// The Basic header, both as RFC 6749 encodes it and as most clients do.
		add(base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(ep.ClientID) + ":" + url.QueryEscape(ep.ClientSecret))))
		add(base64.StdEncoding.EncodeToString([]byte(ep.ClientID + ":" + ep.ClientSecret)))
	}
	// Longest first, so a secret that contains another is redacted whole.
	slices.SortFunc(r, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	return r
}

// scrub makes a server's text safe for a condition, an event or a log line: control and
// formatting characters dropped, this request's secrets and anything that looks like a
// token redacted, and the result cut to 200 runes.
func (r redactor) scrub(s string) string {
	s = strings.Map(dropControl, s)
	for _, v := range r {
		s = strings.ReplaceAll(s, v, mark)
	}
	return finish(s)
}

// redact replaces this request's secrets in s and nothing else: for text that is not the
// server's (the URL the request went to), which the token patterns would mangle.
func (r redactor) redact(s string) string {
	for _, v := range r {
		s = strings.ReplaceAll(s, v, mark)
	}
	return strings.ReplaceAll(s, mark, redacted)
}

// scrubPatterns is scrub for text with no request behind it.
func scrubPatterns(s string) string { return redactor(nil).scrub(s) }

func finish(s string) string {
	s = jwtLike.ReplaceAllString(s, mark)
	s = longRun.ReplaceAllString(s, mark)
	s = strings.Join(strings.Fields(s), " ")
	s = strings.ReplaceAll(s, mark, redacted)
	return truncate(s, maxDescription)
}

// dropControl turns line breaks and tabs into spaces and drops every other control or
// formatting character (bidi overrides included), which have no place in a message.
func dropControl(r rune) rune {
	switch {
	case r == '\t' || r == '\n' || r == '\r':
		return ' '
	case unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
		return -1
	}
	return r
}

func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
