package tokenclient

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// response is the raw answer of one token request, kept so the caller can be told
// exactly what happened even where x/oauth2 only returns a string error, and so a new
// refresh token is never lost in an otherwise unusable answer.
type response struct {
	sent   bool // the request was handed to the connection
	status int
	header http.Header
	body   []byte
	tooBig bool
}

// capturingTransport records the response of the one request x/oauth2 sends and bounds
// its size.
type capturingTransport struct {
	base http.RoundTripper
	max  int64
	into *response
}

func (t *capturingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req.Header.Set("User-Agent", "cd-credentials-operator")
	t.into.sent = true
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, t.max+1))
	if err != nil {
		return nil, err
	}
	t.into.status, t.into.header = resp.StatusCode, resp.Header
	if int64(len(body)) > t.max {
		t.into.tooBig = true
		return nil, errResponseTooLarge
	}
	t.into.body = body
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

var errResponseTooLarge = errors.New("token response larger than the limit")

// rawToken is a lenient reading of a token response: every field optional, expires_in a
// number or a numeric string.
type rawToken struct {
	AccessToken  string          `json:"access_token"`
	TokenType    string          `json:"token_type"`
	RefreshToken string          `json:"refresh_token"`
	Scope        string          `json:"scope"`
	ExpiresIn    json.RawMessage `json:"expires_in"`
}

// parseTokenResponse reads a successful token response body leniently.
func parseTokenResponse(body []byte) (rawToken, error) {
	var raw rawToken
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&raw); err != nil {
		// A body that is not an object, or has a field of the wrong type: try the refresh
		// token alone, which must never be lost.
		var loose map[string]any
		if json.Unmarshal(body, &loose) == nil {
			raw.RefreshToken, _ = loose["refresh_token"].(string)
		}
		return raw, fmt.Errorf("response is not a token JSON object")
	}
	return raw, nil
}

// lifetime reads expires_in; 0 when missing, not a number, zero or negative.
func lifetime(rawExpires json.RawMessage) time.Duration {
	s := strings.Trim(strings.TrimSpace(string(rawExpires)), `"`)
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n <= 0 {
		return 0
	}
	if n > maxLifetime.Seconds() {
		return maxLifetime
	}
	return time.Duration(n) * time.Second
}

// fromResponse turns a response x/oauth2 accepted into a Token, checking what x/oauth2
// does not: the token type, and expires_in read from the raw body.
func fromResponse(tok *oauth2.Token, r *response, requested []string) (*Token, error) {
	raw, _ := parseTokenResponse(r.body)
	out := &Token{
		AccessToken:  tok.AccessToken,
		TokenType:    tok.TokenType,
		RefreshToken: tok.RefreshToken,
		Scopes:       requested,
		Lifetime:     lifetime(raw.ExpiresIn),
	}
	if out.Lifetime == 0 && tok.ExpiresIn > 0 {
		out.Lifetime = min(time.Duration(tok.ExpiresIn)*time.Second, maxLifetime)
	}
	if f := strings.Fields(raw.Scope); len(f) > 0 {
		out.Scopes = f
	}
	if out.TokenType == "" {
		out.TokenType = "Bearer"
	}
	if !strings.EqualFold(out.TokenType, "Bearer") {
		return nil, &Error{Kind: KindInvalidResponse, StatusCode: r.status, Description: "token_type is not Bearer", Token: salvage(out.RefreshToken)}
	}
	out.TokenType = "Bearer"
	return out, nil
}

// salvage wraps a refresh token found in an unusable answer, so the caller stores it.
func salvage(refreshToken string) *Token {
	if refreshToken == "" {
		return nil
	}
	return &Token{RefreshToken: refreshToken}
}
