package main

// These tests run the real kubectl-cd binary, built once per run, against a real
// kube-apiserver and etcd (envtest) through a kubeconfig with two contexts, the way a
// person runs `kubectl cd`. The tests play the operator: they write status through the
// status subresource.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/manager"
	"github.com/credops/cd-credentials-operator/test/support"
)

// The kubeconfig's two contexts and their default namespaces: one holds a Ready grant,
// the other a grant waiting for its customer.
const (
	readyContext   = "ready"
	readyNS        = "team-ready"
	waitingContext = "waiting"
	waitingNS      = "team-waiting"
)

var (
	cfg *rest.Config
	k8s client.Client
	// binary is the built kubectl-cd; helperLink is kubectl_complete-cd linked to it.
	binary, helperLink string
	// kubeconfig holds both contexts; its current context is readyContext.
	kubeconfig string
	// home is HOME for the binary (kubectl's cache goes there), binDir the PATH entry
	// with the fake browser opener.
	home, binDir string
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
	ctrl.SetLogger(logr.Discard())
	dir, err := os.MkdirTemp("", "kubectl-cd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := buildBinary(dir); err != nil {
		fmt.Fprintln(os.Stderr, "building kubectl-cd:", err)
		return 1
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	if cfg, err = env.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	if k8s, err = client.New(cfg, client.Options{Scheme: manager.Scheme()}); err != nil {
		fmt.Fprintln(os.Stderr, "creating client:", err)
		return 1
	}
	kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig); err != nil {
		fmt.Fprintln(os.Stderr, "writing the kubeconfig:", err)
		return 1
	}
	for _, ns := range []string{readyNS, waitingNS} {
		if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			fmt.Fprintln(os.Stderr, "creating namespace:", err)
			return 1
		}
	}
	return m.Run()
}

// buildBinary builds kubectl-cd as a release would (no race detector: it is the
// product under test, not the test), links the completion helper to it, and puts a
// fake browser opener on a PATH of its own.
func buildBinary(dir string) error {
	binDir = filepath.Join(dir, "bin")
	home = filepath.Join(dir, "home")
	for _, d := range []string{binDir, home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	binary = filepath.Join(binDir, "kubectl-cd")
	// go test puts its own toolchain first on PATH.
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	helperLink = filepath.Join(binDir, "kubectl_complete-cd")
	if err := os.Symlink(binary, helperLink); err != nil {
		return err
	}
	// xdg-open records the URL it was asked to open, one line per call.
	opener := "#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"$OPENED_LOG\"\n"
	return os.WriteFile(filepath.Join(binDir, "xdg-open"), []byte(opener), 0o755)
}

// writeKubeconfig writes the envtest admin's credentials under two contexts with
// different default namespaces.
func writeKubeconfig(path string) error {
	c := clientcmdapi.NewConfig()
	c.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	c.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	c.Contexts[readyContext] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin", Namespace: readyNS}
	c.Contexts[waitingContext] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin", Namespace: waitingNS}
	c.CurrentContext = readyContext
	return clientcmd.WriteToFile(*c, path)
}

// result is one finished run of the binary.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// command prepares a run of the binary (or of the completion helper) as a person's
// shell would: KUBECONFIG set, a HOME of its own, no terminal.
func command(ctx context.Context, exe string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "HOME="+home, "PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return cmd
}

// kubectlCD runs the binary to the end with stdin as given.
func kubectlCD(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runExe(t, binary, stdin, args...)
}

func runExe(t *testing.T, exe, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := command(ctx, exe, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %v: %v", args, err)
	}
	r := result{stdout: stdout.String(), stderr: stderr.String(), code: code}
	logTranscript(t, filepath.Base(exe), args, r)
	return r
}

// logTranscript shows a run as a terminal would (go test -v): the README's transcripts
// come from here.
func logTranscript(t *testing.T, exe string, args []string, r result) {
	t.Helper()
	name := "kubectl cd"
	if exe != "kubectl-cd" {
		name = exe
	}
	t.Logf("$ %s %s\n%s%s(exit %d)", name, strings.Join(args, " "), r.stdout, r.stderr, r.code)
}

// process is a run of the binary in the background.
type process struct {
	t              *testing.T
	cmd            *exec.Cmd
	stdin          *os.File
	stdout, stderr syncBuffer
	done           chan struct{}
	code           int
}

func start(t *testing.T, extraEnv []string, args ...string) *process {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	p := &process{t: t, cmd: command(ctx, binary, args...), done: make(chan struct{})}
	p.cmd.Env = append(p.cmd.Env, extraEnv...)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdin, p.stdin = r, w
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	go func() {
		defer cancel()
		err := p.cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			p.code = ee.ExitCode()
		} else if err != nil {
			p.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		w.Close()
	})
	return p
}

// waitOutput polls until stdout contains want.
func (p *process) waitOutput(want string) {
	p.t.Helper()
	eventually(p.t, 30*time.Second, "kubectl cd prints "+want, func() error {
		if strings.Contains(p.stdout.String(), want) {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited %d: %s / %s", p.code, p.stdout.String(), p.stderr.String())
		default:
		}
		return fmt.Errorf("stdout so far: %q; stderr: %q", p.stdout.String(), p.stderr.String())
	})
}

// wait waits for the process to exit and returns what it did.
func (p *process) wait() result {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		p.t.Fatalf("kubectl cd did not exit; stdout %q stderr %q", p.stdout.String(), p.stderr.String())
	}
	r := result{stdout: p.stdout.String(), stderr: p.stderr.String(), code: p.code}
	logTranscript(p.t, "kubectl-cd", p.cmd.Args[1:], r)
	return r
}

var eventually = support.Eventually

type syncBuffer = support.SyncBuffer

// --- objects, as the operator would leave them ---

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

func credential(ns, name string, flow cdv1.Flow, secretName string) *cdv1.CDCredential {
	return &cdv1.CDCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       cdv1.CDCredentialSpec{Flow: flow, ClientSecretRef: cdv1.ClientSecretReference{Name: secretName}},
	}
}

func userGrant(ns, name, credName, refreshSecretName string) *cdv1.CDUserGrant {
	return &cdv1.CDUserGrant{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: cdv1.CDUserGrantSpec{
			CredentialRef:         cdv1.CredentialReference{Name: credName},
			RefreshTokenSecretRef: cdv1.RefreshTokenSecretReference{Name: refreshSecretName},
		},
	}
}

// condition is a condition as the operator sets it, transitioned now.
func condition(typ string, status metav1.ConditionStatus, reason, message string) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: message, LastTransitionTime: metav1.NewTime(time.Now().Truncate(time.Second))}
}

// awaitingStatus is a grant waiting for its customer, with the link published.
func awaitingStatus(authURL string) cdv1.CDUserGrantStatus {
	return cdv1.CDUserGrantStatus{
		ObservedGeneration: 1,
		AuthorizationURL:   authURL,
		Conditions: []metav1.Condition{
			condition(cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.AwaitingAuthorizationReason, "No refresh token in Secret: the customer has to log in"),
			condition(cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenMissingReason, "No refresh token in Secret: the customer has to log in"),
		},
	}
}

// readyStatus is a grant whose token is current.
func readyStatus(expires time.Duration, rotations int64) cdv1.CDUserGrantStatus {
	exp := metav1.NewTime(time.Now().Add(expires).Truncate(time.Second))
	renew := metav1.NewTime(time.Now().Add(expires / 2).Truncate(time.Second))
	return cdv1.CDUserGrantStatus{
		ObservedGeneration: 1, RotationCount: rotations, ExpiresAt: &exp, RenewalTime: &renew,
		Subject: "dispatcher@acme.example", GrantedScopes: []string{"marketplace", "offline_access"},
		Conditions: []metav1.Condition{
			condition(cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason, "The access token is current"),
			condition(cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenValidReason, "The grant holds a refresh token"),
			condition(cdv1.FlowMisuseCondition, metav1.ConditionFalse, cdv1.FlowCorrectReason, "The credential is used for its flow"),
		},
	}
}

// setGrantStatus writes a grant's status through the status subresource, as the
// operator does, keeping the rest of the object as the server has it.
func setGrantStatus(t *testing.T, ns, name string, change func(*cdv1.CDUserGrant)) {
	t.Helper()
	g := &cdv1.CDUserGrant{}
	if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, g); err != nil {
		t.Fatal(err)
	}
	change(g)
	if err := k8s.Status().Update(context.Background(), g); err != nil {
		t.Fatalf("writing the status of %s: %v", name, err)
	}
}

func setCredentialStatus(t *testing.T, ns, name string, st cdv1.CDCredentialStatus) {
	t.Helper()
	c := &cdv1.CDCredential{}
	if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, c); err != nil {
		t.Fatal(err)
	}
	c.Status = st
	if err := k8s.Status().Update(context.Background(), c); err != nil {
		t.Fatal(err)
	}
}

func getGrant(t *testing.T, ns, name string) *cdv1.CDUserGrant {
	t.Helper()
	g := &cdv1.CDUserGrant{}
	if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, g); err != nil {
		t.Fatal(err)
	}
	return g
}

// newGrant creates a grant with the given status in ns.
func newGrant(t *testing.T, ns, name string, st cdv1.CDUserGrantStatus) {
	t.Helper()
	create(t, userGrant(ns, name, "login", name+"-refresh"))
	setGrantStatus(t, ns, name, func(g *cdv1.CDUserGrant) { g.Status = st })
}

var fixtureOnce sync.Once

// fixtures creates, once, what the read-only tests look at:
//   - team-ready: CDCredential login (Ready), CDUserGrant acme (Ready, expiring in 45m)
//     with its output Secret acme-token, refresh-token Secret acme-refresh, client
//     Secret login-client and an unrelated Secret;
//   - team-waiting: CDCredential login (Ready), CDUserGrant globex awaiting its customer.
func fixtures(t *testing.T) {
	t.Helper()
	fixtureOnce.Do(func() {
		for _, ns := range []string{readyNS, waitingNS} {
			create(t, credential(ns, "login", cdv1.FlowAuthorizationCode, "login-client"))
			setCredentialStatus(t, ns, "login", cdv1.CDCredentialStatus{ObservedGeneration: 1, ClientID: "57fd8af0-login", Conditions: []metav1.Condition{
				condition(cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.ClientReadyReason, "The client Secret holds a client id and secret"),
				condition(cdv1.FlowMisuseCondition, metav1.ConditionFalse, cdv1.FlowCorrectReason, "The credential is used for its flow"),
			}})
		}
		newGrant(t, readyNS, "acme", readyStatus(45*time.Minute, 3))
		setGrantStatus(t, readyNS, "acme", func(g *cdv1.CDUserGrant) { g.Status.SecretName = "acme-token" })
		newGrant(t, waitingNS, "globex", awaitingStatus(globexURL))
		for _, s := range []*corev1.Secret{outputSecret(), refreshTokenSecret(), clientSecret(), unrelatedSecret()} {
			create(t, s)
		}
	})
}

const globexURL = "https://id.example.com/connect/authorize?client_id=57fd8af0-login&response_type=code&state=globex-state&code_challenge=x"

func conditionOf(g *cdv1.CDUserGrant, typ string) *metav1.Condition {
	return meta.FindStatusCondition(g.Status.Conditions, typ)
}

func errorf(format string, a ...any) error { return fmt.Errorf(format, a...) }
