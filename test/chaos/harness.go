package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
)

// Namespaces of the suite: the CRs and their Secrets, and the leader-election Lease.
const (
	Namespace      = "chaos"
	LeaseNamespace = "chaos-system"
	credentialName = "login"
)

// Labels the product requires on Secrets it may read (DESIGN §8), and the one today's
// operator caches by.
const (
	secretTypeLabel = "cd.credops.io/secret-type"
	touchedKey      = "chaos.credops.io/touched"
)

// Config is one chaos run.
type Config struct {
	Events int
	Grants int
	Seed   int64
	// TokenTTL is the sandbox's access-token lifetime.
	TokenTTL time.Duration
	// Outage is how long the API server stays down in an outage event.
	Outage time.Duration
	// Lease is the leader-election lease duration; the renew deadline and retry
	// period are derived from it.
	Lease time.Duration
	// TokenTimeout is the manager's --token-request-timeout; slow faults hold past it.
	TokenTimeout time.Duration
	// Grace is how long a steady leader has to put a disturbed grant right.
	Grace time.Duration
	// Settle bounds the wait for every grant to be Ready (or lost) after the last event.
	Settle time.Duration
	// MaxOutages caps the API-server outages in the plan; 0 leaves them to chance.
	MaxOutages int
	// FaultWait is how long an event waits for a token request to take its proxy fault
	// before the run goes on (the fault stays queued).
	FaultWait      time.Duration
	MinGap, MaxGap time.Duration
	// RepoRoot is the module's root; WorkDir receives binaries, logs and kubeconfig.
	RepoRoot, WorkDir string
	Logf              func(format string, args ...any)
}

// InFlightTimeout is the managers' --in-flight-timeout: a dead replica's in-flight mark
// is taken over this long after it was set, or after the taker won the election, so it
// is a token request's timeout and a margin. A live manager stores its answer or gives it
// up before then (its holder deadline), which bounds how long it may hold one unstored.
func (c Config) InFlightTimeout() time.Duration { return 2*c.TokenTimeout + 2*time.Second }

// Harness is one run's moving parts.
type Harness struct {
	cfg      Config
	tl       *Timeline
	cluster  *Cluster
	k8s      client.Client
	cs       kubernetes.Interface
	sandbox  *Sandbox
	proxy    *Proxy
	observer *Observer
	stopObs  context.CancelFunc
	grants   []string
	// fatal ends the run: the API server could not be brought back.
	fatal error

	mu       sync.Mutex
	replicas []*Replica // set once, under mu: the proxy reads it from its own goroutines
	seeds    []Seed
	episodes []Episode
	open     map[string]bool
	reseed   bool
	logins   int
	junk     map[string]bool
	armed    []armedFault
}

func scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = cdv1.AddToScheme(s)
	return s
}

// setUp builds the binaries and starts the control plane, the sandbox, the proxy and
// both manager replicas, with the grants created and seeded.
func (h *Harness) setUp(ctx context.Context) error {
	cfg := h.cfg
	ticker := time.NewTicker(pauseTick)
	go func() {
		defer ticker.Stop()
		watchPauses(ctx, h.tl, ticker.C, func() time.Time { return time.Now().Round(0) })
	}()
	bins := filepath.Join(cfg.WorkDir, "bin")
	managerBin, err := build(cfg.RepoRoot, bins, "./cmd/manager")
	if err != nil {
		return err
	}
	sandboxBin, err := build(cfg.RepoRoot, bins, "./cmd/cd-sandbox")
	if err != nil {
		return err
	}
	if h.cluster, err = StartCluster(cfg.WorkDir, filepath.Join(cfg.RepoRoot, "config", "crd", "bases"), h.tl); err != nil {
		return err
	}
	if h.k8s, err = client.New(h.cluster.Config, client.Options{Scheme: scheme()}); err != nil {
		return err
	}
	if h.cs, err = kubernetes.NewForConfig(h.cluster.Config); err != nil {
		return err
	}
	if h.sandbox, err = StartSandbox(ctx, sandboxBin, cfg.WorkDir, cfg.TokenTTL); err != nil {
		return err
	}
	if h.proxy, err = StartProxy(h.sandbox.URL, func(client, server string) int { return socketOwner(client, server, h.managerPIDs()) }); err != nil {
		return err
	}
	if err := h.createObjects(ctx); err != nil {
		return err
	}
	h.observer = &Observer{}
	h.watchSecrets(ctx)
	go h.watchGrants(ctx)
	return h.startReplicas(managerBin)
}

func (h *Harness) startReplicas(bin string) error {
	lease := h.cfg.Lease
	args := []string{
		"--kubeconfig", h.cluster.Kubeconfig,
		"--leader-elect",
		"--leader-election-namespace", LeaseNamespace,
		"--leader-election-lease-duration", lease.String(),
		"--leader-election-renew-deadline", (lease * 3 / 5).String(),
		"--leader-election-retry-period", (lease / 5).String(),
		"--watch-namespaces", Namespace,
		"--allowed-token-hosts", h.proxy.URL[len("http://"):],
		"--token-request-timeout", h.cfg.TokenTimeout.String(),
		"--metrics-bind-address", "0",
		"--health-probe-bind-address", "0",
		"--key-secret", LeaseNamespace + "/cd-credentials-operator-key",
		"--in-flight-timeout", h.cfg.InFlightTimeout().String(),
	}
	// Both replicas exist before either starts: the proxy asks them who sent a request.
	var replicas []*Replica
	for _, name := range []string{"a", "b"} {
		replicas = append(replicas, &Replica{Name: name, Bin: bin, Args: args, LogDir: h.cfg.WorkDir, Timeline: h.tl})
	}
	h.mu.Lock()
	h.replicas = replicas
	h.mu.Unlock()
	for _, r := range replicas {
		if err := r.Start(); err != nil {
			return err
		}
	}
	return nil
}

// tearDown stops everything that was started.
func (h *Harness) tearDown() {
	for _, r := range h.replicas {
		r.Stop()
	}
	if h.stopObs != nil {
		h.stopObs()
	}
	if h.proxy != nil {
		_ = h.proxy.Close()
	}
	if h.sandbox != nil {
		h.sandbox.Stop()
	}
	if h.cluster != nil {
		_ = h.cluster.Stop()
	}
}

func (h *Harness) managerPIDs() []int {
	h.mu.Lock()
	replicas := h.replicas
	h.mu.Unlock()
	var out []int
	for _, r := range replicas {
		if p, ok := r.Current(); ok {
			out = append(out, p.PID)
		}
	}
	return out
}

// watchSecrets (re)starts the Secret watch. After an API-server outage it is started
// afresh: an informer backs off for up to 30 s before listing again, and the harness
// must see the Secrets as they are.
func (h *Harness) watchSecrets(ctx context.Context) {
	if h.stopObs != nil {
		h.stopObs()
	}
	wctx, cancel := context.WithCancel(ctx)
	h.stopObs = cancel
	h.observer.Watch(wctx, h.cs, Namespace)
}

func (h *Harness) createObjects(ctx context.Context) error {
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: LeaseNamespace}},
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: "login-client", Labels: map[string]string{secretTypeLabel: "client"}},
			StringData: map[string]string{"client_id": clientID, "client_secret": clientSecret},
		},
		&cdv1.CDCredential{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: credentialName}, Spec: cdv1.CDCredentialSpec{
			Flow:             cdv1.FlowAuthorizationCode,
			ClientSecretRef:  cdv1.ClientSecretReference{Name: "login-client"},
			Issuer:           h.proxy.URL,
			ClientAuthMethod: cdv1.ClientSecretPost,
		}},
	}
	for _, o := range objs {
		if err := h.k8s.Create(ctx, o); err != nil {
			return fmt.Errorf("creating %s: %w", o.GetName(), err)
		}
	}
	for i := range h.cfg.Grants {
		name := fmt.Sprintf("g-%03d", i)
		h.grants = append(h.grants, name)
		token, err := h.sandbox.Login(ctx, name)
		if err != nil {
			return err
		}
		h.seeds = append(h.seeds, Seed{Grant: name, At: time.Now(), Token: cdsandbox.TokenHash(token)})
		for _, o := range []client.Object{
			&corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: RefreshSecret(name), Labels: map[string]string{secretTypeLabel: "refresh-token"}},
				StringData: map[string]string{"refresh_token": token},
			},
			&cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name}, Spec: cdv1.CDUserGrantSpec{
				CredentialRef:         cdv1.CredentialReference{Name: credentialName},
				RefreshTokenSecretRef: cdv1.RefreshTokenSecretReference{Name: RefreshSecret(name)},
			}},
		} {
			if err := h.k8s.Create(ctx, o); err != nil {
				return fmt.Errorf("creating %s: %w", o.GetName(), err)
			}
		}
	}
	return nil
}

// waitAllFresh waits until every grant is Ready with an unexpired token from the
// sandbox in its output Secret, or (when lostIsDone) says ReauthorizationRequired.
func (h *Harness) waitAllFresh(ctx context.Context, timeout time.Duration, lostIsDone bool) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		last = h.allFresh(ctx, lostIsDone)
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("%w: %v", err, last)
	}
	return nil
}

func (h *Harness) allFresh(ctx context.Context, lostIsDone bool) error {
	if _, ok := h.tl.leader(time.Now()); !ok {
		return errors.New("no leader")
	}
	if err := h.sandbox.SyncJournal(ctx); err != nil {
		return err
	}
	expiry := map[string]time.Time{}
	for _, e := range h.sandbox.Journal() {
		if e.IssuedAccess != "" {
			expiry[e.IssuedAccess] = e.AccessExpiresAt
		}
	}
	var grants cdv1.CDUserGrantList
	if err := h.k8s.List(ctx, &grants, client.InNamespace(Namespace)); err != nil {
		return err
	}
	var secrets corev1.SecretList
	if err := h.k8s.List(ctx, &secrets, client.InNamespace(Namespace)); err != nil {
		return err
	}
	access := map[string]string{}
	for _, s := range secrets.Items {
		access[s.Name] = cdsandbox.TokenHash(string(s.Data[cdv1.AccessTokenKey]))
	}
	notYet := 0
	for _, g := range grants.Items {
		if lostIsDone && meta.IsStatusConditionTrue(g.Status.Conditions, cdv1.ReauthorizationRequiredCondition) {
			continue
		}
		exp, ok := expiry[access[OutputSecret(g.Name)]]
		if !meta.IsStatusConditionTrue(g.Status.Conditions, cdv1.ReadyCondition) || !ok || !exp.After(time.Now()) {
			notYet++
		}
	}
	if notYet > 0 || len(grants.Items) != len(h.grants) {
		return fmt.Errorf("%d of %d grants not Ready with a fresh token", notYet, len(h.grants))
	}
	return nil
}

// watchGrants notes every time a grant says ReauthorizationRequired and, during the
// chaos, logs the customer in again (as a support desk would) so the grant keeps
// rotating and the run keeps testing it.
func (h *Harness) watchGrants(ctx context.Context) {
	_ = wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		var grants cdv1.CDUserGrantList
		if err := h.k8s.List(ctx, &grants, client.InNamespace(Namespace)); err != nil {
			return false, nil // the API server may be down: try again
		}
		for _, g := range grants.Items {
			h.noteGrant(ctx, g)
		}
		return false, nil
	})
}

func (h *Harness) noteGrant(ctx context.Context, g cdv1.CDUserGrant) {
	c := meta.FindStatusCondition(g.Status.Conditions, cdv1.ReauthorizationRequiredCondition)
	lost := c != nil && c.Status == metav1.ConditionTrue
	h.mu.Lock()
	wasOpen := h.open[g.Name]
	h.open[g.Name] = lost
	if lost && !wasOpen {
		h.episodes = append(h.episodes, Episode{Grant: g.Name, At: time.Now(), Reason: c.Reason})
	}
	reseed := h.reseed && lost && !wasOpen
	h.mu.Unlock()
	if reseed {
		if err := h.logInAgain(ctx, g.Name); err != nil {
			h.tl.note(fmt.Sprintf("logging the customer of %s in again failed: %v", g.Name, err))
		}
	}
}

func (h *Harness) logInAgain(ctx context.Context, grant string) error {
	h.mu.Lock()
	h.logins++
	customer := grant + "-login-" + strconv.Itoa(h.logins)
	h.mu.Unlock()
	token, err := h.sandbox.Login(ctx, customer)
	if err != nil {
		return err
	}
	err = h.updateSecret(ctx, RefreshSecret(grant), func(s *corev1.Secret) {
		if s.Data == nil {
			s.Data = map[string][]byte{}
		}
		s.Data["refresh_token"] = []byte(token)
	})
	if apierrors.IsNotFound(err) {
		// Deleted mid-rotation, and the answer lost too: the login creates it again, as
		// the customer's onboarding would.
		err = h.k8s.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: RefreshSecret(grant), Labels: map[string]string{secretTypeLabel: "refresh-token"}},
			StringData: map[string]string{"refresh_token": token},
		})
	}
	if err != nil {
		return err
	}
	now := time.Now()
	h.mu.Lock()
	h.seeds = append(h.seeds, Seed{Grant: grant, At: now, Token: cdsandbox.TokenHash(token)})
	h.mu.Unlock()
	h.tl.disturbed(grant, "customer logged in again", now)
	return nil
}

func build(root, dir, pkg string) (string, error) {
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return out, nil
}

// loadAverage is the machine's 1-, 5- and 15-minute load, for the report.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil || len(b) < 14 {
		return "unknown"
	}
	return string(b[:14])
}
