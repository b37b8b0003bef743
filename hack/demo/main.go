// Command demo runs the whole product on this machine: a local control plane (envtest's
// kube-apiserver and etcd), the Central Dispatch sandbox identity server, and the real
// manager binary. It applies the samples, logs a demo customer in through the real
// authorization-code exchange, reproduces the incident (the authorization-code client
// used for client credentials), shows what a platform team would look at while tokens
// rotate, and exits 0 only if everything it showed worked. `make demo` runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
)

const namespace = "demo"

func main() {
	managerBin := flag.String("manager", "bin/manager", "the manager binary to run")
	flag.Parse()
	seconds := envInt("DEMO_SECONDS", 60)
	ttl := time.Duration(envInt("DEMO_TOKEN_SECONDS", 15)) * time.Second
	if err := run(*managerBin, time.Duration(seconds)*time.Second, ttl); err != nil {
		fmt.Printf("\nDEMO FAILED: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("\nDemo finished: everything shown above worked. Nothing is left running.")
}

func run(managerBin string, duration, ttl time.Duration) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	step(1, "Starting a local control plane (kube-apiserver and etcd from ./bin) with the CRDs")
	env := &envtest.Environment{CRDDirectoryPaths: []string{"config/crd/bases"}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("starting the control plane (run via `make demo`, which provides the binaries): %w", err)
	}
	defer func() { _ = env.Stop() }()
	k8s, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "cd-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		return err
	}

	idp, stopIdP, err := startSandbox(ttl)
	if err != nil {
		return err
	}
	defer stopIdP()

	step(3, "Starting the operator as a process: %s --kubeconfig <demo kubeconfig> --allowed-token-hosts %s", managerBin, idp.host)
	stopManager, err := startManager(ctx, managerBin, kubeconfig, idp.host, dir)
	if err != nil {
		return err
	}
	defer stopManager()

	step(4, "Applying config/samples (pointed at the sandbox) and the incident's mistake")
	if err := applySamples(ctx, k8s, idp.url); err != nil {
		return err
	}

	step(5, "Logging the demo customer in at the sandbox (authorization-code exchange) to seed CDUserGrant acme")
	if err := seedGrant(ctx, k8s, idp); err != nil {
		return err
	}

	step(6, "Watching for %s while tokens (lifetime %s) are renewed", duration, ttl)
	if err := watch(ctx, cfg, k8s, duration); err != nil {
		return err
	}

	step(7, "Checking that everything shown worked")
	return check(ctx, k8s, idp)
}

func step(n int, format string, args ...any) {
	fmt.Printf("\n==> [%d/7] %s\n", n, fmt.Sprintf(format, args...))
}

// demoIdP is the running sandbox.
type demoIdP struct {
	*cdsandbox.Server
	url, host string
}

func startSandbox(ttl time.Duration) (demoIdP, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return demoIdP{}, nil, err
	}
	host := l.Addr().String()
	url := "http://" + host
	step(2, "Starting the Central Dispatch sandbox at %s (one client per flow, single-use refresh tokens)", url)
	s := cdsandbox.New(cdsandbox.Options{
		Issuer:         url,
		Clients:        demoClients(),
		AccessTokenTTL: ttl,
		Logger:         log.New(os.Stdout, "    sandbox: ", 0),
	})
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return demoIdP{Server: s, url: url, host: host}, func() { _ = srv.Close() }, nil
}

// startManager runs the real manager binary and returns a func that stops it with
// SIGTERM (and waits), as Kubernetes would.
func startManager(ctx context.Context, bin, kubeconfig, host, dir string) (func(), error) {
	logPath := filepath.Join(dir, "manager.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--kubeconfig", kubeconfig, "--allowed-token-hosts", host,
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--graceful-shutdown-timeout", "10s",
		"--key-secret", "default/cd-credentials-operator-key")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s (run `make demo`, which builds it): %w", bin, err)
	}
	fmt.Printf("    manager pid %d, logs in %s while the demo runs\n", cmd.Process.Pid, logPath)
	return func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
		}
		_ = logFile.Close()
	}, nil
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// get fetches a URL with an optional bearer authorization and returns the status code.
func get(url, authorization string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

var errCheck = errors.New("check failed")

func checkf(ok bool, format string, args ...any) error {
	mark := "ok  "
	if !ok {
		mark = "FAIL"
	}
	fmt.Printf("    [%s] %s\n", mark, fmt.Sprintf(format, args...))
	if !ok {
		return errCheck
	}
	return nil
}
