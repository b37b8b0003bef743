// Package tokenclient asks an OAuth 2.0 token endpoint for tokens: client credentials, a
// refresh, or an authorization-code exchange. It wraps golang.org/x/oauth2 with the
// settings single-use refresh tokens need:
//
//   - The client authentication style is always explicit. x/oauth2's auto-detect sends
//     the form once in the body and, on any error, again in a header: that would spend a
//     refresh token twice, and reusing a spent token revokes the customer's grant.
//   - A request is never retried here, and redirects are never followed. Whether to try
//     again is the caller's decision, made from a typed Error that says whether the
//     server may already have processed the request (Ambiguous).
//   - Secrets are sent only to hosts on an allow-list, over https (http only to
//     loopback), so a custom resource cannot point the operator at an attacker's host.
package tokenclient

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
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
// the expiry from its own clock.
type Token struct {
	AccessToken string
	// TokenType as returned; "Bearer" when absent.
	TokenType string
	// RefreshToken is empty when the response carried none: the caller keeps the old one.
	RefreshToken string
	// Scopes granted (`scope` split on spaces); the requested scopes when absent.
	Scopes []string
	// Lifetime from expires_in; 0 when missing or unusable.
	Lifetime time.Duration
}

// Issuer is the token endpoint as the controllers see it.
type Issuer interface {
	ClientCredentials(ctx context.Context, ep Endpoint) (*Token, error)
	Refresh(ctx context.Context, ep Endpoint, refreshToken string) (*Token, error)
	Exchange(ctx context.Context, ep Endpoint, code, redirectURL, codeVerifier string) (*Token, error)
}

// Options for New.
type Options struct {
	// AllowedHosts are the only hosts (host, or host:port) a request is sent to.
	AllowedHosts []string
	// Timeout bounds one whole request; default 30 s.
	Timeout time.Duration
	// MaxResponseBytes bounds a response body; default 1 MiB.
	MaxResponseBytes int64
	// RequestsPerSecond limits requests across all callers; 0 means no limit.
	RequestsPerSecond float64
	// Burst is the rate limiter's burst; default 1.
	Burst int
	// HTTPClient's Transport is reused when set (tests).
	HTTPClient *http.Client
}

// Client is the real Issuer.
type Client struct {
	allowed map[string]bool
	http    *http.Client
	maxBody int64
	limiter *rate.Limiter
}

// maxLifetime caps an absurd expires_in: a token is renewed at least daily.
const maxLifetime = 24 * time.Hour

// New returns a Client.
func New(opts Options) *Client {
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.MaxResponseBytes <= 0 {
		opts.MaxResponseBytes = 1 << 20
	}
	transport := http.DefaultTransport
	if opts.HTTPClient != nil && opts.HTTPClient.Transport != nil {
		transport = opts.HTTPClient.Transport
	}
	c := &Client{
		allowed: map[string]bool{},
		maxBody: opts.MaxResponseBytes,
		http: &http.Client{
			Transport: transport,
			Timeout:   opts.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}
	for _, h := range opts.AllowedHosts {
		c.allowed[strings.ToLower(strings.TrimSpace(h))] = true
	}
	if opts.RequestsPerSecond > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(opts.RequestsPerSecond), max(1, opts.Burst))
	}
	return c
}

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

// Refresh spends a refresh token, exactly once.
func (c *Client) Refresh(ctx context.Context, ep Endpoint, refreshToken string) (*Token, error) {
	return c.do(ctx, ep, []string{refreshToken}, func(ctx context.Context, conf *oauth2.Config) (*oauth2.Token, error) {
		// TokenSource refreshes because the token has no access token; it sends the
		// request once and never retries.
		return conf.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	})
}

// Exchange trades an authorization code (and its PKCE verifier, if any) for tokens.
func (c *Client) Exchange(ctx context.Context, ep Endpoint, code, redirectURL, codeVerifier string) (*Token, error) {
	return c.do(ctx, ep, []string{code, codeVerifier}, func(ctx context.Context, conf *oauth2.Config) (*oauth2.Token, error) {
		conf.RedirectURL = redirectURL
		var opts []oauth2.AuthCodeOption
		if codeVerifier != "" {
			opts = append(opts, oauth2.VerifierOption(codeVerifier))
		}
		return conf.Exchange(ctx, code, opts...)
	})
}

// do checks the endpoint, waits for the rate limiter and runs one request.
func (c *Client) do(ctx context.Context, ep Endpoint, secrets []string, call func(context.Context, *oauth2.Config) (*oauth2.Token, error)) (*Token, error) {
	style, err := authStyle(ep.AuthMethod)
	if err != nil {
		return nil, err
	}
	if err := c.checkHost(ep.TokenURL); err != nil {
		return nil, err
	}
	if c.limiter != nil {
		if err := c.limiter.Wait(ctx); err != nil {
			return nil, &Error{Kind: KindTransient, Description: "waiting for the token request rate limit: " + err.Error()}
		}
	}
	conf := &oauth2.Config{
		ClientID:     ep.ClientID,
		ClientSecret: ep.ClientSecret,
		Endpoint:     oauth2.Endpoint{TokenURL: ep.TokenURL, AuthStyle: style},
		Scopes:       ep.Scopes,
	}
	redact := append([]string{ep.ClientSecret}, secrets...)
	capture := &response{}
	hc := *c.http
	hc.Transport = &capturingTransport{base: c.http.Transport, max: c.maxBody, into: capture}
	tok, err := call(context.WithValue(ctx, oauth2.HTTPClient, &hc), conf)
	if err != nil {
		return nil, classify(err, capture, redact)
	}
	return fromResponse(tok, capture, ep.Scopes)
}

func authStyle(m AuthMethod) (oauth2.AuthStyle, error) {
	switch m {
	case ClientSecretPost:
		return oauth2.AuthStyleInParams, nil
	case ClientSecretBasic:
		return oauth2.AuthStyleInHeader, nil
	}
	return 0, &Error{Kind: KindInvalidClient, Description: fmt.Sprintf("unknown client auth method %q", m)}
}

// checkHost refuses, before anything is sent, a URL whose host is not allowed or whose
// scheme is not https (http is allowed to loopback hosts only).
func (c *Client) checkHost(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return &Error{Kind: KindHostNotAllowed, Description: "token URL is not an absolute URL"}
	}
	host := strings.ToLower(u.Hostname())
	if u.Scheme != "https" && (u.Scheme != "http" || !isLoopback(host)) {
		return &Error{Kind: KindHostNotAllowed, Description: fmt.Sprintf("token URL scheme %q not allowed for host %s: https is required (http only to loopback)", u.Scheme, host)}
	}
	if !c.allowed[host] && !c.allowed[strings.ToLower(u.Host)] {
		return &Error{Kind: KindHostNotAllowed, Description: fmt.Sprintf("host %s is not on the allowed token hosts", u.Host)}
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
