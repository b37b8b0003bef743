package cdsandbox

import (
	"encoding/json"
	"html/template"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// loginFields are the login form's own fields; every other parameter of the
// authorization request is carried through the form in a hidden field.
var loginFields = []string{"username", "password", "action"}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html><head><title>Central Dispatch sandbox: log in</title></head>
<body>
<h1>Central Dispatch sandbox</h1>
<p>Log in to let <b>{{.ClientID}}</b> act on your behalf (scopes: {{.Scope}}).</p>
<form method="post" action="/connect/authorize">
{{range .Hidden}}<input type="hidden" name="{{.Name}}" value="{{.Value}}">
{{end}}<label>User name <input name="username" autocomplete="username"></label>
<label>Password <input name="password" type="password"></label>
<button name="action" value="login" type="submit">Log in</button>
<button name="action" value="deny" type="submit">Deny</button>
</form>
</body></html>
`))

var errorPage = template.Must(template.New("error").Parse(`<!doctype html>
<html><head><title>Central Dispatch sandbox: error</title></head>
<body><h1>Cannot authorize</h1><p>{{.}}</p></body></html>
`))

// hiddenField is one authorization parameter carried through the login form.
type hiddenField struct{ Name, Value string }

// hiddenFields are every parameter of the request but the login form's own, in a
// stable order, each value of a repeated parameter in its own field.
func hiddenFields(q url.Values) []hiddenField {
	var out []hiddenField
	for _, k := range slices.Sorted(maps.Keys(q)) {
		if slices.Contains(loginFields, k) {
			continue
		}
		for _, v := range q[k] {
			out = append(out, hiddenField{k, v})
		}
	}
	return out
}

// checkAuthorize validates an authorization request. A non-empty message means it must
// be refused with an error page, never a redirect (the redirect URI is not trusted).
func (s *Server) checkAuthorize(q url.Values) (*Client, string) {
	c, ok := s.clients[q.Get("client_id")]
	switch {
	case !ok:
		return nil, "unknown client_id"
	case !slices.Contains(c.GrantTypes, "authorization_code"):
		return nil, "this client is not registered for the authorization code flow"
	case !slices.Contains(c.RedirectURIs, q.Get("redirect_uri")):
		return nil, "redirect_uri is not registered for this client"
	case q.Get("response_type") != "code":
		return nil, "response_type must be code"
	case q.Get("code_challenge") != "" && q.Get("code_challenge_method") != "" && q.Get("code_challenge_method") != "S256" && q.Get("code_challenge_method") != "plain":
		return nil, "unsupported code_challenge_method"
	}
	return c, ""
}

// checkGrantType applies the profile's grant_type rule to an authorization request the
// browser brings (the GET that shows the login page); a non-empty message refuses it as
// checkAuthorize's do. Central Dispatch's documentation requires the parameter but does
// not say how a request without it is refused, so the sandbox answers 400 with the
// OAuth error invalid_request on its error page. The login form's POST is the sandbox's
// own page (Central Dispatch's login page is its own too) and is not held to it: a
// harness may post the form straight away (test/chaos logs its customers in so).
func (s *Server) checkGrantType(q url.Values) string {
	if s.refusals.requireAuthorizationCodeGrantType && q.Get("grant_type") != "authorization_code" {
		return "invalid_request: grant_type must be authorization_code"
	}
	return ""
}

// scopeRefusal is an authorization request refused for its scopes, worded as the
// profile's server words it.
type scopeRefusal struct {
	description string
	// page: the server shows an error page instead of redirecting back.
	page bool
}

// checkScopes applies the profile's scope rules to a valid request; nil when the
// scopes pass. s.mu is held.
func (s *Server) checkScopes(c *Client, q url.Values) *scopeRefusal {
	scopes := strings.Fields(q.Get("scope"))
	if s.refusals.requireOpenID && !slices.Contains(scopes, "openid") {
		return &scopeRefusal{description: `Missing required scope(s) ["openid"].`}
	}
	if unknown := c.unknownScopes(scopes); len(unknown) > 0 {
		description, page := s.refusals.authorizeScope(scopes, unknown)
		return &scopeRefusal{description: description, page: page}
	}
	return nil
}

// refuseScopes answers an authorization request refused for its scopes: an
// invalid_scope redirect to the (registered) redirect URI, as RFC 6749 §4.1.2.1 says,
// or the error page of a server that shows one.
func (s *Server) refuseScopes(w http.ResponseWriter, r *http.Request, q url.Values, refusal *scopeRefusal) {
	if refusal.page {
		w.WriteHeader(http.StatusBadRequest)
		_ = errorPage.Execute(w, "invalid_scope: "+refusal.description)
		return
	}
	back := url.Values{"error": {"invalid_scope"}}
	if refusal.description != "" {
		back.Set("error_description", refusal.description)
	}
	if st := q.Get("state"); st != "" {
		back.Set("state", st)
	}
	http.Redirect(w, r, withQuery(q.Get("redirect_uri"), back), s.refusals.errorRedirect)
}

// withQuery adds params to a redirect URI and keeps the query it has (RFC 6749 §3.1.2).
func withQuery(redirectURI string, params url.Values) string {
	u, err := url.Parse(redirectURI)
	if err != nil {
		// Registered redirect URIs parse; this keeps an odd one working as before.
		return redirectURI + "?" + params.Encode()
	}
	q := u.Query()
	for k, vs := range params {
		q[k] = vs
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func (s *Server) handleAuthorizePage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	s.recordAuthorizationRequest(q)
	c, msg := s.checkAuthorize(q)
	if msg == "" {
		msg = s.checkGrantType(q)
	}
	var refusal *scopeRefusal
	if msg == "" {
		refusal = s.checkScopes(c, q)
	}
	s.mu.Unlock()
	switch {
	case msg != "":
		w.WriteHeader(http.StatusBadRequest)
		_ = errorPage.Execute(w, msg)
		return
	case refusal != nil:
		s.refuseScopes(w, r, q, refusal)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = loginPage.Execute(w, map[string]any{"ClientID": q.Get("client_id"), "Scope": q.Get("scope"), "Hidden": hiddenFields(q)})
}

// handleAuthorizeSubmit takes the login form: any non-empty user name logs in as that
// customer. It redirects to the client's redirect URI with a code, as Central Dispatch
// does (code, scope, state, iss), or with error=access_denied.
func (s *Server) handleAuthorizeSubmit(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	f := r.PostForm
	s.mu.Lock()
	defer s.mu.Unlock()
	c, msg := s.checkAuthorize(f)
	if msg != "" {
		w.WriteHeader(http.StatusBadRequest)
		_ = errorPage.Execute(w, msg)
		return
	}
	if refusal := s.checkScopes(c, f); refusal != nil {
		s.refuseScopes(w, r, f, refusal)
		return
	}
	back := url.Values{}
	if st := f.Get("state"); st != "" {
		back.Set("state", st)
	}
	user := strings.TrimSpace(f.Get("username"))
	if f.Get("action") == "deny" || user == "" {
		back.Set("error", "access_denied")
		http.Redirect(w, r, withQuery(f.Get("redirect_uri"), back), s.refusals.errorRedirect)
		return
	}
	scopes, offline := s.grantOffline(c.ID, user, f)
	code := randomString(32)
	s.codes[code] = &authCode{
		clientID: f.Get("client_id"), redirectURI: f.Get("redirect_uri"), subject: user,
		scopes: scopes, challenge: f.Get("code_challenge"), method: f.Get("code_challenge_method"),
		expires: s.opts.Now().Add(s.opts.CodeTTL), offline: offline,
	}
	back.Set("code", code)
	back.Set("scope", strings.Join(scopes, " "))
	back.Set("iss", s.opts.Issuer)
	s.logger.Printf("customer %q logged in for client_id=%s (refresh token: %t)", user, f.Get("client_id"), offline)
	http.Redirect(w, r, withQuery(f.Get("redirect_uri"), back), http.StatusFound)
}

// grantOffline applies the consent rules to a login: it returns the scopes the code
// grants and whether its exchange brings a refresh token. s.mu is held.
func (s *Server) grantOffline(clientID, subject string, q url.Values) ([]string, bool) {
	scopes := strings.Fields(q.Get("scope"))
	consent := slices.Contains(strings.Fields(q.Get("prompt")), "consent")
	if s.opts.Profile == ProfileGoogle {
		// Google: a refresh token needs access_type=offline, and comes only the first
		// time, or again when prompt=consent makes the user consent again
		// (googleapis/google-api-php-client#1686, a Google maintainer's answer).
		key := clientID + "\x00" + subject
		offline := q.Get("access_type") == "offline" && (consent || !s.offlineIssued[key])
		if offline {
			s.offlineIssued[key] = true
		}
		return scopes, offline
	}
	switch {
	case !slices.Contains(scopes, "offline_access"):
		// Keycloak answers every login with a refresh token of the browser session,
		// which lives the realm's SSO Session Idle (refresh_expires_in); offline_access
		// makes it an offline token, without that limit (newRefreshToken).
		return scopes, s.opts.Profile == ProfileKeycloak
	case consent || s.opts.OfflineAccessWithoutConsent:
		return scopes, true
	}
	// OpenID Connect Core §11: without prompt=consent, offline_access is ignored.
	return slices.DeleteFunc(scopes, func(sc string) bool { return sc == "offline_access" }), false
}

// handleRevocation revokes a refresh or access token (RFC 7009). Unknown tokens are not
// an error.
func (s *Server) handleRevocation(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeJSON(w, oauthError(http.StatusBadRequest, "invalid_request", ""))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, res := s.authenticate(r)
	if c == nil {
		writeJSON(w, res)
		return
	}
	t := r.PostForm.Get("token")
	if t == "" {
		writeJSON(w, oauthError(http.StatusBadRequest, "invalid_request", "the token parameter is required"))
		return
	}
	s.stats.Revocations++
	if rt, ok := s.refresh[t]; ok && rt.grant.clientID == c.ID {
		s.revoke(rt.grant)
	}
	if at, ok := s.access[t]; ok && at.info.ClientID == c.ID {
		delete(s.access, t)
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleDiscovery(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	iss := s.opts.Issuer
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"issuer":                                iss,
		"authorization_endpoint":                iss + "/connect/authorize",
		"token_endpoint":                        iss + "/connect/token",
		"revocation_endpoint":                   iss + "/connect/revocation",
		"grant_types_supported":                 []string{"authorization_code", "refresh_token", "client_credentials"},
		"response_types_supported":              []string{"code"},
		"code_challenge_methods_supported":      []string{"S256", "plain"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "client_secret_basic"},
	})
}

// handleListings stubs the Marketplace API: since Central Dispatch enforced the split
// between its credential sets, only client-credentials tokens are accepted.
func (s *Server) handleListings(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	info, valid := s.Introspect(bearer)
	switch {
	case !ok || !valid:
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_token"})
	case info.GrantType != "client_credentials":
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "insufficient_permissions",
			"error_description": "Marketplace requires a token from your client-credentials credential set"})
	default:
		_ = json.NewEncoder(w).Encode(map[string]any{"listings": []map[string]any{
			{"id": "L-1001", "origin": "Dallas, TX", "destination": "Atlanta, GA", "vehicles": 3},
		}})
	}
}
