// Package integration runs the real manager against a real kube-apiserver and etcd
// (envtest) and the sandbox identity server. It is where CEL rules, RBAC-relevant
// behaviour, watches, owner references, conflicts and crash safety are proven.
package integration

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/credops/cd-credentials-operator/internal/manager"
	"github.com/credops/cd-credentials-operator/test/support"
)

var (
	cfg *rest.Config
	k8s client.Client
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		// Fail, never skip: CI must not pass without the control plane.
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run `make test`, which builds kube-apiserver and etcd into ./bin")
		return 1
	}
	// Every log line at every verbosity is kept, so a test can prove none carries a secret.
	var logOut io.Writer = &logSink
	if os.Getenv("TEST_VERBOSE_LOGS") != "" {
		logOut = io.MultiWriter(&logSink, os.Stderr)
	}
	// The operator's own logger at the highest verbosity --zap-log-level accepts (127).
	ctrl.SetLogger(manager.Logger(zap.Options{Development: true, DestWriter: logOut, Level: zapcore.Level(-127)}))
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	if cfg, err = env.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	if k8s, err = client.New(cfg, client.Options{Scheme: manager.Scheme()}); err != nil {
		fmt.Fprintln(os.Stderr, "creating client:", err)
		return 1
	}
	return m.Run()
}

// newNamespace creates a namespace of its own for one test.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "it-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	return ns.Name
}

// The shared helpers, under the names these tests use.
type identityServer = support.IdentityServer

var (
	startSandbox = support.StartSandbox
	eventually   = support.Eventually
	freeAddr     = support.FreeAddr
)

// testKey is the operator key of the managers these tests run (Options.Key), so no
// key Secret is needed unless a test is about it.
var testKey = []byte("integration-test-key-0123456789abcdef")

// runningManager is a manager started by a test.
type runningManager = support.RunningManager

// startManager starts the real manager with the suite's operator key unless the test
// gives its own.
func startManager(t *testing.T, opts manager.Options) *runningManager {
	t.Helper()
	return startManagerWith(t, cfg, opts)
}

// startClusterWideManager starts a manager that watches every namespace and returns
// once its caches have synced. Its first list reads every opted-in Secret and CR that the
// suite's earlier tests left in the shared API server (envtest never empties a
// namespace): on a loaded machine under -race that took more than the ten seconds the
// tests give a CR to become Ready, which then measured the start-up, not the operator.
func startClusterWideManager(t *testing.T, opts manager.Options) *runningManager {
	t.Helper()
	m := startManager(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if !m.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("the cluster-wide manager's caches did not sync within 2 minutes")
	}
	return m
}

// startManagerWith starts the real manager on restCfg (a test may wrap its transport),
// with the suite's operator key unless the test gives its own.
func startManagerWith(t *testing.T, restCfg *rest.Config, opts manager.Options) *runningManager {
	t.Helper()
	if opts.Key == nil && opts.KeySecret.Namespace == "" {
		opts.Key = testKey
	}
	return support.StartManager(t, restCfg, opts)
}

type syncBuffer = support.SyncBuffer

var logSink syncBuffer
