package controllers

import (
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
)

// writtenFailures remembers, per CR, the failure memory this process last wrote to
// status. The next pass reads the CR from the informer's cache, which may not have
// caught up with that write yet; acting on the older memory it holds would send a
// request that was just refused for good once more (a rejected refresh token a second
// time). Status stays the memory that survives restarts; a restarted process starts
// from a freshly listed cache, so this starts empty. Only CRs with a failure memory on
// either side of a write have an entry, and it goes once the cache holds a write it
// records: a routine write (no failure before or after) leaves none, so the map does
// not hold one entry per CR.
type writtenFailures struct{ m sync.Map } // types.UID -> writtenFailure

type writtenFailure struct {
	failure *rotation.Failure // nil: the memory was cleared (a success)
	at      time.Time
	key     types.NamespacedName
	// resourceVersion is the CR's after the write, as the API server answered it.
	resourceVersion string
}

// note records what a successful status write of obj stored (after) over the cached
// status it started from (before); written is the answer's metadata (the CR's new
// resourceVersion).
func (w *writtenFailures) note(obj client.Object, written metav1.Object, before, after *cdv1.FailureStatus, now time.Time) {
	if before == nil && after == nil {
		// Any copy the cache may show says "no failure", as the write did, unless an
		// earlier write of a failure is still remembered: that entry is brought up to date.
		if _, ok := w.m.Load(obj.GetUID()); !ok {
			return
		}
	}
	w.m.Store(obj.GetUID(), writtenFailure{failure: fromFailureStatus(after), at: now, key: client.ObjectKeyFromObject(obj), resourceVersion: written.GetResourceVersion()})
}

// forget drops what was noted for a deleted CR.
func (w *writtenFailures) forget(key types.NamespacedName) {
	w.m.Range(func(uid, v any) bool {
		if v.(writtenFailure).key == key {
			w.m.Delete(uid)
		}
		return true
	})
}

// current is the newer of the failure memory in cached's status and the one this
// process last wrote.
func (w *writtenFailures) current(cached client.Object, memory *cdv1.FailureStatus) *rotation.Failure {
	fromCache := fromFailureStatus(memory)
	v, ok := w.m.Load(cached.GetUID())
	if !ok {
		return fromCache
	}
	written := v.(writtenFailure)
	switch {
	case written.resourceVersion != "" && cached.GetResourceVersion() == written.resourceVersion:
		// The cache holds this very write: nothing left to remember. (Not a later
		// version, whose order resourceVersions do not promise; a later write notes anew.)
		w.m.CompareAndDelete(cached.GetUID(), v)
		return fromCache
	case written.failure == nil && (fromCache == nil || !fromCache.Time.After(written.at)):
		return nil // cleared after the failure the cache still shows
	case written.failure != nil && (fromCache == nil || fromCache.Time.Before(written.failure.Time) ||
		(fromCache.Time.Equal(written.failure.Time) && fromCache.Attempts < written.failure.Attempts)):
		return written.failure
	}
	return fromCache
}
