// Package cdsandbox is a faithful stand-in for Central Dispatch's identity server, used by
// every test in this repository and by `make demo`, and runnable on its own
// (cmd/cd-sandbox) for developing against Central Dispatch locally.
//
// It keeps Central Dispatch's rules: one client per flow (an authorization-code client
// may not use client_credentials, a client-credentials client may not refresh),
// single-use refresh tokens where presenting a spent one revokes the customer's whole
// grant, single-use short-lived authorization codes bound to the redirect URI and PKCE,
// and real expires_in. It also stubs the Marketplace API, which refuses tokens not
// minted by a client-credentials client, as Central Dispatch does since it enforced the
// split between the two credential sets.
//
// Like certified OpenID providers it ignores offline_access unless the authorization
// request asked for prompt=consent (OpenID Connect Core §11), and it keeps the queries
// of recent authorization requests for tests to inspect. Options.Profile makes it answer
// a spent refresh token, an unknown scope and a disallowed grant type in the words and
// status codes of another identity server (Dex, Keycloak, Microsoft Entra ID, Okta,
// Auth0, Google), and rotate refresh tokens as that server does (Profile.Rotation:
// Google never rotates them, Entra keeps old ones valid, Okta has a grace period), and
// end sessions as that server does (Keycloak's SSO Session Idle and Max), so the
// operator can be tested against each. The default, Central Dispatch's strict
// single-use rotation, is what `make demo` and the chaos suite run against.
package cdsandbox

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"log"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"
)

// Client is a registered client.
type Client struct {
	ID     string `json:"id"`
	Secret string `json:"secret"`
	// GrantTypes: "client_credentials" or "authorization_code" (which implies
	// refresh_token). Central Dispatch registers one client per flow.
	GrantTypes []string `json:"grantTypes"`
	// RedirectURIs registered for an authorization_code client.
	RedirectURIs []string `json:"redirectURIs"`
	// Scopes allowed; empty allows any.
	Scopes []string `json:"scopes"`
}

// grantTypes are the grant types the client may use, refresh_token spelled out.
func (c *Client) grantTypes() []string {
	var out []string
	for _, g := range c.GrantTypes {
		out = append(out, g)
		if g == "authorization_code" {
			out = append(out, "refresh_token")
		}
	}
	return out
}

func (c *Client) allows(grantType string) bool {
	for _, g := range c.GrantTypes {
		if g == grantType || (grantType == "refresh_token" && g == "authorization_code") {
			return true
		}
	}
	return false
}

// Options configure a Server.
type Options struct {
	// Issuer is the base URL the server is reachable at; see SetIssuer.
	Issuer  string
	Clients []Client
	// AccessTokenTTL is expires_in; default 30 minutes.
	AccessTokenTTL time.Duration
	// RefreshTokenTTL is how long a refresh token lives at a profile whose server limits
	// it (Profile.RefreshTokenTTL: Keycloak's SSO Session Idle): it is sent as
	// refresh_expires_in, and a refresh token presented after it is refused as that
	// server refuses it. 0 is the profile's default; the other profiles send none.
	RefreshTokenTTL time.Duration
	// SessionMax is how long a customer's session lives at a profile whose server ends
	// it a fixed time after the login however often it is refreshed
	// (Profile.SessionMax: Keycloak's SSO Session Max). It is counted from the login
	// that created the session (an authorization code exchanged, or SeedGrant) and kept
	// across its refreshes: each refresh token's refresh_expires_in is the lesser of
	// RefreshTokenTTL and what is left of the session, and a refresh after it is refused
	// as that server refuses it. Grants with offline_access are not limited, as
	// Keycloak's offline sessions. 0 is the profile's default; the other profiles have
	// none.
	SessionMax time.Duration
	// CodeTTL is how long an authorization code lives; default 60 s.
	CodeTTL time.Duration
	// Now replaces time.Now in tests.
	Now func() time.Time
	// Logger gets one line per token request (grant type, client, result), never a
	// token, secret or code. nil discards.
	Logger *log.Logger
	// Profile is the identity server whose refusals the sandbox imitates; "" is
	// ProfileCD. New panics on a name ParseProfile would refuse.
	Profile Profile
	// OfflineAccessWithoutConsent issues a refresh token for offline_access even when
	// the authorization request did not ask for prompt=consent. By default the sandbox
	// follows OpenID Connect Core §11, as certified providers do: without consent,
	// offline_access is ignored (and left out of the granted scopes). The google
	// profile ignores this and follows Google's rule instead: a refresh token only for
	// access_type=offline, and after the first one only when prompt=consent.
	OfflineAccessWithoutConsent bool
}

// TokenInfo describes a valid access token.
type TokenInfo struct {
	ClientID, Subject, GrantType string
	Scopes                       []string
	ExpiresAt                    time.Time
}

// Stats are counters tests assert on.
type Stats struct {
	// TokenRequests counts every token request that reached the handler, by grant type.
	TokenRequests map[string]int
	// Issued counts successful token responses by grant type.
	Issued map[string]int
	// RefreshTokensReused counts spent refresh tokens presented again. A correct
	// operator keeps it at 0.
	RefreshTokensReused int
	// GrantsRevoked counts customer grants revoked (after a reuse, or a code replay).
	GrantsRevoked int
	// Rejected counts error answers by OAuth error code.
	Rejected map[string]int
	// LateRenewals counts refreshes that came after the grant's previous access token
	// had expired: a pod holding it would have been refused in between.
	LateRenewals int
	// Revocations counts revocation requests (RFC 7009) the sandbox accepted from an
	// authenticated client, whether or not it knew the token.
	Revocations int
	// RefreshTokensExpired counts refresh tokens presented after their own expiry
	// (refresh_expires_in, Options.RefreshTokenTTL). A correct operator keeps it at 0.
	RefreshTokensExpired int
	// SessionsEnded counts refresh tokens presented after their session ended
	// (Options.SessionMax). A correct operator sends each ended session's token once:
	// the customer must log in again.
	SessionsEnded int
}

// FaultMode is how an injected fault misbehaves.
type FaultMode int

const (
	// FaultStatus answers with Status (and RetryAfter) instead of the real answer: RFC
	// 6749's temporarily_unavailable for a 429 or a 5xx, a bare message for any other.
	FaultStatus FaultMode = iota
	// FaultHang waits Delay (or until the client goes away) and then answers normally.
	FaultHang
	// FaultDropConnection closes the connection without an answer.
	FaultDropConnection
)

// Fault makes the next matching token request(s) misbehave.
type Fault struct {
	GrantType string // "" matches any
	Count     int    // how many requests; 0 means 1
	// After processes the request fully first (a refresh token is spent and its
	// successor minted), then misbehaves: the answer is lost or late.
	After  bool
	Mode   FaultMode
	Delay  time.Duration
	Status int
	// RetryAfter is how long, in seconds, the answer asks the client to wait. The
	// profile words it: Retry-After for most, X-Rate-Limit-Reset for Okta's 429.
	RetryAfter string
}

// Server is the sandbox identity server; it is an http.Handler.
type Server struct {
	mu      sync.Mutex
	opts    Options
	key     []byte
	clients map[string]*Client
	codes   map[string]*authCode
	refresh map[string]*refreshToken
	access  map[string]*accessToken
	grants  map[string]*grant
	stats   Stats
	faults  []*Fault
	onToken func(grantType string, ok bool)
	journal *journal // nil unless EnableJournal
	mux     *http.ServeMux
	logger  *log.Logger
	// refusals are the profile's wordings.
	refusals refusals
	// offlineIssued holds client and subject pairs that were issued a refresh token at
	// login, for Google's "only the first time, or with prompt=consent".
	offlineIssued map[string]bool
	// authRequests are the queries of the most recent authorization requests.
	authRequests []url.Values
}

// grant is one customer's authorization of one client.
type grant struct {
	id       string
	clientID string
	subject  string
	scopes   []string
	revoked  bool
	// expires is when the newest access token of the grant expires.
	expires time.Time
	// sessionEnds is when the login's session ends whatever is refreshed
	// (Options.SessionMax); zero: never.
	sessionEnds time.Time
}

type refreshToken struct {
	grant *grant
	spent bool
	// spentAt is when it was first spent, for RotateWithGrace.
	spentAt time.Time
	// expires is when it dies (refresh_expires_in); zero: no limit.
	expires time.Time
}

type accessToken struct {
	info  TokenInfo
	grant *grant // nil for client credentials
}

type authCode struct {
	clientID, redirectURI, subject string
	scopes                         []string
	challenge, method              string
	expires                        time.Time
	used                           bool
	grant                          *grant
	// offline: the exchange brings a refresh token (consent rules of authorize.go).
	offline bool
}

// New returns a Server.
func New(opts Options) *Server {
	if opts.AccessTokenTTL <= 0 {
		opts.AccessTokenTTL = 30 * time.Minute
	}
	if opts.CodeTTL <= 0 {
		opts.CodeTTL = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	profile, err := ParseProfile(string(opts.Profile))
	if err != nil {
		panic("cdsandbox: " + err.Error())
	}
	opts.Profile = profile
	if opts.RefreshTokenTTL <= 0 {
		opts.RefreshTokenTTL = profile.RefreshTokenTTL()
	}
	if profile.RefreshTokenTTL() == 0 {
		opts.RefreshTokenTTL = 0
	}
	if opts.SessionMax <= 0 {
		opts.SessionMax = profile.SessionMax()
	}
	if profile.SessionMax() == 0 {
		opts.SessionMax = 0
	}
	s := &Server{
		opts:    opts,
		key:     []byte(randomString(32)),
		clients: map[string]*Client{},
		codes:   map[string]*authCode{},
		refresh: map[string]*refreshToken{},
		access:  map[string]*accessToken{},
		grants:  map[string]*grant{},
		stats:   Stats{TokenRequests: map[string]int{}, Issued: map[string]int{}, Rejected: map[string]int{}},
		logger:  opts.Logger,

		refusals:      profileRefusals[profile],
		offlineIssued: map[string]bool{},
	}
	if s.logger == nil {
		s.logger = log.New(io.Discard, "", 0)
	}
	for _, c := range opts.Clients {
		s.AddClient(c)
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("POST /connect/token", s.handleToken)
	s.mux.HandleFunc("GET /connect/authorize", s.handleAuthorizePage)
	s.mux.HandleFunc("POST /connect/authorize", s.handleAuthorizeSubmit)
	s.mux.HandleFunc("POST /connect/revocation", s.handleRevocation)
	s.mux.HandleFunc("GET /.well-known/openid-configuration", s.handleDiscovery)
	s.mux.HandleFunc("GET /marketplace/v2/listings", s.handleListings)
	return s
}

// ServeHTTP serves the identity server's endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// SetIssuer sets the base URL, once the server's address is known.
func (s *Server) SetIssuer(url string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Issuer = url
}

// AddClient registers a client.
func (s *Server) AddClient(c Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cc := c
	s.clients[c.ID] = &cc
}

// SeedGrant creates a customer grant for an authorization_code client as if the
// customer had logged in and the code been exchanged, and returns its first refresh
// token. Tests use it to skip the browser.
func (s *Server) SeedGrant(clientID, subject string, scopes []string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.newGrant(clientID, subject, scopes)
	return s.newRefreshToken(g)
}

// Introspect reports whether an access token is valid now, and for whom.
func (s *Server) Introspect(token string) (TokenInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.access[token]
	if !ok || !s.opts.Now().Before(a.info.ExpiresAt) || (a.grant != nil && a.grant.revoked) {
		return TokenInfo{}, false
	}
	return a.info, true
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.stats
	out.TokenRequests, out.Issued, out.Rejected = copyMap(s.stats.TokenRequests), copyMap(s.stats.Issued), copyMap(s.stats.Rejected)
	return out
}

// maxAuthRequests bounds the authorization requests the sandbox remembers.
const maxAuthRequests = 100

// AuthorizationRequests returns the queries of the most recent authorization requests
// (GET /connect/authorize, refused ones included), oldest first, at most 100: tests
// assert what a client put into its authorization URLs.
func (s *Server) AuthorizationRequests() []url.Values {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]url.Values, len(s.authRequests))
	for i, q := range s.authRequests {
		out[i] = cloneQuery(q)
	}
	return out
}

func (s *Server) recordAuthorizationRequest(q url.Values) {
	if len(s.authRequests) == maxAuthRequests {
		s.authRequests = s.authRequests[1:]
	}
	s.authRequests = append(s.authRequests, cloneQuery(q))
}

func cloneQuery(q url.Values) url.Values {
	out := make(url.Values, len(q))
	for k, vs := range q {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// InjectFault makes the next matching token request(s) misbehave.
func (s *Server) InjectFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Count <= 0 {
		f.Count = 1
	}
	s.faults = append(s.faults, &f)
}

// OnTokenRequest sets a function called after each token request is processed (before
// any fault and before the answer is written). nil removes it.
func (s *Server) OnTokenRequest(fn func(grantType string, ok bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onToken = fn
}

// newGrant records a customer's login: a grant, and the session it starts.
func (s *Server) newGrant(clientID, subject string, scopes []string) *grant {
	g := &grant{id: randomString(8), clientID: clientID, subject: subject, scopes: scopes}
	// Keycloak's offline sessions (offline_access) do not end at SSO Session Max.
	if s.opts.SessionMax > 0 && !slices.Contains(scopes, "offline_access") {
		g.sessionEnds = s.opts.Now().Add(s.opts.SessionMax)
	}
	s.grants[g.id] = g
	return g
}

func (s *Server) newRefreshToken(g *grant) string {
	t := "rt_" + randomString(24)
	rt := &refreshToken{grant: g}
	// Keycloak's offline tokens (offline_access) outlive the session: no limit, and
	// refresh_expires_in 0.
	if s.opts.RefreshTokenTTL > 0 && !slices.Contains(g.scopes, "offline_access") {
		rt.expires = s.opts.Now().Add(s.opts.RefreshTokenTTL)
	}
	// Nor does a refresh token outlive its session: near SSO Session Max,
	// refresh_expires_in is what is left of it.
	if !g.sessionEnds.IsZero() && (rt.expires.IsZero() || g.sessionEnds.Before(rt.expires)) {
		rt.expires = g.sessionEnds
	}
	s.refresh[t] = rt
	return t
}

// revoke kills a grant and every token issued under it.
func (s *Server) revoke(g *grant) {
	if !g.revoked {
		g.revoked = true
		s.stats.GrantsRevoked++
	}
}

func copyMap(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
