package tokenclient

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxLifetime caps an absurd expires_in: a token is renewed at least daily.
const maxLifetime = 24 * time.Hour

var (
	errNotJSON           = errors.New("the response is not a JSON object")
	errNoAccessToken     = errors.New("the response has no access_token")
	errNotBearer         = errors.New("the response's token_type is not Bearer")
	numericExpiry        = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)
	formResponseMIMEType = map[string]bool{"application/x-www-form-urlencoded": true, "text/plain": true}
)

// tokenFields are a token response's fields, every one optional and read leniently:
// a field of an unexpected type counts as absent rather than spoiling the rest, so a
// new refresh token survives a malformed neighbour.
type tokenFields struct {
	accessToken, tokenType, refreshToken, expiresIn string
	scope                                           []string
}

// parseTokenResponse reads a 2xx body. It returns an error when the answer cannot be
// used; the Token it returns alongside holds whatever could be read (above all a
// refresh token), or is nil when nothing could. Errors never quote the body.
func parseTokenResponse(contentType string, body []byte, requested []string) (*Token, error) {
	f, err := decodeFields(contentType, body)
	if err != nil {
		return nil, err
	}
	tok := &Token{
		AccessToken:  f.accessToken,
		TokenType:    f.tokenType,
		RefreshToken: f.refreshToken,
		Scopes:       slices.Clone(requested),
		Lifetime:     lifetime(f.expiresIn),
	}
	if len(f.scope) > 0 {
		tok.Scopes = f.scope
	}
	switch {
	case tok.AccessToken == "":
		return tok, errNoAccessToken
	case tok.TokenType == "" || strings.EqualFold(tok.TokenType, "Bearer"):
		tok.TokenType = "Bearer"
	default:
		return tok, errNotBearer
	}
	return tok, nil
}

// decodeFields reads JSON, the standard's format. A form-encoded answer, which
// x/oauth2 also accepts, is read only when labelled as one: refusing it would lose the
// refresh token in it.
func decodeFields(contentType string, body []byte) (tokenFields, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(bytes.TrimSpace(body), &m); err == nil && m != nil {
		f := tokenFields{expiresIn: jsonNumberText(m["expires_in"]), scope: jsonScope(m["scope"])}
		f.accessToken, _ = jsonString(m["access_token"])
		f.tokenType, _ = jsonString(m["token_type"])
		f.refreshToken, _ = jsonString(m["refresh_token"])
		return f, nil
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	if !formResponseMIMEType[mt] {
		return tokenFields{}, errNotJSON
	}
	v, err := url.ParseQuery(string(body))
	if err != nil {
		return tokenFields{}, errNotJSON
	}
	return tokenFields{
		accessToken:  v.Get("access_token"),
		tokenType:    v.Get("token_type"),
		refreshToken: v.Get("refresh_token"),
		expiresIn:    v.Get("expires_in"),
		scope:        strings.Fields(v.Get("scope")),
	}, nil
}

func jsonString(raw json.RawMessage) (string, bool) {
	var s string
	if raw == nil || json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// jsonNumberText returns a number, or a string's content (some servers quote
// expires_in), as text for lifetime to judge.
func jsonNumberText(raw json.RawMessage) string {
	if s, ok := jsonString(raw); ok {
		return s
	}
	return string(raw)
}

// jsonScope reads `scope` as the standard's space-separated string, or as the list of
// strings some servers send instead.
func jsonScope(raw json.RawMessage) []string {
	if s, ok := jsonString(raw); ok {
		return strings.Fields(s)
	}
	var list []any
	if raw == nil || json.Unmarshal(raw, &list) != nil {
		return nil
	}
	var out []string
	for _, item := range list {
		if s, ok := item.(string); ok {
			out = append(out, strings.Fields(s)...)
		}
	}
	return out
}

// lifetime reads expires_in in whole seconds: 0 when missing, not a number, zero,
// negative or under a second (the caller then uses its fallback); at most 24 h.
func lifetime(expiresIn string) time.Duration {
	s := strings.TrimSpace(expiresIn)
	if !numericExpiry.MatchString(s) {
		return 0
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0
	}
	switch {
	case !(n >= 1):
		return 0
	case n >= maxLifetime.Seconds():
		return maxLifetime
	}
	return time.Duration(n) * time.Second
}
