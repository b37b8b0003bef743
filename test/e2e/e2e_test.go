// Package e2e builds the real manager and cd-sandbox binaries and runs them as
// processes against the envtest control plane: what a user runs, killed the way a node
// kills it.
package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/manager"
	"github.com/credops/cd-credentials-operator/test/support"
)

const (
	apiID, apiSecret     = "e2e-api", "e2e-api-secret"
	loginID, loginSecret = "e2e-login", "e2e-login-secret"
)

// process is a running binary whose output is kept.
type process struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	out []string
}

func start(t *testing.T, bin string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin, args...)}
	stdout, _ := p.cmd.StdoutPipe()
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.out = append(p.out, sc.Text())
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *process) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
}

// count returns how many output lines contain all of parts.
func (p *process) count(parts ...string) int {
	if len(parts) == 1 && parts[0] == "" {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
next:
	for _, l := range p.out {
		for _, part := range parts {
			if !strings.Contains(l, part) {
				continue next
			}
		}
		n++
	}
	return n
}

var (
	build      = support.Build
	freeAddr   = support.FreeAddr
	eventually = support.Eventually
)

func TestTheBinariesEndToEnd(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run `make test`, which builds kube-apiserver and etcd into ./bin")
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases")}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	scheme := manager.Scheme()
	must(t, apiextensionsv1.AddToScheme(scheme))
	k8s, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	managerBin := build(t, dir, "./cmd/manager")
	sandboxBin := build(t, dir, "./cmd/cd-sandbox")

	addr := freeAddr(t)
	seeded := filepath.Join(dir, "refresh-token")
	idp := start(t, sandboxBin, "--listen", addr, "--access-token-ttl", "3s",
		"--client", apiID+":"+apiSecret+":client_credentials",
		"--client", loginID+":"+loginSecret+":authorization_code:https://app.example.com/cb",
		"--seed-grant", loginID+":acme:"+seeded)
	issuer := "http://" + addr
	eventually(t, 20*time.Second, "sandbox up", func() error {
		resp, err := http.Get(issuer + "/.well-known/openid-configuration")
		if err == nil {
			resp.Body.Close()
		}
		return err
	})
	t.Run("without its namespace the manager stops at once, saying how to give it", func(t *testing.T) {
		cmd := exec.Command(managerBin, "--kubeconfig", kubeconfig, "--metrics-bind-address", "0", "--health-probe-bind-address", "0")
		cmd.Env = append(os.Environ(), "POD_NAMESPACE=")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "set the POD_NAMESPACE environment variable") || !strings.Contains(string(out), "--key-secret=<namespace>/<name>") {
			t.Errorf("exit %v, output:\n%s", err, out)
		}
	})
	// The highest verbosity --zap-log-level accepts: nothing secret may be logged even so.
	managerArgs := []string{"--kubeconfig", kubeconfig, "--allowed-token-hosts", addr, "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
		"--key-secret", "default/cd-credentials-operator-key", "--zap-log-level=127"}
	mgr := start(t, managerBin, managerArgs...)

	ctx := context.Background()
	ns := "e2e"
	must(t, k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	rt, err := os.ReadFile(seeded)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []client.Object{
		support.ClientSecret(ns, "api-client", apiID, apiSecret),
		support.ClientSecret(ns, "login-client", loginID, loginSecret),
		support.RefreshSecret(ns, "acme-refresh", string(rt)),
		support.Credential(ns, "api", cdv1.FlowClientCredentials, "api-client", issuer),
		support.Credential(ns, "login", cdv1.FlowAuthorizationCode, "login-client", issuer),
		support.Credential(ns, "misused", cdv1.FlowClientCredentials, "login-client", issuer),
		support.UserGrant(ns, "acme", "login", "acme-refresh"),
	} {
		must(t, k8s.Create(ctx, o))
	}

	eventually(t, 30*time.Second, "client-credentials token live at the sandbox", func() error {
		s := &corev1.Secret{}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "api-token"}, s); err != nil {
			return err
		}
		return listings(issuer, string(s.Data[cdv1.AuthorizationKey]), http.StatusOK)
	})
	eventually(t, 30*time.Second, "misuse reported", func() error {
		c := &cdv1.CDCredential{}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "misused"}, c); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(c.Status.Conditions, cdv1.FlowMisuseCondition) {
			return fmt.Errorf("FlowMisuse not True: %+v", c.Status.Conditions)
		}
		return nil
	})
	eventually(t, 60*time.Second, "3 rotations", rotatedAtLeast(k8s, ns, 3))

	// SIGKILL mid-run: whatever the operator was doing is cut off, as on a node failure.
	mgr.kill()
	restarted := start(t, managerBin, managerArgs...)
	g := grant(t, k8s, ns)
	target := g.Status.RotationCount + 3
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
		return rotatedAtLeast(k8s, ns, target)() == nil || interrupted(grant(t, k8s, ns)), nil
	})
	if err != nil {
		t.Fatalf("after the kill the grant neither rotated 3 more times nor reported an interrupted rotation: %+v", grant(t, k8s, ns).Status)
	}
	reused := idp.count("refresh token reuse")
	succeeded := idp.count("grant_type=refresh_token", "200 issued")
	g = grant(t, k8s, ns)
	t.Logf("rotations stored: %d, refreshes the sandbox answered: %d, spent tokens presented again: %d", g.Status.RotationCount, succeeded, reused)
	if interrupted(g) {
		// Allowed only where the sandbox proves a token was consumed and its successor
		// never stored: it answered more refreshes than the operator stored, and the one
		// recovery attempt is the single reuse.
		if succeeded <= int(g.Status.RotationCount) || reused != 1 {
			t.Errorf("RotationInterrupted without proof that the kill lost a consumed token")
		}
	} else if reused != 0 {
		t.Errorf("the sandbox saw %d spent refresh tokens again, want 0", reused)
	}
	stored := &corev1.Secret{}
	must(t, k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "acme-refresh"}, stored))
	access := &corev1.Secret{}
	must(t, k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "api-token"}, access))
	for _, secretValue := range []string{string(rt), string(stored.Data["refresh_token"]), apiSecret, loginSecret, string(access.Data[cdv1.AccessTokenKey])} {
		for _, encoded := range []string{secretValue, base64.StdEncoding.EncodeToString([]byte(secretValue)), hex.EncodeToString([]byte(secretValue)), url.QueryEscape(secretValue)} {
			if mgr.count(encoded)+restarted.count(encoded) != 0 {
				t.Errorf("the manager's output at --zap-log-level=127 contains a secret")
			}
		}
	}

	// Uninstalling the operator with its CRDs deletes the CRs, and the output Secrets
	// with them, but never a customer's refresh token.
	restarted.kill()
	for _, name := range []string{"cdcredentials.cd.credops.io", "cdusergrants.cd.credops.io"} {
		must(t, k8s.Delete(ctx, &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: name}}))
	}
	eventually(t, 60*time.Second, "the CRDs gone", func() error {
		err := k8s.Get(ctx, types.NamespacedName{Name: "cdusergrants.cd.credops.io"}, &apiextensionsv1.CustomResourceDefinition{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %v", err)
	})
	after := &corev1.Secret{}
	must(t, k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "acme-refresh"}, after))
	if string(after.Data["refresh_token"]) != string(stored.Data["refresh_token"]) || len(after.OwnerReferences) != 0 {
		t.Errorf("the customer's refresh token did not survive the uninstall unchanged")
	}
}

func rotatedAtLeast(k8s client.Client, ns string, n int64) func() error {
	return func() error {
		g := &cdv1.CDUserGrant{}
		if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "acme"}, g); err != nil {
			return err
		}
		if g.Status.RotationCount < n || !meta.IsStatusConditionTrue(g.Status.Conditions, cdv1.ReadyCondition) {
			return fmt.Errorf("%d rotations, conditions %+v", g.Status.RotationCount, g.Status.Conditions)
		}
		return nil
	}
}

func interrupted(g *cdv1.CDUserGrant) bool {
	c := meta.FindStatusCondition(g.Status.Conditions, cdv1.ReauthorizationRequiredCondition)
	return c != nil && c.Status == metav1.ConditionTrue && c.Reason == cdv1.RotationInterruptedReason
}

func grant(t *testing.T, k8s client.Client, ns string) *cdv1.CDUserGrant {
	t.Helper()
	g := &cdv1.CDUserGrant{}
	must(t, k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "acme"}, g))
	return g
}

func listings(issuer, authorization string, want int) error {
	req, _ := http.NewRequest(http.MethodGet, issuer+"/marketplace/v2/listings", nil)
	req.Header.Set("Authorization", authorization)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("Marketplace answered %d, want %d", resp.StatusCode, want)
	}
	return nil
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
