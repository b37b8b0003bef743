package manager

import (
	"context"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// fakeSyncer is a cache that has synced or not, and counts how often it was asked.
type fakeSyncer struct {
	synced atomic.Bool
	asked  atomic.Int32
}

func (f *fakeSyncer) WaitForCacheSync(ctx context.Context) bool {
	f.asked.Add(1)
	if f.synced.Load() {
		return true
	}
	<-ctx.Done()
	return false
}

// A replica is Ready once its cache has synced, and stays Ready: the probe must neither
// pass before (the callback would read an empty cache) nor turn back after (a leader's
// controllers starting informers of their own would take it out of the Service).
func TestReadinessWaitsForTheCacheToSync(t *testing.T) {
	cache := &fakeSyncer{}
	check := cacheSynced(cache)
	probe := func() error { return check(httptest.NewRequest("GET", "/readyz", nil)) }

	if err := probe(); err != errCacheNotSynced {
		t.Fatalf("before the cache synced: %v, want %v", err, errCacheNotSynced)
	}
	cache.synced.Store(true)
	if err := probe(); err != nil {
		t.Fatalf("once the cache synced: %v, want Ready", err)
	}
	cache.synced.Store(false) // a newly started informer still listing
	asked := cache.asked.Load()
	if err := probe(); err != nil {
		t.Errorf("after the cache had synced once: %v, want Ready", err)
	}
	if cache.asked.Load() != asked {
		t.Errorf("the cache was asked again once it had synced")
	}
}
