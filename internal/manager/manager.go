// Package manager wires the operator: the scheme, the cache (which Secrets it holds),
// the token client and the controllers. cmd/manager parses flags into Options and the
// integration tests build the very same manager, so what is tested is what runs.
package manager

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
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

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/controllers"
	"github.com/credops/cd-credentials-operator/internal/onboarding"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// Options configure one manager process.
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
	MetricsHTTP2            bool
	HealthProbeBindAddress  string
	LeaderElection          bool
	LeaderElectionNamespace string
	LeaderElectionID        string
	// LeaseDuration, RenewDeadline and RetryPeriod tune leader election; zero means
	// controller-runtime's defaults (15 s, 10 s, 2 s).
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
	TokenRequestTimeout     time.Duration
	GracefulShutdownTimeout time.Duration

	// CallbackBindAddress turns the onboarding callback server on (empty: off).
	CallbackBindAddress string
	// CallbackURL is the callback's external URL, the redirect URI registered at the
	// identity server (a CDCredential's redirectURL, when set, must point at it too).
	CallbackURL string
	// CallbackCertDir holds tls.crt and tls.key to serve the callback over TLS;
	// empty serves plain HTTP (behind an Ingress that terminates TLS).
	CallbackCertDir string
	// CallbackKeySecret is the Secret holding the state-signing key all replicas share;
	// created on first start.
	CallbackKeySecret types.NamespacedName
	// AuthorizationStateTTL is how long an authorization link is valid; default 15m.
	AuthorizationStateTTL time.Duration

	// PersistTimeout and InFlightTimeout tune rotation safety (see
	// controllers.CDUserGrantReconciler); zero means the defaults.
	PersistTimeout  time.Duration
	InFlightTimeout time.Duration

	// Clock and Tokens replace the real ones in tests; NewClient, when set, wraps the
	// manager's client (tests inject API-server failures with it).
	Clock     clock.Clock
	Tokens    tokenclient.Issuer
	NewClient client.NewClientFunc
	// SeveralPerProcess lets tests run more than one manager in one process (controller
	// names are otherwise unique per process, for their metrics).
	SeveralPerProcess bool
}

// Scheme holds the Kubernetes types and this operator's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(cdv1.AddToScheme(s))
	return s
}

// New builds a manager with both controllers registered. Call Start on it.
func New(ctx context.Context, cfg *rest.Config, opts Options) (ctrl.Manager, error) {
	opts = withDefaults(opts)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        Scheme(),
		Metrics:                       metricsServerOptions(opts),
		HealthProbeBindAddress:        opts.HealthProbeBindAddress,
		LeaderElection:                opts.LeaderElection,
		LeaderElectionID:              opts.LeaderElectionID,
		LeaderElectionNamespace:       opts.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 durationPtr(opts.LeaseDuration),
		RenewDeadline:                 durationPtr(opts.RenewDeadline),
		RetryPeriod:                   durationPtr(opts.RetryPeriod),
		GracefulShutdownTimeout:       &opts.GracefulShutdownTimeout,
		Cache:                         cacheOptions(opts.WatchNamespaces, opts.ShardSelector),
		NewClient:                     opts.NewClient,
		Controller:                    config.Controller{SkipNameValidation: &opts.SeveralPerProcess},
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return nil, err
	}
	if err := setupControllers(ctx, mgr, opts); err != nil {
		return nil, err
	}
	return mgr, nil
}

// durationPtr is nil for zero, so controller-runtime applies its default.
func durationPtr(d time.Duration) *time.Duration {
	if d == 0 {
		return nil
	}
	return &d
}

func withDefaults(opts Options) Options {
	if opts.LeaderElectionID == "" {
		opts.LeaderElectionID = "cd-credentials-operator.credops.io"
	}
	if len(opts.AllowedTokenHosts) == 0 {
		opts.AllowedTokenHosts = []string{"id.centraldispatch.com"}
	}
	if opts.MaxConcurrentReconciles == 0 {
		opts.MaxConcurrentReconciles = 4
	}
	if opts.GracefulShutdownTimeout == 0 {
		opts.GracefulShutdownTimeout = 25 * time.Second
	}
	if opts.TokenRequestTimeout == 0 {
		opts.TokenRequestTimeout = 20 * time.Second
	}
	if opts.CallbackKeySecret.Name == "" {
		opts.CallbackKeySecret.Name = "cd-credentials-callback-key"
	}
	if opts.CallbackKeySecret.Namespace == "" {
		opts.CallbackKeySecret.Namespace = "cd-credentials-operator"
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Tokens == nil {
		opts.Tokens = tokenclient.New(tokenclient.Options{
			AllowedHosts:      opts.AllowedTokenHosts,
			Timeout:           opts.TokenRequestTimeout,
			RequestsPerSecond: opts.TokenRequestsPerSecond,
			Burst:             max(1, int(opts.TokenRequestsPerSecond)),
		})
	}
	return opts
}

// cacheOptions keep only the Secrets the operator labels in memory (its outputs and the
// Secrets CRs reference), so memory does not grow with unrelated Secrets.
func cacheOptions(namespaces []string, shard labels.Selector) cache.Options {
	o := cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Label: labels.SelectorFromSet(labels.Set{cdv1.WatchLabel: "true"})},
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

// setupCallback starts the onboarding callback server when it is configured, and
// returns the Authorizer that puts authorization URLs in grant status.
func setupCallback(ctx context.Context, mgr ctrl.Manager, opts Options) (controllers.Authorizer, error) {
	if opts.CallbackBindAddress == "" {
		return nil, nil
	}
	if opts.CallbackURL == "" {
		return nil, fmt.Errorf("--callback-url is required with --callback-bind-address")
	}
	signer, err := loadOrCreateSigner(ctx, mgr.GetConfig(), opts.CallbackKeySecret)
	if err != nil {
		return nil, err
	}
	cb := &onboarding.Callback{
		Client:      mgr.GetClient(),
		APIReader:   mgr.GetAPIReader(),
		Signer:      signer,
		Tokens:      controllers.Instrumented(opts.Tokens, "CDUserGrant"),
		Recorder:    mgr.GetEventRecorder("cdusergrant-callback"),
		Clock:       opts.Clock,
		CallbackURL: opts.CallbackURL,
	}
	if err := mgr.Add(&callbackServer{addr: opts.CallbackBindAddress, certDir: opts.CallbackCertDir, handler: cb}); err != nil {
		return nil, err
	}
	return &onboarding.Authorizer{Signer: signer, CallbackURL: opts.CallbackURL, StateTTL: opts.AuthorizationStateTTL}, nil
}

func setupControllers(ctx context.Context, mgr ctrl.Manager, opts Options) error {
	creations, err := controllers.NewSecretCreations(mgr, opts.WatchNamespaces)
	if err != nil {
		return err
	}
	if err := mgr.Add(creations); err != nil {
		return err
	}
	copts := controllers.Options{MaxConcurrentReconciles: opts.MaxConcurrentReconciles, SecretCreations: creations}
	cred := &controllers.CDCredentialReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Clock:     opts.Clock,
		Tokens:    opts.Tokens,
		Recorder:  mgr.GetEventRecorder("cdcredential-controller"),
	}
	if err := cred.SetupWithManager(ctx, mgr, copts); err != nil {
		return fmt.Errorf("setting up the CDCredential controller: %w", err)
	}
	authorizer, err := setupCallback(ctx, mgr, opts)
	if err != nil {
		return err
	}
	grant := &controllers.CDUserGrantReconciler{
		Authorizer:      authorizer,
		Client:          mgr.GetClient(),
		APIReader:       mgr.GetAPIReader(),
		Clock:           opts.Clock,
		Tokens:          opts.Tokens,
		Recorder:        mgr.GetEventRecorder("cdusergrant-controller"),
		PersistTimeout:  opts.PersistTimeout,
		InFlightTimeout: opts.InFlightTimeout,
	}
	if err := grant.SetupWithManager(ctx, mgr, copts); err != nil {
		return fmt.Errorf("setting up the CDUserGrant controller: %w", err)
	}
	return nil
}
