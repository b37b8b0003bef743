package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/credops/cd-credentials-operator/internal/manager"
)

// heldReads holds the manager's reads of one resource (its informer's list and watch)
// until released, as a slow or busy API server would.
type heldReads struct {
	rt       http.RoundTripper
	resource string
	released <-chan struct{}
}

func (h heldReads) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/"+h.resource) {
		select {
		case <-h.released:
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	return h.rt.RoundTrip(req)
}

// probe answers the status code of a health endpoint of the manager at addr.
func probe(addr, path string) (int, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestAReplicaIsReadyOnceItsCacheHasSyncedLeaderOrNot: the callback Service sends
// customers' logins to every Ready replica, and the callback reads the grant from the
// manager's cache. A replica whose cache has not synced is alive but not Ready; once it
// has synced it is Ready, though another replica leads (a standby serves the callback
// too).
func TestAReplicaIsReadyOnceItsCacheHasSyncedLeaderOrNot(t *testing.T) {
	ns := newNamespace(t)
	replica := func(health string) manager.Options {
		return manager.Options{
			WatchNamespaces: []string{ns}, HealthProbeBindAddress: health,
			LeaderElection: true, LeaderElectionNamespace: ns, LeaderElectionID: "readiness",
		}
	}
	startManager(t, replica(freeAddr(t)))
	eventually(t, 30*time.Second, "the first replica leading", func() error {
		l := &coordinationv1.Lease{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "readiness"}, l); err != nil {
			return err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			return fmt.Errorf("no holder")
		}
		return nil
	})

	release := make(chan struct{})
	held := rest.CopyConfig(cfg)
	held.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return heldReads{rt: rt, resource: "cdusergrants", released: release}
	})
	health := freeAddr(t)
	startManagerWith(t, held, replica(health))
	// Released before the manager is stopped, should the test end early: a manager
	// still waiting for its cache to sync does not stop.
	releaseReads := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseReads)
	eventually(t, 30*time.Second, "the standby alive", func() error {
		if code, err := probe(health, "/healthz"); err != nil || code != http.StatusOK {
			return fmt.Errorf("/healthz: %d %v", code, err)
		}
		return nil
	})
	// Its CDUserGrant informer is held at its first list: for a few seconds of probes
	// the standby must not be Ready.
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if code, err := probe(health, "/readyz"); err == nil && code == http.StatusOK {
			t.Fatalf("/readyz answered %d before the cache synced: the callback Service would send logins to a replica that cannot read the grants", code)
		}
	}
	releaseReads()
	eventually(t, 30*time.Second, "the standby Ready once its cache synced, another replica leading", func() error {
		if code, err := probe(health, "/readyz"); err != nil || code != http.StatusOK {
			return fmt.Errorf("/readyz: %d %v", code, err)
		}
		return nil
	})
}
