package manager

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
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
// every renewal uses; the URL is public and a genuine link is easy to replay. Behind an
// Ingress every request comes from its address, so the bounds are keyed on what the
// signed state says, never on the client: each namespace's links have a budget of their
// own, and all of them together a global one.
const (
	// namespaceRate, namespaceBurst and namespaceInFlight bound the requests of one
	// namespace's unexpired links. Anyone who may read a grant's status holds such a link
	// (status.authorizationURL), and a customer's used one stays unexpired in the
	// browser's history for the link's lifetime; on the global budget alone, replaying
	// it would turn every other namespace's customers away. 2 a second, 10 at once, 4
	// served at once are still far above the logins of one namespace's onboarding.
	namespaceRate     = rate.Limit(2)
	namespaceBurst    = 10
	namespaceInFlight = 4
	// maxNamespaces bounds the namespaces whose budgets are kept. Only a state the
	// operator signed makes an entry, so there are as many as namespaces with grants
	// (and old links); an entry quiet for namespaceIdle is dropped first.
	maxNamespaces = 1024
	// namespaceIdle is well past the time a namespace's bucket takes to fill again
	// (namespaceBurst/namespaceRate, 5 seconds): dropping an entry quiet that long, with
	// nothing in flight, forgets nothing.
	namespaceIdle = time.Minute
	// callbackRate, callbackBurst and callbackInFlight are the outer cap on all
	// namespaces together, what the manager's API share can spare: 10 requests a second,
	// 30 at once, 16 served at once (a code exchange waits on the identity server). They
	// are several namespaces' shares, so one namespace's flood leaves most of them.
	callbackRate     = rate.Limit(10)
	callbackBurst    = 30
	callbackInFlight = 16
	// expiredRate and expiredBurst bound requests whose genuine state has expired on a
	// budget of their own: one old link (an old e-mail, a browser's history) is anyone's
	// to replay, and on the shared budget it would turn every fresh login away. An
	// expired link only gets the "ask for a new link" page (and costs a grant read).
	expiredRate  = rate.Limit(1)
	expiredBurst = 5
)

// callbackLimiter answers 429 beyond a rate and 503 beyond the requests served at once,
// both with Retry-After, before next costs anything. Only requests whose state signer
// made count and are counted: those of an unexpired state on their namespace's budget
// and then the global one, those of an expired state on a budget of their own
// (expiredRate). Anything else costs next an HMAC check and no API call, and were it
// counted, anyone could turn every genuine login away with requests that need no link
// (a browser's /favicon.ico, a made-up state) or with one old link. serveCallbackAt
// answers other paths before this.
type callbackLimiter struct {
	next       http.Handler
	signer     *onboarding.Signer
	clock      clock.PassiveClock
	global     *rate.Limiter
	expired    *rate.Limiter
	inFlight   chan struct{}
	namespaces namespaceBudgets
}

func limitCallback(next http.Handler, signer *onboarding.Signer, clk clock.PassiveClock) *callbackLimiter {
	return &callbackLimiter{
		next:       next,
		signer:     signer,
		clock:      clk,
		global:     rate.NewLimiter(callbackRate, callbackBurst),
		expired:    rate.NewLimiter(expiredRate, expiredBurst),
		inFlight:   make(chan struct{}, callbackInFlight),
		namespaces: namespaceBudgets{entries: map[string]*namespaceBudget{}},
	}
}

func (l *callbackLimiter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	state := r.URL.Query().Get("state")
	if !l.signer.Genuine(state) {
		l.next.ServeHTTP(w, r)
		return
	}
	now := l.clock.Now()
	st, err := l.signer.Verify(state, now)
	if err != nil {
		if !l.expired.AllowN(now, 1) {
			busy(w, http.StatusTooManyRequests)
			return
		}
		l.serve(w, r, nil)
		return
	}
	// The namespace's budget first: a request it refuses takes nothing from the others'.
	ns := l.namespaces.of(st.Namespace, now)
	if !ns.limiter.AllowN(now, 1) || !l.global.AllowN(now, 1) {
		busy(w, http.StatusTooManyRequests)
		return
	}
	l.serve(w, r, ns)
}

// serve runs next in a place among the requests served at once, one of ns's too when
// ns is set.
func (l *callbackLimiter) serve(w http.ResponseWriter, r *http.Request, ns *namespaceBudget) {
	if ns != nil {
		if !l.namespaces.enter(ns) {
			busy(w, http.StatusServiceUnavailable)
			return
		}
		defer l.namespaces.leave(ns)
	}
	select {
	case l.inFlight <- struct{}{}:
		defer func() { <-l.inFlight }()
	default:
		busy(w, http.StatusServiceUnavailable)
		return
	}
	l.next.ServeHTTP(w, r)
}

func busy(w http.ResponseWriter, status int) {
	w.Header().Set("Retry-After", "1")
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, "Too many logins at once. Wait a moment and reload this page.", status)
}

// namespaceBudgets holds the budget of each namespace whose links were opened lately.
type namespaceBudgets struct {
	mu      sync.Mutex
	entries map[string]*namespaceBudget
}

type namespaceBudget struct {
	limiter  *rate.Limiter
	inFlight int
	seen     time.Time
}

// of returns the budget of namespace ns, made when it has none. Making one beyond
// maxNamespaces first drops the entries quiet for namespaceIdle, and if none is, the
// one quiet longest with nothing in flight (its namespace gets a full bucket should it
// come back, the least harm there is).
func (b *namespaceBudgets) of(ns string, now time.Time) *namespaceBudget {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[ns]
	if !ok {
		if len(b.entries) >= maxNamespaces {
			b.dropQuiet(now)
		}
		e = &namespaceBudget{limiter: rate.NewLimiter(namespaceRate, namespaceBurst)}
		b.entries[ns] = e
	}
	e.seen = now
	return e
}

func (b *namespaceBudgets) dropQuiet(now time.Time) {
	var oldest string
	for ns, e := range b.entries {
		switch {
		case e.inFlight > 0:
		case now.Sub(e.seen) >= namespaceIdle:
			delete(b.entries, ns)
		case oldest == "" || e.seen.Before(b.entries[oldest].seen):
			oldest = ns
		}
	}
	if len(b.entries) >= maxNamespaces && oldest != "" {
		delete(b.entries, oldest)
	}
}

// enter takes one of e's places among the requests served at once, if one is free.
func (b *namespaceBudgets) enter(e *namespaceBudget) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e.inFlight >= namespaceInFlight {
		return false
	}
	e.inFlight++
	return true
}

func (b *namespaceBudgets) leave(e *namespaceBudget) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e.inFlight--
}
