package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
	"github.com/credops/cd-credentials-operator/test/support"
)

// TestTwoInstallsOnOneNamespaceSettle: a cluster-wide install and a namespaced install
// (each its own release namespace, so each its own operator key and Lease) that both
// select the same CDCredentials, which they must not. Two CDCredentials of one client
// (two teams' credentials for the same API client) still settle: each install's hash
// write over the other's is not a change of the client secret, so neither re-queues the
// other CDCredential for it. And the overlap is told: an AnotherInstall warning.
func TestTwoInstallsOnOneNamespaceSettle(t *testing.T) {
	ns := newNamespace(t)
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients()})
	create(t, clientSecret(ns, "login-client", loginClientID, loginClientSecret))
	names := []string{"login-a", "login-b"}
	for _, n := range names {
		create(t, credential(ns, n, cdv1.FlowAuthorizationCode, "login-client", idp.URL))
	}
	writes := watchStatusWrites(t, ns)
	// Install 1: cluster-wide (chart default), in this process. Install 2: namespaced
	// (rbac.namespaces), a process of its own with the key Secret of its release.
	startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, Key: []byte("install-one-key-0123456789abcdef-1")})
	startManagerProcess(t, "--watch-namespaces="+ns, "--allowed-token-hosts="+idp.Host, "--key-secret="+ns+"/install-two-key")

	// Both installs have written both CDCredentials: two hashes seen on each.
	hashes := map[string]map[string]bool{}
	for _, n := range names {
		hashes[n] = map[string]bool{}
	}
	bothWrote := func() bool {
		for _, n := range names {
			if len(hashes[n]) < 2 {
				return false
			}
		}
		return true
	}
	for timeout := time.After(30 * time.Second); !bothWrote(); {
		select {
		case w := <-writes:
			if w.hash != "" {
				hashes[w.name][w.hash] = true
			}
		case <-timeout:
			t.Fatalf("both installs did not write both CDCredentials within 30 s: hashes seen %v", hashes)
		}
	}
	// From here on nothing changes but who wrote a hash last.
	const window = 5 * time.Second
	rewrites := map[string]int{}
	end := time.After(window)
	for done := false; !done; {
		select {
		case w := <-writes:
			rewrites[w.name]++
		case <-end:
			done = true
		}
	}
	t.Logf("status rewrites in %s after both installs wrote: %v", window, rewrites)
	if n := rewrites["login-a"] + rewrites["login-b"]; n >= 10 {
		t.Errorf("%d status rewrites (%v) in %s after both installs had written both CDCredentials, want a settled state (fewer than 10)", n, rewrites, window)
	}
	eventually(t, 10*time.Second, "an AnotherInstall warning", func() error {
		evs := &eventsv1.EventList{}
		if err := k8s.List(context.Background(), evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == cdv1.AnotherInstallReason && e.Type == "Warning" && e.Regarding.Kind == "CDCredential" {
				return nil
			}
		}
		return fmt.Errorf("no %s event in %s", cdv1.AnotherInstallReason, ns)
	})
}

// statusWrite is one update of a CDCredential seen by watchStatusWrites.
type statusWrite struct{ name, hash string }

// watchStatusWrites reports every update of the CDCredentials in ns from now on.
func watchStatusWrites(t *testing.T, ns string) <-chan statusWrite {
	t.Helper()
	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: k8s.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(context.Background(), &cdv1.CDCredentialList{}, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	out := make(chan statusWrite, 10000)
	go func() {
		for e := range w.ResultChan() {
			if c, ok := e.Object.(*cdv1.CDCredential); ok && e.Type == watch.Modified {
				out <- statusWrite{c.Name, c.Status.ClientSecretHash}
			}
		}
	}()
	return out
}

// TestTwoInstallsOnOneGrantNeverSendATokenTwice: two installs (no shared Lease, each its
// own key) both select the same grants; the in-flight mark is all that stands between
// them. No refresh token may reach the identity server twice, and the stored one stays
// live.
func TestTwoInstallsOnOneGrantNeverSendATokenTwice(t *testing.T) {
	f := newGrantFixture(t, 2*time.Second)
	one := f.opts
	one.WatchNamespaces = nil // cluster-wide
	one.Key = []byte("install-one-key-0123456789abcdef-1")
	one.TokenRequestTimeout = time.Second
	first := startManager(t, one)
	// The second install runs in a process of its own: managers in one process share
	// its in-flight holder name, which two pods never do.
	second := startManagerProcess(t, "--watch-namespaces="+f.ns, "--allowed-token-hosts="+f.idp.Host,
		"--key-secret="+f.ns+"/install-two-key", "--in-flight-timeout=2s", "--token-request-timeout=1s",
		"--graceful-shutdown-timeout=20s")
	names := []string{"acme", "bolt", "cargo"}
	for _, n := range names {
		f.addGrant(n)
	}
	for _, n := range names {
		eventually(t, 20*time.Second, n+" rotating", f.rotations(n, 6))
	}
	first.Stop(t)
	second()
	f.assertNoTokenReused()
	for _, n := range names {
		f.assertStoredTokenLive(n)
	}
	t.Logf("refreshes %d, rejected %v", f.refreshCount(), f.idp.Stats().Rejected)
}

// startManagerProcess runs cmd/manager as a process of its own against the test's API
// server, as a second install's pod would; the returned func SIGTERMs it and waits. Its
// log is shown when the test failed (or SHOW_MANAGER_LOG is set).
func startManagerProcess(t *testing.T, args ...string) func() {
	t.Helper()
	dir := t.TempDir()
	bin := support.Build(t, dir, "./cmd/manager")
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	kc.CurrentContext = "envtest"
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "manager.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"--kubeconfig=" + kubeconfig, "--metrics-bind-address=0", "--health-probe-bind-address=0", "--zap-log-level=debug"}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() || os.Getenv("SHOW_MANAGER_LOG") != "" {
			b, _ := os.ReadFile(log.Name())
			t.Logf("second manager log:\n%s", b)
		}
	}
	t.Cleanup(stop)
	return stop
}
