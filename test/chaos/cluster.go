package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Cluster is envtest's etcd and kube-apiserver, with an API server that can be stopped
// and started again on the same etcd, port and certificates (a control-plane outage).
type Cluster struct {
	env        *envtest.Environment
	Config     *rest.Config
	Kubeconfig string
	Timeline   *Timeline
}

// StartCluster starts etcd and kube-apiserver from KUBEBUILDER_ASSETS with the CRDs in
// crdDir, and writes an admin kubeconfig into dir.
func StartCluster(dir, crdDir string, tl *Timeline) (*Cluster, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return nil, fmt.Errorf("KUBEBUILDER_ASSETS is not set: run `make chaos` or `make test`, which build kube-apiserver and etcd into ./bin")
	}
	certs := filepath.Join(dir, "apiserver-certs")
	if err := os.MkdirAll(certs, 0o700); err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		CRDDirectoryPaths: []string{crdDir}, ErrorIfCRDPathMissing: true,
		// A loaded machine can take long to drain the API server; an outage need not wait.
		ControlPlaneStopTimeout: 5 * time.Second,
		// Starting again on an etcd that holds an hour of rotations takes longer than
		// envtest's 20 s on a loaded machine.
		ControlPlaneStartTimeout: 2 * time.Minute,
	}
	// A directory of our own survives Stop (envtest removes one it made up), so the
	// restarted API server serves the certificate the kubeconfigs already trust.
	env.ControlPlane.GetAPIServer().CertDir = certs
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting envtest: %w", err)
	}
	c := &Cluster{env: env, Config: cfg, Kubeconfig: filepath.Join(dir, "kubeconfig"), Timeline: tl}
	if err := os.WriteFile(c.Kubeconfig, env.KubeConfig, 0o600); err != nil {
		_ = env.Stop()
		return nil, err
	}
	return c, nil
}

// StopAPIServer stops kube-apiserver (SIGTERM, then SIGKILL after 5 s); etcd keeps
// running. It returns once the server no longer answers.
func (c *Cluster) StopAPIServer(ctx context.Context) error {
	c.Timeline.apiStopped(time.Now())
	_ = c.env.ControlPlane.GetAPIServer().Stop() // a timeout means it was SIGKILLed
	return c.poll(ctx, func(err error) bool { return err != nil })
}

// StartAPIServer starts kube-apiserver again and waits until it answers, trying three
// times: the run cannot go on without it.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	var err error
	for range 3 {
		if err = c.env.ControlPlane.GetAPIServer().Start(); err == nil {
			err = c.waitHealthy(ctx)
		}
		if err == nil {
			c.Timeline.apiStarted(time.Now())
			return nil
		}
		c.Timeline.note(fmt.Sprintf("restarting kube-apiserver: %v", err))
		_ = c.env.ControlPlane.GetAPIServer().Stop()
	}
	return fmt.Errorf("restarting kube-apiserver: %w", err)
}

func (c *Cluster) waitHealthy(ctx context.Context) error {
	return c.poll(ctx, func(err error) bool { return err == nil })
}

// poll asks /readyz until done(the answer's error) holds. Each request gives up after a
// second: a server on its way down may accept a connection and never answer.
func (c *Cluster) poll(ctx context.Context, done func(error) bool) error {
	cfg := rest.CopyConfig(c.Config)
	cfg.Timeout = time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return done(err), nil
	})
}

// Stop stops the control plane.
func (c *Cluster) Stop() error { return c.env.Stop() }
