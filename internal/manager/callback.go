package manager

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/credops/cd-credentials-operator/controllers"
	"github.com/credops/cd-credentials-operator/internal/onboarding"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// setupCallback adds the onboarding callback server to the manager when it is
// configured, and returns the Authorizer that puts authorization URLs in grant status.
// Every replica serves the callback: it needs no leader.
func setupCallback(mgr ctrl.Manager, opts Options, key []byte) (controllers.Authorizer, error) {
	if opts.CallbackBindAddress == "" {
		return nil, nil
	}
	path, err := callbackPath(opts.CallbackURL)
	if err != nil {
		return nil, err
	}
	signer, err := onboarding.SignerFromKey(key)
	if err != nil {
		return nil, err
	}
	revoker, _ := opts.Tokens.(tokenclient.Revoker)
	cb := &onboarding.Callback{
		Client:      mgr.GetClient(),
		APIReader:   mgr.GetAPIReader(),
		Signer:      signer,
		Tokens:      opts.Tokens,
		Revoker:     revoker,
		Recorder:    mgr.GetEventRecorder("cdusergrant-callback"),
		Clock:       opts.Clock,
		CallbackURL: opts.CallbackURL,
	}
	shutdown := 10 * time.Second
	server := &manager.Server{
		Name:            "callback",
		Server:          &http.Server{Addr: opts.CallbackBindAddress, Handler: serveCallbackAt(path, limitCallback(cb, signer, opts.Clock)), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second},
		ShutdownTimeout: &shutdown,
	}
	if opts.CallbackCertDir != "" {
		// The certificate is reloaded when it is renewed (cert-manager rotates it).
		watcher, err := certwatcher.New(filepath.Join(opts.CallbackCertDir, "tls.crt"), filepath.Join(opts.CallbackCertDir, "tls.key"))
		if err != nil {
			return nil, fmt.Errorf("callback TLS: %w", err)
		}
		if err := mgr.Add(watcher); err != nil {
			return nil, err
		}
		l, err := net.Listen("tcp", opts.CallbackBindAddress)
		if err != nil {
			return nil, fmt.Errorf("callback server: %w", err)
		}
		server.Listener = tls.NewListener(l, &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: watcher.GetCertificate})
	}
	if err := mgr.Add(server); err != nil {
		return nil, err
	}
	return &onboarding.Authorizer{Signer: signer, CallbackURL: opts.CallbackURL, StateTTL: opts.AuthorizationStateTTL}, nil
}

// legacyCallbackPath is where the callback has always answered. An Ingress that strips
// a path prefix (rewrite-target) forwards /cd-operator/callback as /callback, so it
// keeps working whatever --callback-url says.
const legacyCallbackPath = "/callback"

// callbackPath is the path the callback is served on: the path of --callback-url, where
// the identity server sends the customer and the chart's Ingress or HTTPRoute forwards
// it unchanged. A URL the customer could not be sent back to, or without a path of its
// own, is a flag error at start rather than a 404 at the end of every login.
func callbackPath(callbackURL string) (string, error) {
	const want = "an absolute http(s) URL with a path, such as https://cd-callback.example.com/callback"
	if callbackURL == "" {
		return "", fmt.Errorf("--callback-url is required with --callback-bind-address: %s", want)
	}
	u, err := url.Parse(callbackURL)
	switch {
	case err != nil:
		return "", fmt.Errorf("--callback-url %q: %w", callbackURL, err)
	case (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
		return "", fmt.Errorf("--callback-url %q must be %s", callbackURL, want)
	case u.Path == "" || u.Path == "/":
		return "", fmt.Errorf("--callback-url %q has no path: it must be %s", callbackURL, want)
	case u.Fragment != "" || strings.HasSuffix(callbackURL, "#"):
		// RFC 6749 §3.1.2: a redirection endpoint URI must not include a fragment.
		return "", fmt.Errorf("--callback-url %q must not have a fragment (RFC 6749 §3.1.2): it must be %s", callbackURL, want)
	}
	return u.Path, nil
}

// serveCallbackAt serves cb on path and on legacyCallbackPath, and nothing else. An
// exact match, not an http.ServeMux pattern: a path from a flag may hold characters a
// pattern treats as wildcards.
func serveCallbackAt(path string, cb http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path && r.URL.Path != legacyCallbackPath {
			http.NotFound(w, r)
			return
		}
		cb.ServeHTTP(w, r)
	})
}

// The callback's bounds. Logins are paced by people, and every request with a genuine
// state costs API reads (and a refusal may cost a write) from the manager's share, which
// every renewal uses; the URL is public and a genuine link is easy to replay. The bounds
// are global: behind an Ingress every request comes from its address.
const (
	// callbackRate and callbackBurst: 10 requests a second, 30 at once, are far above
	// the logins of any onboarding.
	callbackRate  = rate.Limit(10)
	callbackBurst = 30
	// callbackInFlight bounds requests served at once (a code exchange waits on the
	// identity server).
	callbackInFlight = 16
	// expiredRate and expiredBurst bound requests whose genuine state has expired on a
	// budget of their own: one old link (an old e-mail, a browser's history) is anyone's
	// to replay, and on the shared budget it would turn every fresh login away. An
	// expired link only gets the "ask for a new link" page (and costs a grant read).
	expiredRate  = rate.Limit(1)
	expiredBurst = 5
)

// limitCallback answers 429 beyond callbackRate and 503 beyond callbackInFlight, both
// with Retry-After, before next costs anything. Only requests whose state signer made
// count and are counted, those of an expired state on a budget of their own
// (expiredRate): anything else costs next an HMAC check and no API call, and were it
// counted, anyone could turn every genuine login away with requests that need no link
// (a browser's /favicon.ico, a made-up state) or with one old link. serveCallbackAt
// answers other paths before this.
func limitCallback(next http.Handler, signer *onboarding.Signer, clk clock.PassiveClock) http.Handler {
	limiter := rate.NewLimiter(callbackRate, callbackBurst)
	expired := rate.NewLimiter(expiredRate, expiredBurst)
	inFlight := make(chan struct{}, callbackInFlight)
	busy := func(w http.ResponseWriter, status int) {
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, "Too many logins at once. Wait a moment and reload this page.", status)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		state := r.URL.Query().Get("state")
		if !signer.Genuine(state) {
			next.ServeHTTP(w, r)
			return
		}
		budget := limiter
		if _, err := signer.Verify(state, clk.Now()); err != nil {
			budget = expired
		}
		if !budget.AllowN(clk.Now(), 1) {
			busy(w, http.StatusTooManyRequests)
			return
		}
		select {
		case inFlight <- struct{}{}:
			defer func() { <-inFlight }()
		default:
			busy(w, http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}
