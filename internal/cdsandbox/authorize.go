package cdsandbox

import (
	"encoding/json"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// authorizeParams are the query parameters Central Dispatch's authorize endpoint takes,
// carried through the login form in hidden fields.
var authorizeParams = []string{"client_id", "response_type", "grant_type", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method"}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html><head><title>Central Dispatch sandbox: log in</title></head>
<body>
<h1>Central Dispatch sandbox</h1>
<p>Log in to let <b>{{.ClientID}}</b> act on your behalf (scopes: {{.Scope}}).</p>
<form method="post" action="/connect/authorize">
{{range $k, $v := .Hidden}}<input type="hidden" name="{{$k}}" value="{{$v}}">
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
	case !c.scopesAllowed(strings.Fields(q.Get("scope"))):
		return nil, "a requested scope is not allowed for this client"
	}
	return c, ""
}

func (s *Server) handleAuthorizePage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	_, msg := s.checkAuthorize(q)
	s.mu.Unlock()
	if msg != "" {
		w.WriteHeader(http.StatusBadRequest)
		_ = errorPage.Execute(w, msg)
		return
	}
	hidden := map[string]string{}
	for _, k := range authorizeParams {
		if v := q.Get(k); v != "" {
			hidden[k] = v
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = loginPage.Execute(w, map[string]any{"ClientID": q.Get("client_id"), "Scope": q.Get("scope"), "Hidden": hidden})
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
	if _, msg := s.checkAuthorize(f); msg != "" {
		w.WriteHeader(http.StatusBadRequest)
		_ = errorPage.Execute(w, msg)
		return
	}
	back := url.Values{}
	if st := f.Get("state"); st != "" {
		back.Set("state", st)
	}
	user := strings.TrimSpace(f.Get("username"))
	if f.Get("action") == "deny" || user == "" {
		back.Set("error", "access_denied")
		http.Redirect(w, r, f.Get("redirect_uri")+"?"+back.Encode(), http.StatusFound)
		return
	}
	code := randomString(32)
	s.codes[code] = &authCode{
		clientID: f.Get("client_id"), redirectURI: f.Get("redirect_uri"), subject: user,
		scopes: strings.Fields(f.Get("scope")), challenge: f.Get("code_challenge"), method: f.Get("code_challenge_method"),
		expires: s.opts.Now().Add(s.opts.CodeTTL),
	}
	back.Set("code", code)
	back.Set("scope", f.Get("scope"))
	back.Set("iss", s.opts.Issuer)
	s.logger.Printf("customer %q logged in for client_id=%s", user, f.Get("client_id"))
	http.Redirect(w, r, f.Get("redirect_uri")+"?"+back.Encode(), http.StatusFound)
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
