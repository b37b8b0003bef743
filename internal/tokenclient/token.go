package tokenclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/time/rate"
)

// AuthMethod is how the client authenticates at the token endpoint.
type AuthMethod string

const (
	// ClientSecretPost sends client_id and client_secret in the form body (Central Dispatch).
	ClientSecretPost AuthMethod = "ClientSecretPost"
	// ClientSecretBasic sends them in an HTTP Basic Authorization header.
	ClientSecretBasic AuthMethod = "ClientSecretBasic"
)

// Endpoint is one client at one token endpoint.
type Endpoint struct {
	TokenURL     string
	AuthMethod   AuthMethod
	ClientID     string
	ClientSecret string
	Scopes       []string
}

// Token is what the endpoint returned. Lifetime comes from expires_in; the caller stamps
// the expiry from its own clock, so a skewed server clock cannot make a token look fresh.
type Token struct {
	AccessToken string
	// TokenType is always "Bearer": it is the default when the response has none, any
	// other type is refused, and "bearer" in another case is written canonically so
	// that "<TokenType> <AccessToken>" is a valid Authorization header.
	TokenType string
	// RefreshToken is empty when the response carried none: the caller keeps the old one.
	RefreshToken string
	// Scopes granted (`scope` split on spaces); the requested scopes when absent.
	Scopes []string
	// Lifetime from expires_in, in whole seconds, at most 24 h; 0 when missing or
	// unusable, and the caller falls back to its own default.
	Lifetime time.Duration
	// RefreshLifetime is the refresh token's own lifetime, from refresh_expires_in
	// (Keycloak: the shortest of its session idle and maximum times), read as Lifetime
	// is; 0 when the answer gives none, or 0 (Keycloak's offline tokens): no limit
	// beyond the provider's word. A refresh token that dies unused before the renewal
	// that would spend it loses the customer's session.
	RefreshLifetime time.Duration
}

// Issuer is the token endpoint as the controllers see it.
type Issuer interface {
	ClientCredentials(ctx context.Context, ep Endpoint) (*Token, error)
	Refresh(ctx context.Context, ep Endpoint, refreshToken string) (*Token, error)
	// Exchange trades an authorization code; codeVerifier is the PKCE verifier, or "".
	Exchange(ctx context.Context, ep Endpoint, code, redirectURL, codeVerifier string) (*Token, error)
}

// Revoker revokes a token at an RFC 7009 revocation endpoint. It is apart from Issuer:
// only deletion needs it.
type Revoker interface {
	// Revoke asks the server to revoke token; tokenTypeHint is "refresh_token",
	// "access_token" or "". A server that does not know the token answers success.
	Revoke(ctx context.Context, ep Endpoint, revocationURL, token, tokenTypeHint string) error
}

// Options for New.
type Options struct {
	// AllowedHosts are the only hosts (host, or host:port) a request is sent to.
	AllowedHosts []string
	// Timeout bounds one whole request, body included; default 30 s.
	Timeout time.Duration
	// MaxResponseBytes bounds a response body; default 1 MiB.
	MaxResponseBytes int64
	// RequestsPerSecond limits requests across all callers; 0 means no limit.
	RequestsPerSecond float64
	// Burst is the rate limiter's burst; at least 1.
	Burst int
	// Transport, when set, carries the requests instead of one trusting the system's
	// roots (or the compiled-in bundle when the system has none): the manager's
	// CAFileTransport, whose roots add a CA file's and follow it as it changes.
	Transport http.RoundTripper
	// HTTPClient's Transport is reused when set (tests). Its CheckRedirect, Timeout and
	// Jar are not: redirects and cookies have no place in a token request.
	HTTPClient *http.Client
}

const (
	defaultTimeout          = 30 * time.Second
	defaultMaxResponseBytes = 1 << 20
	userAgent               = "cd-credentials-operator"
)

// Client is the real Issuer. It is safe for concurrent use.
type Client struct {
	allowed   allowList
	transport http.RoundTripper
	timeout   time.Duration
	maxBody   int64
	limiter   *rate.Limiter
	now       func() time.Time
}

var (
	_ Issuer  = (*Client)(nil)
	_ Revoker = (*Client)(nil)
)

// New returns a Client.
func New(opts Options) *Client {
	c := &Client{
		allowed:   newAllowList(opts.AllowedHosts),
		transport: opts.Transport,
		timeout:   opts.Timeout,
		maxBody:   opts.MaxResponseBytes,
		now:       time.Now,
	}
	if c.timeout <= 0 {
		c.timeout = defaultTimeout
	}
	if c.maxBody <= 0 {
		c.maxBody = defaultMaxResponseBytes
	}
	if c.transport == nil {
		c.transport = newTransport(nil)
	}
	if opts.HTTPClient != nil && opts.HTTPClient.Transport != nil {
		c.transport = opts.HTTPClient.Transport
	}
	if opts.RequestsPerSecond > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(opts.RequestsPerSecond), max(1, opts.Burst))
	}
	return c
}

// idleConnsPerHost is how many idle connections to one token host are kept for reuse:
// more than the reconciles a manager runs in parallel.
const idleConnsPerHost = 64

// newTransport is http.DefaultTransport with a pool sized for many concurrent requests
// to one host. DefaultTransport keeps 2 idle connections per host: with more token
// requests in flight than that, most of them opened (over TLS: negotiated) a connection
// of their own and threw it away.
func newTransport(roots *x509.CertPool) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = idleConnsPerHost
	t.MaxIdleConns = max(t.MaxIdleConns, idleConnsPerHost)
	if roots != nil {
		t.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	return t
}

// grant sends one token request through x/oauth2, using the *http.Client in ctx.
type grant func(ctx context.Context, conf *oauth2.Config) (*oauth2.Token, error)

// ClientCredentials asks for a token with grant_type=client_credentials.
func (c *Client) ClientCredentials(ctx context.Context, ep Endpoint) (*Token, error) {
	return c.do(ctx, ep, nil, func(ctx context.Context, conf *oauth2.Config) (*oauth2.Token, error) {
		cc := clientcredentials.Config{
			ClientID:     conf.ClientID,
			ClientSecret: conf.ClientSecret,
			TokenURL:     conf.Endpoint.TokenURL,
			Scopes:       conf.Scopes,
			AuthStyle:    conf.Endpoint.AuthStyle,
		}
		return cc.Token(ctx)
	})
}

// Refresh spends a refresh token. It sends it at most once, whatever happens.
func (c *Client) Refresh(ctx context.Context, ep Endpoint, refreshToken string) (*Token, error) {
	if refreshToken == "" {
		return nil, &Error{Kind: KindInvalidGrant, Description: "no refresh token to send"}
	}
	return c.do(ctx, ep, []string{refreshToken}, func(ctx context.Context, conf *oauth2.Config) (*oauth2.Token, error) {
		// A token without an access token is never valid, so the token source refreshes
		// exactly once. It sends no scope: a refresh keeps the grant's scope.
		return conf.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	})
}

// Exchange trades an authorization code (and its PKCE verifier, if any) for tokens.
func (c *Client) Exchange(ctx context.Context, ep Endpoint, code, redirectURL, codeVerifier string) (*Token, error) {
	if code == "" {
		return nil, &Error{Kind: KindInvalidGrant, Description: "no authorization code to send"}
	}
	return c.do(ctx, ep, []string{code, codeVerifier}, func(ctx context.Context, conf *oauth2.Config) (*oauth2.Token, error) {
		conf.RedirectURL = redirectURL
		var opts []oauth2.AuthCodeOption
		if codeVerifier != "" {
			opts = append(opts, oauth2.VerifierOption(codeVerifier))
		}
		return conf.Exchange(ctx, code, opts...)
	})
}

// do refuses what must not be sent, waits for the rate limiter, sends one request and
// turns the outcome into a Token or an *Error. spent are the grant's own secrets (refresh
// token, code), which the answer must not repeat back to the caller.
func (c *Client) do(ctx context.Context, ep Endpoint, spent []string, send grant) (*Token, error) {
	style, err := authStyle(ep.AuthMethod)
	if err != nil {
		return nil, err
	}
	if err := c.allowed.check(ep.TokenURL); err != nil {
		return nil, err
	}
	if err := c.wait(ctx); err != nil {
		return nil, err
	}
	conf := &oauth2.Config{
		ClientID:     ep.ClientID,
		ClientSecret: ep.ClientSecret,
		Endpoint:     oauth2.Endpoint{TokenURL: ep.TokenURL, AuthStyle: style},
		Scopes:       ep.Scopes,
	}
	ex := &exchange{max: c.maxBody}
	_, err = send(context.WithValue(ctx, oauth2.HTTPClient, c.httpClient(ex)), conf)
	return c.outcome(ctx, ex, err, ep.Scopes, newRedactor(ep, spent...))
}

// httpClient sends one request of ex: no redirects, no cookies, the whole request
// bounded by the timeout.
func (c *Client) httpClient(ex *exchange) *http.Client {
	return &http.Client{
		Transport:     &onceTransport{base: c.transport, ex: ex},
		Timeout:       c.timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Revoke revokes token at revocationURL (RFC 7009), with the same guarantees as a token
// request: the allow-list, the explicit auth style, the rate limit, one send, and
// errors that never carry the token or the secret. Any 2xx is success: the server
// revoked the token or did not know it.
func (c *Client) Revoke(ctx context.Context, ep Endpoint, revocationURL, token, tokenTypeHint string) error {
	if token == "" {
		return &Error{Kind: KindInvalidGrant, Description: "no token to revoke"}
	}
	style, err := authStyle(ep.AuthMethod)
	if err != nil {
		return err
	}
	if err := c.allowed.check(revocationURL); err != nil {
		return err
	}
	if err := c.wait(ctx); err != nil {
		return err
	}
	req, err := revocationRequest(ctx, ep, style, revocationURL, token, tokenTypeHint)
	if err != nil {
		return &Error{Kind: KindHostNotAllowed, Description: "the revocation URL cannot be requested"}
	}
	ex := &exchange{max: c.maxBody}
	resp, err := c.httpClient(ex).Do(req)
	if resp != nil {
		resp.Body.Close()
	}
	red := newRedactor(ep, token)
	switch {
	case is2xx(ex.status):
		// Revoked, or unknown to the server; what the body says does not matter.
		return nil
	case ex.tooBig:
		return tooLarge(ex, c.maxBody, c.now())
	case ex.read:
		return refusal(retrieveError(ex), ex.url, red, c.now())
	}
	return transportFailure(ctx, ex, err, red)
}

// revocationRequest builds the RFC 7009 form, authenticated exactly as style says.
func revocationRequest(ctx context.Context, ep Endpoint, style oauth2.AuthStyle, revocationURL, token, tokenTypeHint string) (*http.Request, error) {
	form := url.Values{"token": {token}}
	if tokenTypeHint != "" {
		form.Set("token_type_hint", tokenTypeHint)
	}
	if style == oauth2.AuthStyleInParams {
		form.Set("client_id", ep.ClientID)
		form.Set("client_secret", ep.ClientSecret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, revocationURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if style == oauth2.AuthStyleInHeader {
		// RFC 6749 §2.3.1, as x/oauth2 sends it for token requests.
		req.SetBasicAuth(url.QueryEscape(ep.ClientID), url.QueryEscape(ep.ClientSecret))
	}
	return req, nil
}

// outcome reads what happened to the one request. x/oauth2 decides nothing on success:
// its parser rejects answers this package accepts (expires_in "3600.0", a JSON body
// labelled text/plain) and fills in the old refresh token when the answer has none, so
// a 2xx body is always read here, from the bytes that arrived. x/oauth2 also calls a 2xx
// with an `error` field a refusal; one that carries a token all the same is read as a
// success answer, so a refresh token in it, the successor of the one just spent, is
// never dropped.
func (c *Client) outcome(ctx context.Context, ex *exchange, err error, requested []string, red redactor) (*Token, error) {
	re, refused := asRetrieveError(err)
	switch {
	case ex.tooBig:
		return nil, tooLarge(ex, c.maxBody, c.now())
	case refused && !carriesToken(ex):
		return nil, refusal(re, ex.url, red, c.now())
	case ex.read && is2xx(ex.status):
		return success(ex, requested, red)
	}
	return nil, transportFailure(ctx, ex, err, red)
}

func authStyle(m AuthMethod) (oauth2.AuthStyle, error) {
	switch m {
	case ClientSecretPost:
		return oauth2.AuthStyleInParams, nil
	case ClientSecretBasic:
		return oauth2.AuthStyleInHeader, nil
	}
	return 0, &Error{Kind: KindInvalidClient, Description: scrubPatterns(fmt.Sprintf("unknown client auth method %q: want %s or %s", m, ClientSecretPost, ClientSecretBasic))}
}

// admittedKey marks a context on which Admit already waited for the rate limit.
type admittedKey struct{}

// admission is one turn in the rate limit, taken by the first request sent on its context.
type admission struct{ used atomic.Bool }

// Admit waits for a turn in the client-side rate limit now and returns a context on
// which the next request goes out without waiting again (later ones wait as usual).
// A refresh token's in-flight mark is written between Admit and the send: then nothing
// but that write lies between the mark and the request, and a process stopped while it
// waits for its turn has marked nothing. An error means no turn was taken: the caller
// gave up first, or ctx had ended (without a rate limit too: a stopping manager must not
// mark and send a token whose answer nobody would store).
func (c *Client) Admit(ctx context.Context) (context.Context, error) {
	if err := c.wait(ctx); err != nil {
		return ctx, err
	}
	if err := ctx.Err(); err != nil {
		return ctx, err
	}
	return context.WithValue(ctx, admittedKey{}, &admission{}), nil
}

// Admit is Client.Admit for any Issuer: one without a rate limit admits at once, unless
// ctx has ended.
func Admit(ctx context.Context, i Issuer) (context.Context, error) {
	if a, ok := i.(interface {
		Admit(context.Context) (context.Context, error)
	}); ok {
		return a.Admit(ctx)
	}
	return ctx, ctx.Err()
}

// wait honours the client-side rate limit, unless Admit already waited for this
// request. A request that gives up waiting was never sent, so the caller may send it
// later without any doubt.
func (c *Client) wait(ctx context.Context) error {
	if a, ok := ctx.Value(admittedKey{}).(*admission); ok && a.used.CompareAndSwap(false, true) {
		return nil
	}
	if c.limiter == nil {
		return nil
	}
	err := c.limiter.Wait(ctx)
	if err == nil {
		return nil
	}
	cause := ctx.Err()
	if cause == nil {
		// The limiter gives up early when the wait would outlast the deadline.
		cause = context.DeadlineExceeded
	}
	return &Error{Kind: KindTransient, Description: "gave up waiting for the token request rate limit: " + cause.Error(), cause: cause}
}
