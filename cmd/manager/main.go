// Command manager runs the cd-credentials-operator controllers.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"strings"

	// CA roots compiled in, used only when the system has none (the image is built from
	// scratch and ships no CA bundle); SSL_CERT_FILE and SSL_CERT_DIR replace them, while
	// --token-host-ca-file adds to them.
	_ "golang.org/x/crypto/x509roots/fallback"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/credops/cd-credentials-operator/internal/manager"
	"github.com/credops/cd-credentials-operator/internal/memlimit"
	"github.com/credops/cd-credentials-operator/internal/version"
)

func main() {
	d := manager.Defaults
	var opts manager.Options
	var allowedHosts, watchNamespaces string
	flag.StringVar(&opts.MetricsBindAddress, "metrics-bind-address", d.MetricsBindAddress, "Address the metrics endpoint binds to; \"0\" disables it.")
	metricsSecure := flag.Bool("metrics-secure", true, "Serve metrics over HTTPS to authenticated and authorized scrapers only; false serves plain HTTP to anyone (local development only).")
	flag.StringVar(&opts.MetricsCertDir, "metrics-cert-dir", "", "Folder with tls.crt and tls.key for the metrics endpoint (reloaded on change); empty uses a self-signed certificate.")
	flag.BoolVar(&opts.MetricsHTTP2, "enable-http2", false, "Allow HTTP/2 on the metrics endpoint (off because of the HTTP/2 Rapid Reset advisories).")
	flag.StringVar(&opts.HealthProbeBindAddress, "health-probe-bind-address", d.HealthProbeBindAddress, "Address the health and readiness probes bind to.")
	flag.StringVar(&opts.PprofBindAddress, "pprof-bind-address", "", "Address net/http/pprof (CPU and heap profiles) binds to, e.g. 127.0.0.1:6060; empty serves nothing. Profiles show code, not Secret values, but keep it off a public network.")
	kubeAPIQPS := flag.Float64("kube-api-qps", float64(d.KubeAPIQPS), "Most requests per second to the API server (client-side limit); negative leaves it to the server's API Priority and Fairness.")
	flag.IntVar(&opts.KubeAPIBurst, "kube-api-burst", d.KubeAPIBurst, "Burst of requests to the API server above --kube-api-qps.")
	flag.BoolVar(&opts.KubeAPICompression, "kube-api-compression", d.KubeAPICompression, "Ask the API server for gzipped answers, watch events included: less bandwidth, more CPU on both ends. Off suits a manager in the cluster it manages.")
	flag.BoolVar(&opts.LeaderElection, "leader-elect", false, "Elect a leader so only one replica rotates refresh tokens. Turn on whenever more than one replica may run.")
	flag.StringVar(&opts.LeaderElectionID, "leader-election-id", "", "Name of the leader election Lease (default "+d.LeaderElectionID+", or with --shard-label-selector one named after the selector, so each shard elects its own leader).")
	flag.DurationVar(&opts.LeaseDuration, "leader-election-lease-duration", d.LeaseDuration, "How long a follower waits before taking over from a leader that stopped renewing.")
	flag.DurationVar(&opts.RenewDeadline, "leader-election-renew-deadline", d.RenewDeadline, "How long the leader keeps trying to renew before it steps down.")
	flag.DurationVar(&opts.RetryPeriod, "leader-election-retry-period", d.RetryPeriod, "How often leader election clients retry.")
	flag.StringVar(&opts.LeaderElectionNamespace, "leader-election-namespace", os.Getenv("POD_NAMESPACE"), "Namespace of the leader election Lease; default: the one the manager runs in ($POD_NAMESPACE, else the in-cluster service account's).")
	shard := flag.String("shard-label-selector", "", "Only reconcile CDCredentials and CDUserGrants matching this label selector (e.g. shard=a), to split CRs across managers.")
	flag.StringVar(&allowedHosts, "allowed-token-hosts", strings.Join(d.AllowedTokenHosts, ","), "Comma-separated host or host:port list of token endpoints the manager may send client secrets and refresh tokens to.")
	flag.StringVar(&watchNamespaces, "watch-namespaces", "", "Comma-separated namespaces to watch; empty watches all.")
	flag.IntVar(&opts.MaxConcurrentReconciles, "max-concurrent-reconciles", d.MaxConcurrentReconciles, "Reconciles each controller runs in parallel.")
	flag.Float64Var(&opts.TokenRequestsPerSecond, "token-requests-per-second", d.TokenRequestsPerSecond, "Most token requests per second the manager sends, across all CRs; 0 means no limit.")
	flag.Float64Var(&opts.TokenRequestsPerNamespacePerSecond, "token-requests-per-namespace-per-second", 0, "The token requests are split equally among the namespaces asking for them (all of --token-requests-per-second while one asks), so that one namespace cannot hold up the others' renewals; this caps each namespace's part too. 0 means no cap; a negative value turns the split off (one queue for every CR).")
	flag.StringVar(&opts.TokenHostCAFile, "token-host-ca-file", "", "PEM file of CA certificates (e.g. a private identity server's CA) trusted for token hosts besides the public roots; SSL_CERT_FILE would replace those. Re-read within 30s when it changes; a file that turns unusable keeps the certificates it last held.")
	flag.DurationVar(&opts.TokenRequestTimeout, "token-request-timeout", d.TokenRequestTimeout, "Timeout of one token request.")
	flag.DurationVar(&opts.GracefulShutdownTimeout, "graceful-shutdown-timeout", d.GracefulShutdownTimeout, "How long in-flight rotations may take to finish and persist after SIGTERM.")
	flag.DurationVar(&opts.HolderTimeout, "in-flight-timeout", d.HolderTimeout, "How old another process's in-flight mark must be before it is taken for a dead process's; longer than a token request plus the time a process may still spend storing its result.")
	flag.StringVar(&opts.CallbackBindAddress, "callback-bind-address", "", "Address the customer-authorization callback server binds to, e.g. :9443; empty turns it off.")
	flag.StringVar(&opts.CallbackURL, "callback-url", "", "External URL of the callback, e.g. https://cd-callback.example.com/callback: the redirect URI registered at the identity server. The callback is served on its path (and on /callback, for a proxy that strips a prefix).")
	flag.StringVar(&opts.CallbackCertDir, "callback-cert-dir", "", "Folder with tls.crt and tls.key to serve the callback over TLS; empty serves HTTP behind a TLS-terminating Ingress.")
	keySecret := flag.String("key-secret", os.Getenv("POD_NAMESPACE")+"/"+manager.KeySecretName, "namespace/name of the Secret holding the operator's key (signs authorization state, keys client-secret hashes); created on first start, shared by all replicas, and put back when deleted; the manager exits when it holds another key. Default: $POD_NAMESPACE/"+manager.KeySecretName+".")
	flag.DurationVar(&opts.AuthorizationStateTTL, "authorization-link-ttl", d.AuthorizationStateTTL, "How long an authorization link stays valid; at least 2m.")
	showVersion := flag.Bool("version", false, "Print the version and exit.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *showVersion {
		fmt.Println("manager", version.Get())
		return
	}
	opts.MetricsPlainHTTP = !*metricsSecure
	opts.KubeAPIQPS = float32(*kubeAPIQPS)
	opts.AllowedTokenHosts = splitList(allowedHosts)
	opts.WatchNamespaces = splitList(watchNamespaces)
	sel, err := labels.Parse(*shard)
	if err != nil {
		fmt.Fprintf(os.Stderr, "--shard-label-selector: %v\n", err)
		os.Exit(2)
	}
	opts.ShardSelector = sel
	ns, name, _ := strings.Cut(*keySecret, "/")
	opts.KeySecret = types.NamespacedName{Namespace: ns, Name: name}

	// client-go logs request and response bodies, Secrets included, at verbosity 8 and
	// above through the logger in the context: no verbosity may reach that far.
	ctrl.SetLogger(manager.Logger(zapOpts))
	log := ctrl.Log.WithName("setup")
	mem, err := memlimit.Apply(os.Getenv, debug.SetMemoryLimit, memlimit.DefaultRatio)
	if err != nil {
		log.Error(err, "Unable to set the Go memory limit")
		os.Exit(2)
	}
	log.Info("Go memory limit", "bytes", mem.Limit, "source", mem.Source)
	ctx := ctrl.SetupSignalHandler()
	op, err := manager.New(ctx, ctrl.GetConfigOrDie(), opts)
	if err != nil {
		log.Error(err, "Unable to set up the manager")
		os.Exit(1)
	}
	log.Info("Starting manager", "version", version.Get().Version, "allowedTokenHosts", opts.AllowedTokenHosts, "leaderElection", opts.LeaderElection)
	if err := op.Start(ctx); err != nil {
		log.Error(err, "Manager exited with an error")
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
