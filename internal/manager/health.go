package manager

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/healthz"
)

// cacheSyncWait bounds how long one readiness probe waits for the cache: the kubelet
// gives a probe a second by default, and a cache that has synced answers at once.
const cacheSyncWait = 100 * time.Millisecond

var errCacheNotSynced = errors.New("the manager's cache has not synced yet")

// syncer is the part of the manager's cache the readiness check asks.
type syncer interface {
	WaitForCacheSync(ctx context.Context) bool
}

// cacheSynced is the readiness check: a replica is Ready once its cache has synced. The
// callback Service sends customers' logins to any Ready replica, leader or not, and the
// callback reads the client Secret through the cache (the grant and its CDCredential
// through the API server): before it has synced that read fails (the cache not
// started) or waits out the login request. Every replica syncs its cache
// whether it leads or not (the manager starts caches before the leader election), so
// standbys become Ready and serve the callback. Once synced a replica stays Ready: an
// informer the leader starts later (its controllers' watches) must not take it out of
// the Service while that informer lists.
func cacheSynced(c syncer) healthz.Checker {
	var synced atomic.Bool
	return func(req *http.Request) error {
		if synced.Load() {
			return nil
		}
		ctx, cancel := context.WithTimeout(req.Context(), cacheSyncWait)
		defer cancel()
		if !c.WaitForCacheSync(ctx) {
			return errCacheNotSynced
		}
		synced.Store(true)
		return nil
	}
}
