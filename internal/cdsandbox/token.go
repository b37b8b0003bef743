package cdsandbox

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// tokenResult is the answer to one token request.
type tokenResult struct {
	status int
	body   map[string]any
	header map[string]string
	client string
	// note is said in the log line (never a token).
	note string
}

func (t tokenResult) ok() bool { return t.status == http.StatusOK }

func oauthError(status int, code, description string) tokenResult {
	body := map[string]any{"error": code}
	if description != "" {
		body["error_description"] = description
	}
	return tokenResult{status: status, body: body}
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeJSON(w, oauthError(http.StatusBadRequest, "invalid_request", "the body is not a form"))
		return
	}
	grantType := r.PostForm.Get("grant_type")
	s.mu.Lock()
	s.stats.TokenRequests[grantType]++
	fault := s.takeFault(grantType)
	if fault != nil && !fault.After {
		s.mu.Unlock()
		s.misbehave(w, r, fault, nil)
		return
	}
	res := s.processToken(r, grantType)
	s.journal.processed(s, r, grantType, res)
	if res.ok() {
		s.stats.Issued[grantType]++
	} else {
		code, _ := res.body["error"].(string)
		s.stats.Rejected[code]++
	}
	hook := s.onToken
	s.mu.Unlock()
	s.logger.Print(logLine(grantType, res))
	if hook != nil {
		hook(grantType, res.ok())
	}
	if fault != nil {
		s.misbehave(w, r, fault, &res)
		return
	}
	writeJSON(w, res)
}

// processToken applies Central Dispatch's rules to one token request. s.mu is held.
func (s *Server) processToken(r *http.Request, grantType string) tokenResult {
	client, res := s.authenticate(r)
	if client == nil {
		return res
	}
	var out tokenResult
	switch grantType {
	case "client_credentials", "refresh_token", "authorization_code":
		if !client.allows(grantType) {
			out = s.refusals.grantTypeRefused(s.opts.Now(), grantType, true, client.grantTypes())
			break
		}
		switch grantType {
		case "client_credentials":
			out = s.clientCredentials(client, r.PostForm.Get("scope"))
		case "refresh_token":
			out = s.refreshGrant(client, r.PostForm.Get("refresh_token"))
		default:
			out = s.codeGrant(client, r.PostForm)
		}
	default:
		out = s.refusals.grantTypeRefused(s.opts.Now(), grantType, false, client.grantTypes())
	}
	out.client = client.ID
	return out
}

// authenticate finds the client from client_secret_post or client_secret_basic.
func (s *Server) authenticate(r *http.Request) (*Client, tokenResult) {
	id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		if secret != "" {
			return nil, oauthError(http.StatusBadRequest, "invalid_request", "client credentials were sent in more than one way")
		}
		// RFC 6749 §2.3.1: both parts are form-urlencoded inside the header.
		id, _ = url.QueryUnescape(u)
		secret, _ = url.QueryUnescape(p)
	}
	c, ok := s.clients[id]
	if !ok || id == "" || subtle.ConstantTimeCompare([]byte(c.Secret), []byte(secret)) != 1 {
		res := oauthError(http.StatusUnauthorized, "invalid_client", "")
		res.client = id
		return nil, res
	}
	return c, tokenResult{}
}

func (s *Server) clientCredentials(c *Client, scope string) tokenResult {
	scopes := strings.Fields(scope)
	if unknown := c.unknownScopes(scopes); len(unknown) > 0 {
		return s.refusals.unknownScope(s.opts.Now(), scopes, unknown)
	}
	return s.issue(c.ID, c.ID, "client_credentials", scopes, nil, "")
}

func (c *Client) scopesAllowed(scopes []string) bool {
	return len(c.unknownScopes(scopes)) == 0
}

// unknownScopes are the requested scopes the client may not have.
func (c *Client) unknownScopes(scopes []string) []string {
	if len(c.Scopes) == 0 {
		return nil
	}
	var unknown []string
	for _, sc := range scopes {
		if !slices.Contains(c.Scopes, sc) && !slices.Contains(unknown, sc) {
			unknown = append(unknown, sc)
		}
	}
	return unknown
}

// refreshGrant honours a refresh token as the profile's Rotation says. Under single-use
// rotation the token is spent, and a spent one presented again (past Okta's grace
// period) revokes the whole grant.
func (s *Server) refreshGrant(c *Client, token string) tokenResult {
	rt, ok := s.refresh[token]
	if !ok || rt.grant.clientID != c.ID {
		return s.refusals.rejectedRefreshToken(s.opts.Now())
	}
	now, rotation := s.opts.Now(), s.opts.Profile.Rotation()
	if ends := rt.grant.sessionEnds; !ends.IsZero() && !now.Before(ends) && s.refusals.sessionEnded != nil {
		// Checked first: the session is gone, whatever the token (its expiry is the
		// session's end by then) or its use; nothing is revoked.
		s.stats.SessionsEnded++
		res := s.refusals.sessionEnded(now)
		res.note = "session max reached"
		return res
	}
	if !rt.expires.IsZero() && !now.Before(rt.expires) && s.refusals.expiredRefreshToken != nil {
		// Checked before reuse, as the server verifies the token before its session: an
		// expired token is refused without revoking anything.
		s.stats.RefreshTokensExpired++
		res := s.refusals.expiredRefreshToken(now)
		res.note = "refresh token expired"
		return res
	}
	if rt.spent {
		s.stats.RefreshTokensReused++
		if rotation != RotateWithGrace || now.Sub(rt.spentAt) > RotationGrace {
			s.revoke(rt.grant)
			res := s.refusals.spentRefreshToken(now)
			res.note = "refresh token reuse detected: the grant is revoked"
			return res
		}
	}
	if rt.grant.revoked {
		return s.refusals.rejectedRefreshToken(now)
	}
	if (rotation == RotateSingleUse || rotation == RotateWithGrace) && !rt.spent {
		rt.spent, rt.spentAt = true, now
	}
	if !rt.grant.expires.IsZero() && now.After(rt.grant.expires) {
		s.stats.LateRenewals++
	}
	next := ""
	if rotation != NoRotation {
		next = s.newRefreshToken(rt.grant)
	}
	return s.issue(c.ID, rt.grant.subject, "refresh_token", rt.grant.scopes, rt.grant, next)
}

// codeGrant exchanges a single-use authorization code.
func (s *Server) codeGrant(c *Client, form url.Values) tokenResult {
	code, ok := s.codes[form.Get("code")]
	switch {
	case !ok || code.clientID != c.ID:
		return oauthError(http.StatusBadRequest, "invalid_grant", "")
	case code.used:
		// A replayed code revokes what it issued, as real servers do.
		if code.grant != nil {
			s.revoke(code.grant)
		}
		return oauthError(http.StatusBadRequest, "invalid_grant", "authorization code already used")
	case !s.opts.Now().Before(code.expires):
		return oauthError(http.StatusBadRequest, "invalid_grant", "authorization code expired")
	case form.Get("redirect_uri") != code.redirectURI:
		code.used = true // a misused code is burnt, as careful servers do
		return oauthError(http.StatusBadRequest, "invalid_grant", "redirect_uri does not match")
	case !pkceOK(code.challenge, code.method, form.Get("code_verifier")):
		code.used = true
		return oauthError(http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
	}
	code.used = true
	code.grant = s.newGrant(c.ID, code.subject, code.scopes)
	refresh := ""
	if code.offline {
		refresh = s.newRefreshToken(code.grant)
	}
	return s.issue(c.ID, code.subject, "authorization_code", code.scopes, code.grant, refresh)
}

func pkceOK(challenge, method, verifier string) bool {
	if challenge == "" {
		return true
	}
	if method == "plain" {
		return subtle.ConstantTimeCompare([]byte(challenge), []byte(verifier)) == 1
	}
	sum := sha256.Sum256([]byte(verifier))
	return subtle.ConstantTimeCompare([]byte(challenge), []byte(base64.RawURLEncoding.EncodeToString(sum[:]))) == 1
}

// issue mints an access token (a JWT) and builds the token response.
func (s *Server) issue(clientID, subject, grantType string, scopes []string, g *grant, refresh string) tokenResult {
	now := s.opts.Now()
	exp := now.Add(s.opts.AccessTokenTTL)
	// Keycloak holds an access token to the session's end too (SSO Session Max): in a
	// session's last access-token lifespan, expires_in is what is left of it.
	if g != nil && !g.sessionEnds.IsZero() && g.sessionEnds.Before(exp) {
		exp = g.sessionEnds
	}
	claims := jwt.MapClaims{
		"iss": s.opts.Issuer, "sub": subject, "client_id": clientID, "scope": strings.Join(scopes, " "),
		"iat": now.Unix(), "exp": exp.Unix(), "jti": randomString(8),
	}
	signed, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.key)
	s.access[signed] = &accessToken{info: TokenInfo{ClientID: clientID, Subject: subject, GrantType: grantType, Scopes: scopes, ExpiresAt: exp}, grant: g}
	if g != nil {
		g.expires = exp
	}
	body := map[string]any{
		"access_token": signed,
		"token_type":   "Bearer",
		"expires_in":   int(exp.Sub(now).Round(time.Second) / time.Second),
		"scope":        strings.Join(scopes, " "),
	}
	if refresh != "" {
		body["refresh_token"] = refresh
		if s.opts.RefreshTokenTTL > 0 {
			// 0 for a token without a limit (an offline token), as Keycloak answers.
			left := 0
			if exp := s.refresh[refresh].expires; !exp.IsZero() {
				left = int(exp.Sub(now).Round(time.Second) / time.Second)
			}
			body["refresh_expires_in"] = left
		}
	}
	return tokenResult{status: http.StatusOK, body: body}
}

// takeFault returns the first fault matching grantType, consuming one use. s.mu is held.
func (s *Server) takeFault(grantType string) *Fault {
	for i, f := range s.faults {
		if f.GrantType == "" || f.GrantType == grantType {
			f.Count--
			if f.Count <= 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
			return f
		}
	}
	return nil
}

// misbehave answers a request as fault f says. res is the real answer when the request
// was processed first.
func (s *Server) misbehave(w http.ResponseWriter, r *http.Request, f *Fault, res *tokenResult) {
	switch f.Mode {
	case FaultStatus:
		if s.refusals.rateLimited != nil && f.Status == http.StatusTooManyRequests {
			writeJSON(w, s.refusals.rateLimited(s.opts.Now(), f.Status, f.RetryAfter))
			return
		}
		h := map[string]string{}
		if f.RetryAfter != "" {
			h["Retry-After"] = f.RetryAfter
		}
		// temporarily_unavailable says the server is busy, whatever the status, so it
		// goes only with the statuses that say so; any other status (a 402, a 403)
		// stands alone, with a message as an API gateway words it.
		out := tokenResult{status: f.Status, body: map[string]any{"message": http.StatusText(f.Status)}}
		if f.Status == http.StatusTooManyRequests || f.Status >= 500 {
			out = oauthError(f.Status, "temporarily_unavailable", "")
		}
		out.header = h
		writeJSON(w, out)
	case FaultHang:
		select {
		case <-r.Context().Done():
			return
		case <-time.After(f.Delay):
		}
		if res == nil {
			s.mu.Lock()
			processed := s.processToken(r, r.PostForm.Get("grant_type"))
			s.journal.processed(s, r, r.PostForm.Get("grant_type"), processed)
			s.mu.Unlock()
			res = &processed
		}
		writeJSON(w, *res)
	case FaultDropConnection:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
}

// logLine describes a token request without any token, secret or code.
func logLine(grantType string, res tokenResult) string {
	line := "token request grant_type=" + grantType + " client_id=" + res.client
	if res.ok() {
		return line + " -> 200 issued"
	}
	line += " -> " + http.StatusText(res.status) + " " + fmt.Sprint(res.body["error"])
	if res.note != "" {
		line += " (" + res.note + ")"
	}
	return line
}

func writeJSON(w http.ResponseWriter, res tokenResult) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	for k, v := range res.header {
		w.Header().Set(k, v)
	}
	if res.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="sandbox"`)
	}
	w.WriteHeader(res.status)
	_ = json.NewEncoder(w).Encode(res.body)
}
