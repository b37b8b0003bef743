// Command bench measures the operator at scale and prints a table: N CDUserGrants on a
// local control plane and the sandbox identity server with short token lifetimes, the
// real manager binary as a process (its CPU and memory read from /proc), and, side by
// side, a minimal client-go loop that refreshes N grants with no controller machinery.
// `make bench` runs it; BENCH_N, BENCH_TTL and BENCH_UNRELATED tune it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
)

const (
	clientID, clientSecret = "bench-login", "bench-secret"
)

type config struct {
	n         int
	ttl       time.Duration
	unrelated int
	manager   string
}

func main() {
	var cfg config
	flag.IntVar(&cfg.n, "n", envInt("BENCH_N", 1000), "CDUserGrants to create")
	flag.DurationVar(&cfg.ttl, "ttl", time.Duration(envInt("BENCH_TTL", 30))*time.Second, "access token lifetime")
	flag.IntVar(&cfg.unrelated, "unrelated", envInt("BENCH_UNRELATED", 50000), "unrelated Secrets to create for the memory test")
	flag.StringVar(&cfg.manager, "manager", "bin/manager", "manager binary")
	baseline := flag.Bool("baseline", false, "run as the baseline loop (internal)")
	flag.Parse()
	if *baseline {
		runBaseline()
		return
	}
	if err := run(cfg); err != nil {
		log.Fatal(err)
	}
}

// result is one row set of the table.
type result struct {
	firstTokens     time.Duration
	rotations       int
	requestsPerRot  float64
	rotPerLifetime  float64
	late            int
	writesPerRot    float64
	readsPerRot     float64
	cpuPer1000      float64
	peakRSS         int64
	rssBefore       int64
	rssAfter        int64
	baselineCPU1000 float64
	baselineWrites  float64
	baselineRot     int
}

func run(cfg config) error {
	ctx := context.Background()
	env := &envtest.Environment{CRDDirectoryPaths: []string{"config/crd/bases"}, ErrorIfCRDPathMissing: true}
	restCfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("starting the control plane (run `make bench`): %w", err)
	}
	defer func() { _ = env.Stop() }()
	restCfg.QPS, restCfg.Burst = 500, 1000
	k8s, err := client.New(restCfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		return err
	}
	dir, _ := os.MkdirTemp("", "cd-bench-")
	defer os.RemoveAll(dir)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		return err
	}
	idp, issuer, host := startSandbox(cfg.ttl)
	var r result

	step("manager: %d CDUserGrants, tokens living %s", cfg.n, cfg.ttl)
	metricsAddr := freeAddr()
	mgr := exec.Command(cfg.manager, "--kubeconfig", kubeconfig, "--allowed-token-hosts", host,
		// The bench scrapes the manager's own counters over loopback; plain HTTP keeps
		// TokenReviews out of the API-server traffic it measures.
		"--metrics-bind-address", metricsAddr, "--metrics-secure=false", "--health-probe-bind-address", "0",
		"--max-concurrent-reconciles", "16", "--token-requests-per-second", "500",
		"--key-secret", "default/cd-credentials-operator-key")
	mgr.Stdout, mgr.Stderr = nil, nil
	if err := mgr.Start(); err != nil {
		return err
	}
	defer func() { _ = mgr.Process.Kill(); _, _ = mgr.Process.Wait() }()

	if err := seed(ctx, k8s, idp, "bench", issuer, cfg.n); err != nil {
		return err
	}
	start := time.Now()
	if err := waitRotated(ctx, k8s, "bench", cfg.n, 1, 30*time.Minute); err != nil {
		return err
	}
	r.firstTokens = time.Since(start)

	step("steady state for two token lifetimes")
	window := 2 * cfg.ttl
	cpu0, s0 := procCPU(mgr.Process.Pid), idp.Stats()
	w0, rd0, by0 := scrapeRequestsBy(metricsAddr)
	time.Sleep(window) // a measurement window, not synchronisation
	cpu1, s1 := procCPU(mgr.Process.Pid), idp.Stats()
	w1, rd1, by1 := scrapeRequestsBy(metricsAddr)
	for k, v := range by1 {
		if d := v - by0[k]; d > 0 {
			fmt.Fprintf(os.Stderr, "    writes %s: %d\n", k, d)
		}
	}
	r.rotations = s1.Issued["refresh_token"] - s0.Issued["refresh_token"]
	rot := float64(max(r.rotations, 1))
	r.requestsPerRot = float64(s1.TokenRequests["refresh_token"]-s0.TokenRequests["refresh_token"]) / rot
	r.rotPerLifetime = rot / float64(cfg.n) / (float64(window) / float64(cfg.ttl))
	r.late = s1.LateRenewals
	r.writesPerRot = float64(w1-w0) / rot
	r.readsPerRot = float64(rd1-rd0) / rot
	r.cpuPer1000 = (cpu1 - cpu0) / rot * 1000

	step("memory with %d unrelated Secrets", cfg.unrelated)
	r.rssBefore = procRSS(mgr.Process.Pid, "VmRSS")
	if err := unrelatedSecrets(ctx, k8s, cfg.unrelated); err != nil {
		return err
	}
	time.Sleep(cfg.ttl) // let the manager run a lifetime with them present
	runtime.GC()
	r.rssAfter = procRSS(mgr.Process.Pid, "VmRSS")
	r.peakRSS = procRSS(mgr.Process.Pid, "VmHWM")
	_ = mgr.Process.Signal(os.Interrupt)
	_, _ = mgr.Process.Wait()

	step("baseline: a plain client-go loop over %d grants", cfg.n)
	if err := seedBaseline(ctx, k8s, idp, cfg.n); err != nil {
		return err
	}
	self, _ := os.Executable()
	bl := exec.Command(self, "-baseline")
	bl.Env = append(os.Environ(), "BENCH_KUBECONFIG="+kubeconfig, "BENCH_TOKEN_URL="+issuer+"/connect/token", "BENCH_N="+strconv.Itoa(cfg.n), "BENCH_REPORT="+filepath.Join(dir, "baseline"))
	if err := bl.Start(); err != nil {
		return err
	}
	time.Sleep(cfg.ttl) // first round
	bcpu0, bs0 := procCPU(bl.Process.Pid), idp.Stats()
	bw0 := baselineWrites(filepath.Join(dir, "baseline"))
	time.Sleep(window)
	bcpu1, bs1 := procCPU(bl.Process.Pid), idp.Stats()
	bw1 := baselineWrites(filepath.Join(dir, "baseline"))
	_ = bl.Process.Kill()
	_, _ = bl.Process.Wait()
	r.baselineRot = bs1.Issued["refresh_token"] - bs0.Issued["refresh_token"]
	brot := float64(max(r.baselineRot, 1))
	r.baselineCPU1000 = (bcpu1 - bcpu0) / brot * 1000
	r.baselineWrites = float64(bw1-bw0) / brot
	printTable(cfg, r)
	return nil
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> %s\n", fmt.Sprintf(format, args...))
}

func startSandbox(ttl time.Duration) (*cdsandbox.Server, string, string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	issuer := "http://" + l.Addr().String()
	s := cdsandbox.New(cdsandbox.Options{Issuer: issuer, AccessTokenTTL: ttl, Clients: []cdsandbox.Client{
		{ID: clientID, Secret: clientSecret, GrantTypes: []string{"authorization_code"}},
	}})
	go func() { _ = (&http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}).Serve(l) }()
	return s, issuer, l.Addr().String()
}

// seed creates a namespace, the credential and n grants with their refresh tokens.
func seed(ctx context.Context, k8s client.Client, idp *cdsandbox.Server, ns, issuer string, n int) error {
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "login-client", Labels: map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeClient}},
			StringData: map[string]string{"client_id": clientID, "client_secret": clientSecret}},
		&cdv1.CDCredential{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "login"},
			Spec: cdv1.CDCredentialSpec{Flow: cdv1.FlowAuthorizationCode, ClientSecretRef: cdv1.ClientSecretReference{Name: "login-client"}, Issuer: issuer}},
	}
	for _, o := range objs {
		if err := k8s.Create(ctx, o); err != nil {
			return err
		}
	}
	return parallel(n, func(i int) error {
		name := fmt.Sprintf("g%05d", i)
		rt := idp.SeedGrant(clientID, name, []string{"offline_access"})
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-refresh", Labels: map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeRefreshToken}},
			StringData: map[string]string{"refresh_token": rt}}
		if err := k8s.Create(ctx, s); err != nil {
			return err
		}
		return k8s.Create(ctx, &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: cdv1.CDUserGrantSpec{
			CredentialRef: cdv1.CredentialReference{Name: "login"}, RefreshTokenSecretRef: cdv1.RefreshTokenSecretReference{Name: name + "-refresh"}}})
	})
}

// seedBaseline creates n refresh-token Secrets for the baseline loop.
func seedBaseline(ctx context.Context, k8s client.Client, idp *cdsandbox.Server, n int) error {
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: baselineNS}}); err != nil {
		return err
	}
	return parallel(n, func(i int) error {
		name := fmt.Sprintf("b%05d", i)
		rt := idp.SeedGrant(clientID, name, []string{"offline_access"})
		return k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: baselineNS, Name: name + "-refresh"}, StringData: map[string]string{"refresh_token": rt}})
	})
}

func waitRotated(ctx context.Context, k8s client.Client, ns string, n int, rotations int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		list := &cdv1.CDUserGrantList{}
		if err := k8s.List(ctx, list, client.InNamespace(ns)); err != nil {
			return err
		}
		done := 0
		for _, g := range list.Items {
			if g.Status.RotationCount >= rotations {
				done++
			}
		}
		if done >= n {
			return nil
		}
		time.Sleep(500 * time.Millisecond) // polling the API server's state
	}
	return fmt.Errorf("grants did not all get a token within %s", timeout)
}

func unrelatedSecrets(ctx context.Context, k8s client.Client, n int) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "unrelated"}}
	if err := k8s.Create(ctx, ns); err != nil {
		return err
	}
	payload := strings.Repeat("x", 1024)
	return parallel(n, func(i int) error {
		return k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "unrelated", Name: fmt.Sprintf("s%06d", i)}, StringData: map[string]string{"data": payload}})
	})
}

// parallel runs fn for 0..n-1 on 32 workers.
func parallel(n int, fn func(int) error) error {
	jobs, errs := make(chan int), make(chan error, 32)
	for range 32 {
		go func() {
			var first error
			for i := range jobs {
				if err := fn(i); err != nil && first == nil {
					first = err
				}
			}
			errs <- first
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	var first error
	for range 32 {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func freeAddr() string {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	return l.Addr().String()
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
