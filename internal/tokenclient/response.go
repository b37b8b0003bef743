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

var (
	errBadAccessToken  = errors.New("the response's access_token is not an RFC 6750 bearer token (b64token)")
	errBadRefreshToken = errors.New("the response's refresh_token has characters a refresh token cannot have (RFC 6749 appendix A.17)")
	// b64token is RFC 6750 §2.1's b64token syntax: the only access tokens that can go
	// into an Authorization header, and none can split a header or a Secret line.
	b64token = regexp.MustCompile(`^[A-Za-z0-9\-._~+/]+=*$`)
)

// tokenFields are a token response's fields, every one optional and read leniently:
// a field of an unexpected type counts as absent rather than spoiling the rest, so a
// new refresh token survives a malformed neighbour.
type tokenFields struct {
	accessToken, tokenType, refreshToken, expiresIn, refreshExpiresIn string
	scope                                                             []string
}

// parseTokenResponse reads a 2xx body. It returns an error when the answer cannot be
// used; the Token it returns alongside holds whatever could be read (above all a
// refresh token that can be stored), or is nil when nothing could. Errors never quote
// the body.
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
		// Read with the same tolerance: a refresh token's limit misread as none would
		// plan its renewal after its death.
		RefreshLifetime: lifetime(f.refreshExpiresIn),
	}
	if len(f.scope) > 0 {
		tok.Scopes = f.scope
	}
	switch {
	case tok.RefreshToken != "" && !validRefreshToken(tok.RefreshToken):
		// It cannot be stored, and the token it replaced may be spent: the answer is
		// lost as surely as if it never came.
		tok.RefreshToken = ""
		return tok, errBadRefreshToken
	case tok.AccessToken == "":
		return tok, errNoAccessToken
	case !b64token.MatchString(tok.AccessToken):
		return tok, errBadAccessToken
	case tok.TokenType == "" || strings.EqualFold(tok.TokenType, "Bearer"):
		tok.TokenType = "Bearer"
	default:
		return tok, errNotBearer
	}
	return tok, nil
}

// validRefreshToken reports whether t is RFC 6749 appendix A.17's refresh-token,
// 1*VSCHAR: printable ASCII and space, so no line break can reach a Secret or a log.
func validRefreshToken(t string) bool {
	for i := 0; i < len(t); i++ {
		if t[i] < 0x20 || t[i] > 0x7e {
			return false
		}
	}
	return t != ""
}

// decodeFields reads JSON, the standard's format. A form-encoded answer, which
// x/oauth2 also accepts, is read only when labelled as one: refusing it would lose the
// refresh token in it.
func decodeFields(contentType string, body []byte) (tokenFields, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(bytes.TrimSpace(body), &m); err == nil && m != nil {
		f := tokenFields{expiresIn: jsonNumberText(m["expires_in"]), refreshExpiresIn: jsonNumberText(m["refresh_expires_in"]), scope: jsonScope(m["scope"])}
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
		accessToken:      v.Get("access_token"),
		tokenType:        v.Get("token_type"),
		refreshToken:     v.Get("refresh_token"),
		expiresIn:        v.Get("expires_in"),
		refreshExpiresIn: v.Get("refresh_expires_in"),
		scope:            strings.Fields(v.Get("scope")),
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

// carriesToken reports whether ex is a 2xx whose body holds an access or refresh token.
func carriesToken(ex *exchange) bool {
	if !ex.read || !is2xx(ex.status) {
		return false
	}
	f, err := decodeFields(ex.header.Get("Content-Type"), ex.body)
	return err == nil && (f.accessToken != "" || f.refreshToken != "")
}
