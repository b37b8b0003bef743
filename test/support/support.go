// Package support holds what the repository's test suites share: polling for an
// observable state, free addresses, the sandbox identity server, builders for the
// operator's objects (opted in as a user would create them), and condition checks.
package support

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
	"github.com/credops/cd-credentials-operator/test/support/freeport"
)

// Eventually polls check until it returns nil, failing the test with its last error
// after timeout. Polling for an observable state is the synchronisation of these
// suites; nothing waits a fixed time.
func Eventually(t testing.TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		last = check()
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("%s: not within %s: %v", what, timeout, last)
	}
}

// FreeAddr returns a loopback address nobody listens on and no other call handed out.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// IdentityServer is a running sandbox identity server.
type IdentityServer struct {
	*cdsandbox.Server
	URL  string
	Host string // host:port, for --allowed-token-hosts
}

// StartSandbox runs a sandbox identity server for the test.
func StartSandbox(t testing.TB, opts cdsandbox.Options) IdentityServer {
	t.Helper()
	s := cdsandbox.New(opts)
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	s.SetIssuer(hs.URL)
	return IdentityServer{Server: s, URL: hs.URL, Host: hs.Listener.Addr().String()}
}

// Build compiles a package of this repository into dir and returns the binary's path.
func Build(t testing.TB, dir, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// RepoRoot is the repository's root, from a test's working directory (its package's).
func RepoRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return filepath.Join("..", "..")
	}
	return filepath.Dir(string(out[:len(out)-1]))
}

// ClientSecret is a client Secret opted in for CDCredentials, holding id and secret.
func ClientSecret(ns, name, id, secret string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeClient}},
		StringData: map[string]string{"client_id": id, "client_secret": secret},
	}
}

// RefreshSecret is a refresh-token Secret opted in for CDUserGrants.
func RefreshSecret(ns, name, token string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeRefreshToken}},
		StringData: map[string]string{"refresh_token": token},
	}
}

// Credential is a CDCredential of flow whose client Secret is secretName.
func Credential(ns, name string, flow cdv1.Flow, secretName, issuer string) *cdv1.CDCredential {
	return &cdv1.CDCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: cdv1.CDCredentialSpec{
			Flow:            flow,
			ClientSecretRef: cdv1.ClientSecretReference{Name: secretName},
			Issuer:          issuer,
		},
	}
}

// UserGrant is a CDUserGrant of credName with its refresh token in refreshSecretName.
func UserGrant(ns, name, credName, refreshSecretName string) *cdv1.CDUserGrant {
	return &cdv1.CDUserGrant{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: cdv1.CDUserGrantSpec{
			CredentialRef:         cdv1.CredentialReference{Name: credName},
			RefreshTokenSecretRef: cdv1.RefreshTokenSecretReference{Name: refreshSecretName},
		},
	}
}

// ConditionIs checks one condition's status and reason.
func ConditionIs(conds []metav1.Condition, typ string, status metav1.ConditionStatus, reason string) error {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return fmt.Errorf("no %s condition in %+v", typ, conds)
	}
	if c.Status != status || c.Reason != reason {
		return fmt.Errorf("%s is %s/%s (%q), want %s/%s", typ, c.Status, c.Reason, c.Message, status, reason)
	}
	return nil
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers: logs and process output.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// RunningManager is the real manager, started in-process by a test.
type RunningManager struct {
	*manager.Operator
	cancel context.CancelFunc
	done   chan error
}

// StartManager builds and starts the real manager against cfg; it stops with the test.
// Metrics and probes are off unless opts says otherwise, and several managers may run
// in one process.
func StartManager(t testing.TB, cfg *rest.Config, opts manager.Options) *RunningManager {
	t.Helper()
	opts.SeveralPerProcess = true
	if opts.MetricsBindAddress == "" {
		opts.MetricsBindAddress = "0"
	}
	if opts.HealthProbeBindAddress == "" {
		opts.HealthProbeBindAddress = "0"
	}
	ctx, cancel := context.WithCancel(context.Background())
	op, err := manager.New(ctx, cfg, opts)
	if err != nil {
		cancel()
		t.Fatalf("creating manager: %v", err)
	}
	rm := &RunningManager{Operator: op, cancel: cancel, done: make(chan error, 1)}
	go func() { rm.done <- op.Start(ctx) }()
	t.Cleanup(func() { rm.Stop(t) })
	return rm
}

// Stop cancels the manager as SIGTERM would and waits for it to return.
func (m *RunningManager) Stop(t testing.TB) {
	t.Helper()
	if m.cancel == nil {
		return
	}
	m.cancel()
	m.cancel = nil
	select {
	case err := <-m.done:
		if err != nil {
			t.Errorf("manager returned: %v", err)
		}
	case <-time.After(time.Minute):
		t.Errorf("manager did not stop within a minute")
	}
}

// NoFollow is an HTTP client that shows redirects instead of following them, as a test
// playing the customer's browser needs.
var NoFollow = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}

// Login plays the customer at the sandbox: it opens the authorization URL, submits the
// login form with action "login" or "deny", and returns where the identity server
// redirects the browser, which must be under callbackURL.
func Login(t testing.TB, idpURL, authURL, callbackURL, action string) string {
	t.Helper()
	resp, err := NoFollow.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("authorization page: HTTP %d", resp.StatusCode)
	}
	u, _ := url.Parse(authURL)
	form := u.Query()
	form.Set("username", "dispatcher@acme.example")
	form.Set("action", action)
	resp, err = NoFollow.PostForm(idpURL+"/connect/authorize", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, callbackURL) {
		t.Fatalf("login: HTTP %d to %q", resp.StatusCode, loc)
	}
	return loc
}
