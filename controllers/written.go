package controllers

import (
	"sync"
	"time"

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
// from a freshly listed cache, so this starts empty.
type writtenFailures struct{ m sync.Map } // types.UID -> writtenFailure

type writtenFailure struct {
	failure *rotation.Failure // nil: the memory was cleared (a success)
	at      time.Time
	key     types.NamespacedName
}

// note records what a successful status write of obj stored.
func (w *writtenFailures) note(obj client.Object, s *cdv1.FailureStatus, now time.Time) {
	w.m.Store(obj.GetUID(), writtenFailure{failure: fromFailureStatus(s), at: now, key: client.ObjectKeyFromObject(obj)})
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

// current is the newer of the failure memory in the cached status and the one this
// process last wrote.
func (w *writtenFailures) current(uid types.UID, cached *cdv1.FailureStatus) *rotation.Failure {
	fromCache := fromFailureStatus(cached)
	v, ok := w.m.Load(uid)
	if !ok {
		return fromCache
	}
	written := v.(writtenFailure)
	switch {
	case written.failure == nil && (fromCache == nil || !fromCache.Time.After(written.at)):
		return nil // cleared after the failure the cache still shows
	case written.failure != nil && (fromCache == nil || fromCache.Time.Before(written.failure.Time) ||
		(fromCache.Time.Equal(written.failure.Time) && fromCache.Attempts < written.failure.Attempts)):
		return written.failure
	}
	return fromCache
}
