package install

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	certutil "k8s.io/client-go/util/cert"

	"github.com/credops/cd-credentials-operator/test/support"
)

// serviceAccountUser is how the API server names a ServiceAccount.
func serviceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// impersonatingKubeconfig writes a kubeconfig that acts as the ServiceAccount with the
// groups the API server gives every ServiceAccount token, so RBAC judges the manager's
// requests exactly as it would in the pod.
func (c *cluster) impersonatingKubeconfig(t *testing.T, namespace, serviceAccount string) string {
	t.Helper()
	cfg, err := clientcmd.Load(c.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, auth := range cfg.AuthInfos {
		auth.Impersonate = serviceAccountUser(namespace, serviceAccount)
		auth.ImpersonateGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// managerProcess is the real manager binary, run with a Deployment's arguments.
type managerProcess struct {
	cmd         *exec.Cmd
	done        chan struct{} // closed once the process has exited
	exitErr     error         // how it exited; read after done
	mu          sync.Mutex
	out         []string
	metricsAddr string // "" when the Deployment serves no metrics
	metricsTLS  bool
	callbackURL string
}

// localEndpoints are the loopback addresses one manager listens on.
type localEndpoints struct {
	health, metrics, callback string
}

func newEndpoints(t *testing.T) localEndpoints {
	return localEndpoints{health: support.FreeAddr(t), metrics: support.FreeAddr(t), callback: support.FreeAddr(t)}
}

// flagValue is the last value of --name in args (the one Go's flag package keeps).
func flagValue(args []string, name string) (string, bool) {
	val, found := "", false
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			val, found = v, true
		} else if a == "--"+name {
			val, found = "true", true
		}
	}
	return val, found
}

// callbackScheme is https when the Deployment serves the callback over TLS.
func callbackScheme(d *appsv1.Deployment) string {
	if _, ok := flagValue(d.Spec.Template.Spec.Containers[0].Args, "callback-cert-dir"); ok {
		return "https"
	}
	return "http"
}

// startManager runs the manager binary with the rendered Deployment's arguments and
// environment, as its ServiceAccount. Only what cannot be the same outside a pod is
// changed: mounted folders become local ones (TLS Secrets get a self-signed pair, CA
// bundles a CA), the listeners bind to free loopback ports, the token host is the local
// sandbox, and the callback is turned on where the values leave it off (the RBAC it
// needs is the same).
func (c *cluster) startManager(t *testing.T, bin string, d *appsv1.Deployment, ep localEndpoints, tokenHost string) *managerProcess {
	t.Helper()
	spec := d.Spec.Template.Spec
	container := spec.Containers[0]
	local := localizeMounts(t, spec, container)
	args := make([]string, len(container.Args))
	for i, a := range container.Args {
		args[i] = local.Replace(a)
	}
	p := &managerProcess{done: make(chan struct{}), callbackURL: callbackScheme(d) + "://" + ep.callback + "/callback"}
	args = append(args,
		"--kubeconfig="+c.impersonatingKubeconfig(t, d.Namespace, spec.ServiceAccountName),
		"--health-probe-bind-address="+ep.health,
		"--allowed-token-hosts="+tokenHost,
		"--callback-bind-address="+ep.callback,
		"--callback-url="+p.callbackURL,
	)
	if addr, _ := flagValue(container.Args, "metrics-bind-address"); addr != "0" {
		args = append(args, "--metrics-bind-address="+ep.metrics)
		p.metricsAddr = ep.metrics
		secure, _ := flagValue(container.Args, "metrics-secure")
		p.metricsTLS = secure != "false"
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), resolveEnv(t, d.Namespace, container, local)...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.out = append(p.out, sc.Text())
			p.mu.Unlock()
		}
		p.exitErr = p.cmd.Wait()
	}()
	t.Cleanup(func() { p.stop(t) })
	support.Eventually(t, 60*time.Second, "manager ready", func() error {
		select {
		case <-p.done:
			return fmt.Errorf("the manager exited (%v):\n%s", p.exitErr, p.output())
		default:
		}
		resp, err := http.Get("http://" + ep.health + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %d", resp.StatusCode)
		}
		return nil
	})
	return p
}

func (p *managerProcess) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.out, "\n")
}

// stop sends SIGTERM, as the kubelet does, and waits for the manager to finish its
// in-flight work and exit.
func (p *managerProcess) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(45 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("the manager did not exit within 45s of SIGTERM")
	}
}

// localizeMounts maps every mount path of the container to a local folder: a Secret
// volume gets a self-signed tls.crt and tls.key (the chart mounts kubernetes.io/tls
// Secrets), any other volume an empty folder. The replacer rewrites flags and env.
func localizeMounts(t *testing.T, spec corev1.PodSpec, c corev1.Container) *strings.Replacer {
	t.Helper()
	var pairs []string
	for _, m := range c.VolumeMounts {
		dir := t.TempDir()
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.Secret != nil {
				writeSelfSignedPair(t, dir)
			}
			if v.Name == m.Name && v.ConfigMap != nil {
				writeCABundle(t, dir, v.ConfigMap.Items)
			}
		}
		pairs = append(pairs, m.MountPath, dir)
	}
	return strings.NewReplacer(pairs...)
}

func writeSelfSignedPair(t *testing.T, dir string) {
	t.Helper()
	crt, key, err := certutil.GenerateSelfSignedCertKey("127.0.0.1", []net.IP{net.ParseIP("127.0.0.1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), crt, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeCABundle writes a CA certificate under each item of a ConfigMap volume (the
// chart's tokenHostCABundle), so that the manager finds a bundle to trust.
func writeCABundle(t *testing.T, dir string, items []corev1.KeyToPath) {
	t.Helper()
	crt, _, err := certutil.GenerateSelfSignedCertKey("corp-ca.example", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if err := os.WriteFile(filepath.Join(dir, it.Path), crt, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// resolveEnv turns the container's environment into what the kubelet would set:
// literal values as they are, and the Downward API fields the manager reads.
func resolveEnv(t *testing.T, namespace string, c corev1.Container, local *strings.Replacer) []string {
	t.Helper()
	var env []string
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+local.Replace(e.Value))
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env = append(env, e.Name+"="+namespace)
		case e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory":
			limit := c.Resources.Limits.Memory()
			if limit.IsZero() {
				t.Fatalf("%s reads limits.memory, but the container has no memory limit", e.Name)
			}
			env = append(env, e.Name+"="+strconv.FormatInt(limit.Value(), 10))
		default:
			t.Fatalf("env %s: the test does not know how the kubelet fills %+v", e.Name, e.ValueFrom)
		}
	}
	return env
}

// loopbackClient talks to the manager's self-signed HTTPS endpoints on 127.0.0.1.
var loopbackClient = &http.Client{
	Timeout:       10 * time.Second,
	Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // loopback, self-signed test certificates
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}
