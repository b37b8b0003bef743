// Package manager wires the operator: the scheme, the cache (which Secrets it holds),
// the token client, the controllers and the onboarding callback. cmd/manager parses flags
// into Options and the integration tests build the very same manager, so what is tested
// is what runs.
package manager

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/controllers"
	"github.com/credops/cd-credentials-operator/internal/metabound"
	"github.com/credops/cd-credentials-operator/internal/onboarding"
	"github.com/credops/cd-credentials-operator/internal/secrets"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
	"github.com/credops/cd-credentials-operator/internal/version"
)

// Options configure one manager process. Zero values take the defaults in Defaults.
type Options struct {
	// MetricsBindAddress is where metrics are served; "0" turns the endpoint off.
	MetricsBindAddress string
	// MetricsPlainHTTP serves metrics over plain HTTP without authentication, for local
	// development only; by default they are served over HTTPS to authorized scrapers.
	MetricsPlainHTTP bool
	// MetricsCertDir holds tls.crt and tls.key for the metrics endpoint; empty (or
	// without those files) means a self-signed certificate.
	MetricsCertDir string
	// MetricsHTTP2 allows HTTP/2 on the metrics endpoint (off by default).
	MetricsHTTP2           bool
	HealthProbeBindAddress string
	// PprofBindAddress serves net/http/pprof (CPU and heap profiles) there; empty or
	// "0" (the default) serves nothing.
	PprofBindAddress string
	// KubeAPIQPS and KubeAPIBurst bound the manager's requests to the API server
	// (client-go's client-side rate limiter); a negative QPS turns the limit off and
	// leaves it to the server's API Priority and Fairness.
	KubeAPIQPS   float32
	KubeAPIBurst int
	// KubeAPICompression asks the API server for gzipped answers. Off by default: from
	// Kubernetes 1.37 (WatchListCompression) the API server gzips an informer's watch
	// stream flush by flush, each an event or a few in a gzip stream of its own, which
	// costs it and the manager CPU (3 % of the manager's at 10,000 grants) to save
	// bandwidth that a manager near its API server does not lack.
	KubeAPICompression      bool
	LeaderElection          bool
	LeaderElectionNamespace string
	LeaderElectionID        string
	// LeaseDuration, RenewDeadline and RetryPeriod tune leader election.
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
	// AllowedTokenHosts are the only hosts (host or host:port) a client secret or
	// refresh token is ever sent to.
	AllowedTokenHosts []string
	// WatchNamespaces limits the operator to these namespaces; empty means all.
	WatchNamespaces []string
	// ShardSelector limits the operator to the CDCredentials and CDUserGrants whose
	// labels match it, so several managers (each with its own LeaderElectionID) split
	// the CRs. A grant's CDCredential must carry its shard's label too.
	ShardSelector           labels.Selector
	MaxConcurrentReconciles int
	TokenRequestsPerSecond  float64
	// TokenRequestsPerNamespacePerSecond caps each namespace's part of the token requests
	// (tokenclient.Share), which is otherwise an equal part of TokenRequestsPerSecond
	// among the namespaces asking (all of it while one asks): 0 is no cap, a negative
	// value no split at all (one queue for every CR, as before the split). One
	// namespace's CRs can then never take the manager-wide rate and leave the other
	// namespaces' renewals waiting.
	TokenRequestsPerNamespacePerSecond float64
	TokenRequestTimeout                time.Duration
	// TokenHostCAFile is a PEM bundle whose certificates token hosts' certificates may
	// also chain to (a private identity server's CA), besides the public roots. It is
	// re-read when it changes (within tokenclient.CAFileCheckInterval), so a rotated CA
	// needs no restart; a file that turns unusable keeps the certificates it last held.
	TokenHostCAFile         string
	GracefulShutdownTimeout time.Duration

	// KeySecret is the Secret holding the operator's key, which signs authorization
	// state and keys the client-secret hashes in status. All replicas share it; it is
	// created on first start. Its namespace is the operator's own.
	KeySecret types.NamespacedName
	// Key replaces the key from KeySecret (tests).
	Key []byte

	// CallbackBindAddress turns the onboarding callback server on (empty: off).
	CallbackBindAddress string
	// CallbackURL is the callback's external URL, the redirect URI registered at the
	// identity server (a CDCredential's redirectURL, when set, must point at it too).
	// The callback is served on its path, and on /callback for a proxy that strips a
	// prefix.
	CallbackURL string
	// CallbackCertDir holds tls.crt and tls.key to serve the callback over TLS;
	// empty serves plain HTTP (behind an Ingress that terminates TLS).
	CallbackCertDir string
	// AuthorizationStateTTL is how long an authorization link is valid.
	AuthorizationStateTTL time.Duration

	// PersistTimeout and HolderTimeout tune rotation safety (see
	// controllers.CDUserGrantReconciler).
	PersistTimeout time.Duration
	HolderTimeout  time.Duration

	// Clock and Tokens replace the real ones in tests; NewClient, when set, builds the
	// manager's client (tests inject API-server failures with interceptor.Funcs).
	Clock     clock.Clock
	Tokens    tokenclient.Issuer
	NewClient client.NewClientFunc
	// SeveralPerProcess lets tests run more than one manager in one process (controller
	// names are otherwise unique per process, for their metrics).
	SeveralPerProcess bool
}

// ShutdownDrain bounds the storing of held refresh tokens after SIGTERM: the chart's
// terminationGracePeriodSeconds (40 s) minus --graceful-shutdown-timeout (25 s), less a
// margin. The chart refuses values that leave less than this after the graceful shutdown
// (its cdcreds.gracefulShutdownTimeout), and test/install checks every shipped manifest. After a lost leader election there is no such limit, and the drain may take
// until another process could take the in-flight marks over (--in-flight-timeout).
const ShutdownDrain = 10 * time.Second

// KeySecretName is the default name of the operator's key Secret.
const KeySecretName = "cd-credentials-operator-key"

// Defaults are the values zero Options fields take; cmd/manager shows them as its flags'
// defaults, so they are written once.
var Defaults = Options{
	MetricsBindAddress:     ":8443",
	HealthProbeBindAddress: ":8081",
	LeaderElectionID:       "cd-credentials-operator.credops.io",
	LeaseDuration:          15 * time.Second,
	RenewDeadline:          10 * time.Second,
	RetryPeriod:            2 * time.Second,
	AllowedTokenHosts:      []string{"id.centraldispatch.com"},
	// 16: at 4 a manager with 1,000 grants on 30-second tokens fell behind on a busy
	// machine (tokens expired, a cold start took 46 s); 64 started no faster than 16,
	// the API server being the limit (make bench).
	MaxConcurrentReconciles: 16,
	KubeAPIQPS:              1000,
	KubeAPIBurst:            2000,
	TokenRequestsPerSecond:  20,
	TokenRequestTimeout:     20 * time.Second,
	GracefulShutdownTimeout: 25 * time.Second,
	AuthorizationStateTTL:   onboarding.DefaultStateTTL,
	PersistTimeout:          time.Minute,
	HolderTimeout:           2 * time.Minute,
}

// Scheme holds the Kubernetes types and this operator's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(cdv1.AddToScheme(s))
	return s
}

// Operator is a manager with the operator's controllers, ready to Start.
type Operator struct {
	ctrl.Manager
	grants        *controllers.CDUserGrantReconciler
	holderTimeout time.Duration
}

// Start runs the manager until ctx is done or leadership is lost, then lets the
// rotations still in flight end and stores the new refresh tokens still held in memory.
// A lost leader election gives in-flight work no grace period at all; without this, a
// rotation whose answer was on its way, or whose new token met an API server outage,
// would lose the customer's session when the process exits. The next leader waits for
// this process's in-flight marks for the holder timeout, which bounds the wait.
func (o *Operator) Start(ctx context.Context) error {
	err := o.Manager.Start(ctx)
	budget := o.holderTimeout
	if ctx.Err() != nil {
		// SIGTERM: the graceful shutdown already gave rotations their time, and the
		// pod's grace period is nearly spent.
		budget = min(budget, ShutdownDrain)
	}
	drain, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	if lost := o.grants.Drain(drain); lost > 0 {
		ctrl.Log.WithName("setup").Error(nil, "New refresh tokens could not be stored before exiting; those customers must log in again", "count", lost)
	}
	return err
}

// New builds the operator. Call Start on it.
func New(ctx context.Context, cfg *rest.Config, opts Options) (*Operator, error) {
	opts = withDefaults(opts)
	if err := checkTimings(opts); err != nil {
		return nil, err
	}
	// Flag errors, said before anything talks to the cluster.
	switch {
	case opts.CallbackBindAddress != "":
		if _, err := callbackPath(opts.CallbackURL); err != nil {
			return nil, err
		}
	case opts.CallbackURL != "":
		// Half the callback's flags would start a manager that offers no login link
		// while the platform team believes it does.
		return nil, fmt.Errorf("--callback-url %q needs --callback-bind-address: without it no callback server runs and no grant is offered a login link", opts.CallbackURL)
	}
	if opts.Tokens == nil {
		tokens, err := TokenClient(opts)
		if err != nil {
			return nil, err
		}
		opts.Tokens = tokens
	}
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = opts.KubeAPIQPS, opts.KubeAPIBurst
	cfg.DisableCompression = !opts.KubeAPICompression
	if cfg.UserAgent == "" {
		// The API server names an update's or a patch's field manager after the user
		// agent's first word, and audit logs show the agent: both say who wrote, where
		// client-go's default says the binary's name ("manager").
		cfg.UserAgent = userAgent()
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        Scheme(),
		Metrics:                       metricsServerOptions(opts),
		HealthProbeBindAddress:        opts.HealthProbeBindAddress,
		PprofBindAddress:              opts.PprofBindAddress,
		LeaderElection:                opts.LeaderElection,
		LeaderElectionID:              opts.LeaderElectionID,
		LeaderElectionNamespace:       opts.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &opts.LeaseDuration,
		RenewDeadline:                 &opts.RenewDeadline,
		RetryPeriod:                   &opts.RetryPeriod,
		GracefulShutdownTimeout:       &opts.GracefulShutdownTimeout,
		Cache:                         cacheOptions(opts.WatchNamespaces, opts.ShardSelector),
		NewClient:                     opts.NewClient,
		MapperProvider:                rememberingMapper,
		Controller:                    config.Controller{SkipNameValidation: &opts.SeveralPerProcess},
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	// Liveness stays a ping: a replica whose cache cannot sync (the API server away) is
	// not helped by a restart.
	if err := mgr.AddReadyzCheck("cache-synced", cacheSynced(mgr.GetCache())); err != nil {
		return nil, err
	}
	key := opts.Key
	if key == nil {
		if key, err = loadOrCreateKey(ctx, cfg, opts.KeySecret); err != nil {
			return nil, err
		}
		if err := keepKey(mgr, opts.KeySecret, key, opts.Clock); err != nil {
			return nil, err
		}
	}
	grants, err := setupControllers(ctx, mgr, opts, key)
	if err != nil {
		return nil, err
	}
	if err := publishCRMetrics(mgr, grants.LeftShard); err != nil {
		return nil, err
	}
	return &Operator{Manager: mgr, grants: grants, holderTimeout: opts.HolderTimeout}, nil
}

// userAgent is the manager's user agent towards the API server: the operator's name (the
// output Secrets' field manager), its version and platform.
func userAgent() string {
	v := version.Get()
	return fmt.Sprintf("%s/%s (%s)", secrets.FieldOwner, v.Version, v.Platform)
}

// leaseName is the default leader election Lease: Defaults.LeaderElectionID, or for a
// shard one of its own, named after its selector. Shards left on one Lease would elect
// one leader among them, and the other shards' CRs would get no token, with nothing
// saying why.
func leaseName(shard labels.Selector) string {
	if shard == nil || shard.Empty() {
		return Defaults.LeaderElectionID
	}
	sum := sha256.Sum256([]byte(shard.String()))
	return "shard-" + hex.EncodeToString(sum[:5]) + "." + Defaults.LeaderElectionID
}

// checkTimings refuses durations no process can run safely with, naming the flags.
func checkTimings(opts Options) error {
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"--leader-election-lease-duration", opts.LeaseDuration}, {"--leader-election-renew-deadline", opts.RenewDeadline},
		{"--leader-election-retry-period", opts.RetryPeriod}, {"--token-request-timeout", opts.TokenRequestTimeout},
		{"--graceful-shutdown-timeout", opts.GracefulShutdownTimeout}, {"--authorization-link-ttl", opts.AuthorizationStateTTL},
		{"--in-flight-timeout", opts.HolderTimeout},
	} {
		if d.v < 0 {
			return fmt.Errorf("%s %s is negative", d.flag, d.v)
		}
	}
	if opts.AuthorizationStateTTL < onboarding.MinStateTTL {
		return fmt.Errorf("--authorization-link-ttl %s is shorter than %s: a grant's link is replaced once it has a minute left, so a shorter one would be replaced on every pass, a status write a second for every grant waiting for its customer", opts.AuthorizationStateTTL, onboarding.MinStateTTL)
	}
	// A new leader takes a mark for a dead process's once it is HolderTimeout old (and
	// HolderTimeout after it won). The old leader may have sent that token just before
	// stepping down, and its request may take TokenRequestTimeout: a shorter holder
	// timeout lets the new leader send the same token while the first request is out.
	if opts.LeaderElection && opts.HolderTimeout <= opts.TokenRequestTimeout {
		return fmt.Errorf("--in-flight-timeout %s must be longer than --token-request-timeout %s: a new leader could send a refresh token the old one's request is still spending", opts.HolderTimeout, opts.TokenRequestTimeout)
	}
	return nil
}

func withDefaults(opts Options) Options {
	d := Defaults
	set := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	for _, p := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&opts.LeaseDuration, d.LeaseDuration}, {&opts.RenewDeadline, d.RenewDeadline}, {&opts.RetryPeriod, d.RetryPeriod},
		{&opts.TokenRequestTimeout, d.TokenRequestTimeout}, {&opts.GracefulShutdownTimeout, d.GracefulShutdownTimeout},
		{&opts.AuthorizationStateTTL, d.AuthorizationStateTTL}, {&opts.PersistTimeout, d.PersistTimeout}, {&opts.HolderTimeout, d.HolderTimeout},
	} {
		set(p.v, p.def)
	}
	if opts.LeaderElectionID == "" {
		opts.LeaderElectionID = leaseName(opts.ShardSelector)
	}
	if len(opts.AllowedTokenHosts) == 0 {
		opts.AllowedTokenHosts = d.AllowedTokenHosts
	}
	if opts.MaxConcurrentReconciles == 0 {
		opts.MaxConcurrentReconciles = d.MaxConcurrentReconciles
	}
	if opts.KubeAPIQPS == 0 {
		opts.KubeAPIQPS = d.KubeAPIQPS
	}
	if opts.KubeAPIBurst == 0 {
		opts.KubeAPIBurst = d.KubeAPIBurst
	}
	if opts.KeySecret.Name == "" {
		opts.KeySecret.Name = KeySecretName
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	return opts
}

// namespaceShare splits the token requests among the namespaces asking
// (Options.TokenRequestsPerNamespacePerSecond); nil when nothing is split.
func namespaceShare(opts Options) *tokenclient.Share {
	if opts.TokenRequestsPerNamespacePerSecond < 0 {
		return nil
	}
	return tokenclient.NewShare(opts.TokenRequestsPerSecond, opts.TokenRequestsPerNamespacePerSecond)
}

// TokenClient is the token client the manager sends token, revocation and
// authorization-code requests with: trusting the public roots, and the certificates of
// TokenHostCAFile when set, re-read when the file changes (tokenclient.CAFileTransport).
func TokenClient(opts Options) (*tokenclient.Client, error) {
	var transport http.RoundTripper
	if opts.TokenHostCAFile != "" {
		clk := opts.Clock
		if clk == nil {
			clk = clock.RealClock{}
		}
		var err error
		transport, err = tokenclient.NewCAFileTransport(opts.TokenHostCAFile, clk, ctrl.Log.WithName("token-host-ca"))
		if err != nil {
			return nil, fmt.Errorf("--token-host-ca-file: %w", err)
		}
	}
	return tokenclient.New(tokenclient.Options{
		AllowedHosts:      opts.AllowedTokenHosts,
		Timeout:           opts.TokenRequestTimeout,
		RequestsPerSecond: opts.TokenRequestsPerSecond,
		Burst:             max(1, int(opts.TokenRequestsPerSecond)),
		Transport:         transport,
	}), nil
}

// cacheOptions keep only opted-in and operator-written Secrets in memory (the ones
// carrying cd.credops.io/secret-type with one of its three values), so memory does not
// grow with unrelated Secrets. A Secret labelled with another value is none the operator
// reads from the cache (secrets.Readers.Get judges it by its metadata, read around the
// cache), and whoever may create Secrets could otherwise fill the cache with them; of
// those it does keep, the data is bounded by secrets.MaxData and the rest by
// metabound.Max (trimForCache).
func cacheOptions(namespaces []string, shard labels.Selector) cache.Options {
	optedIn, err := labels.NewRequirement(cdv1.SecretTypeLabel, selection.In, []string{cdv1.SecretTypeClient, cdv1.SecretTypeRefreshToken, cdv1.SecretTypeAccessToken})
	utilruntime.Must(err)
	o := cache.Options{
		DefaultTransform: trimForCache,
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Label: labels.NewSelector().Add(*optedIn)},
		},
	}
	if shard != nil && !shard.Empty() {
		o.ByObject[&cdv1.CDCredential{}] = cache.ByObject{Label: shard}
		o.ByObject[&cdv1.CDUserGrant{}] = cache.ByObject{Label: shard}
	}
	if len(namespaces) > 0 {
		o.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			o.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return o
}

// lastAppliedAnnotation is where client-side `kubectl apply` keeps a second copy of the
// whole object.
const lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

// trimForCache drops from every cached object what the controllers never read, before
// it is stored: memory per grant is mostly cached objects. managedFields, server-side
// apply's bookkeeping (the largest part of an applied output Secret), goes from all of
// them; an Update of a cached Secret then sends none, which the API server reads as
// "unchanged". kubectl's last-applied-configuration goes from the CRs only: they are
// written with patches computed against the cached copy, so what is dropped is never
// written back, whereas Secrets are updated whole and keep every annotation. A CR over
// metabound.Max is kept as a stub, on which the controllers do nothing. Output
// Secrets, which the operator only ever writes from a token response, leave their data
// out once judged consistent (secrets.TrimForCache); any Secret over secrets.MaxData
// leaves its data out, and any over metabound.Max is kept as a stub, both refused
// when read. What is kept shares the strings that repeat across objects (interner).
func trimForCache(obj any) (any, error) {
	o, ok := obj.(metav1.Object)
	if !ok {
		return obj, nil
	}
	if o.GetManagedFields() != nil {
		o.SetManagedFields(nil)
	}
	switch obj := obj.(type) {
	case *cdv1.CDUserGrant, *cdv1.CDCredential:
		if _, ok := o.GetAnnotations()[lastAppliedAnnotation]; ok {
			delete(o.GetAnnotations(), lastAppliedAnnotation)
		}
		metabound.Cut(o) // the controllers stop on a stub (MetadataTooLarge)
	case *corev1.Secret:
		secrets.TrimForCache(obj)
	}
	strs.internObject(o)
	return obj, nil
}

func setupControllers(ctx context.Context, mgr ctrl.Manager, opts Options, key []byte) (*controllers.CDUserGrantReconciler, error) {
	copts := controllers.Options{MaxConcurrentReconciles: opts.MaxConcurrentReconciles}
	left := &controllers.LeftShard{}
	share := namespaceShare(opts)
	cred := &controllers.CDCredentialReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Clock:     opts.Clock,
		Tokens:    opts.Tokens,
		Share:     share,
		Recorder:  mgr.GetEventRecorder("cdcredential-controller"),
		Key:       key,
		Shard:     opts.ShardSelector,
		LeftShard: left,
	}
	if err := cred.SetupWithManager(ctx, mgr, copts); err != nil {
		return nil, fmt.Errorf("setting up the CDCredential controller: %w", err)
	}
	authorizer, err := setupCallback(mgr, opts, key)
	if err != nil {
		return nil, err
	}
	revoker, _ := opts.Tokens.(tokenclient.Revoker)
	grant := &controllers.CDUserGrantReconciler{
		Authorizer:     authorizer,
		Client:         mgr.GetClient(),
		APIReader:      mgr.GetAPIReader(),
		Clock:          opts.Clock,
		Tokens:         opts.Tokens,
		Share:          share,
		Revoker:        revoker,
		Recorder:       mgr.GetEventRecorder("cdusergrant-controller"),
		PersistTimeout: opts.PersistTimeout,
		HolderTimeout:  opts.HolderTimeout,
		Shard:          opts.ShardSelector,
		LeftShard:      left,
	}
	if err := grant.SetupWithManager(ctx, mgr, copts); err != nil {
		return nil, fmt.Errorf("setting up the CDUserGrant controller: %w", err)
	}
	// A runnable that needs the leader election starts when it is won.
	elected := manager.RunnableFunc(func(ctx context.Context) error {
		now := opts.Clock.Now()
		cred.Elected(now)
		grant.Elected(now)
		<-ctx.Done()
		return nil
	})
	if err := mgr.Add(elected); err != nil {
		return nil, err
	}
	return grant, nil
}
