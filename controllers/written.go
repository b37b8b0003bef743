package controllers

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
)

// writeMemory remembers, per CR, a status value this process last wrote, for as long
// as the informer's cache may not hold that write. The next pass reads the CR from the
// cache, which may lag behind the write; a memory tells it what status already says.
// Status stays what survives restarts: a restarted process starts from a freshly
// listed cache, so the memory starts empty. An entry goes once the cache holds the
// write it records, so the memory does not keep one entry per CR.
//
// Entries are keyed by name and hold the UID they were written for: a CR deleted and
// created again under its name (kubectl replace --force, Argo CD Replace=true) may have
// no pass of its old UID again, and its old entry is replaced or forgotten
// (forgetOthers) under the name, with no scan of the memory.
type writeMemory[T comparable] struct{ m sync.Map } // types.NamespacedName -> memoryEntry[T]

type memoryEntry[T comparable] struct {
	value T
	uid   types.UID
	// resourceVersion is the CR's after the write, as the API server answered it.
	resourceVersion string
}

// store records v as written to obj's status; written is the answer's metadata (the
// CR's new resourceVersion).
func (w *writeMemory[T]) store(obj client.Object, written metav1.Object, v T) {
	w.m.Store(client.ObjectKeyFromObject(obj), memoryEntry[T]{value: v, uid: obj.GetUID(), resourceVersion: written.GetResourceVersion()})
}

// load is the entry kept for obj: under its name and for its UID.
func (w *writeMemory[T]) load(obj client.Object) (memoryEntry[T], bool) {
	e, ok := w.m.Load(client.ObjectKeyFromObject(obj))
	if !ok || e.(memoryEntry[T]).uid != obj.GetUID() {
		return memoryEntry[T]{}, false
	}
	return e.(memoryEntry[T]), true
}

// has tells whether an entry is kept for obj.
func (w *writeMemory[T]) has(obj client.Object) bool {
	_, ok := w.load(obj)
	return ok
}

// recall is the value this process last wrote to cached's status while the cache may
// not show it; ok is false when nothing is remembered, or when cached is that very
// write (the entry then goes).
func (w *writeMemory[T]) recall(cached client.Object) (v T, ok bool) {
	r, ok := w.load(cached)
	if !ok {
		return v, false
	}
	if r.resourceVersion != "" && cached.GetResourceVersion() == r.resourceVersion {
		// Not a later version, whose order resourceVersions do not promise; a later
		// write stores anew.
		w.m.CompareAndDelete(client.ObjectKeyFromObject(cached), r)
		return v, false
	}
	return r.value, true
}

// forget drops what was remembered for a deleted CR.
func (w *writeMemory[T]) forget(key types.NamespacedName) {
	w.m.Delete(key)
}

// forgetOthers drops what was remembered under key for a UID other than keep: a CR of
// that name deleted and created again before a pass saw it gone.
func (w *writeMemory[T]) forgetOthers(key types.NamespacedName, keep types.UID) {
	if e, ok := w.m.Load(key); ok && e.(memoryEntry[T]).uid != keep {
		w.m.CompareAndDelete(key, e)
	}
}

// writtenFailures remembers the failure memory this process last wrote to status.
// Acting on an older memory the cache still holds would send a request that was just
// refused for good once more (a rejected refresh token a second time). Only CRs with a
// failure memory on either side of a write have an entry: a routine write (no failure
// before or after) leaves none.
//
// An entry also keeps the words the failure was reported with. status.lastFailure holds
// only its reason, and a pass that acts on the remembered failure before the cache shows
// the conditions written with it would otherwise word them anew from the reason alone,
// and its status write would replace what the refusal said to do ("use the
// client-credentials credential set", "the customer must log in again"). Kept here and
// not in status: status already holds the words in its conditions, a copy in
// lastFailure would add up to a kilobyte to each failing CR (of 10,000) for a window of
// milliseconds, and the entry goes once the cache holds the write.
type writtenFailures struct{ writeMemory[writtenFailure] }

type writtenFailure struct {
	failure *rotation.Failure // nil: the memory was cleared (a success)
	at      time.Time
	said    failureWords
	// replaced is the latest time of a failure memory this process's writes replaced:
	// the one each write's pass started from, and the ones this process wrote before it.
	// A cached memory dated no later is one of those, or older, however far after the
	// write its time lies (stamped by a clock ahead): the cache has not caught up.
	replaced time.Time
}

// failureWords are the messages a failure was reported with when it happened: Ready's
// (and Stalled's or Reconciling's, which say the same) and FlowMisuse's for a refused
// grant type. Empty when unknown.
type failureWords struct{ ready, misuse string }

// note records what a successful status write of obj stored (after) over the cached
// status it started from (before), and conds, the conditions it wrote; written is the
// answer's metadata.
func (w *writtenFailures) note(obj client.Object, written metav1.Object, before, after *cdv1.FailureStatus, conds []metav1.Condition, now time.Time) {
	if before == nil && after == nil && !w.has(obj) {
		// Any copy the cache may show says "no failure", as the write did. An entry for
		// an earlier write of a failure is brought up to date instead.
		return
	}
	e := writtenFailure{failure: fromFailureStatus(after), at: now}
	e.said = w.words(obj, e.failure, fromFailureStatus(before), conds)
	e.replaced = latest(time.Time{}, fromFailureStatus(before))
	if prev, ok := w.load(obj); ok {
		if prev.value.replaced.After(e.replaced) {
			e.replaced = prev.value.replaced
		}
		e.replaced = latest(e.replaced, prev.value.failure)
	}
	w.store(obj, written, e)
}

// latest is the later of t and f's time (t when f is nil).
func latest(t time.Time, f *rotation.Failure) time.Time {
	if f != nil && f.Time.After(t) {
		return f.Time
	}
	return t
}

// words are the messages to remember with failure f, written with conds: the words of
// the pass that recorded f, never those of a later pass that only kept it (a deferred
// edit words Ready its own way). prev is the memory the pass started from.
func (w *writtenFailures) words(obj client.Object, f, prev *rotation.Failure, conds []metav1.Condition) failureWords {
	if f == nil {
		return failureWords{}
	}
	if e, ok := w.load(obj); ok && sameFailure(e.value.failure, f) {
		return e.value.said
	}
	if sameFailure(prev, f) {
		return failureWords{} // recorded before; the cache holds its words
	}
	var said failureWords
	if c := meta.FindStatusCondition(conds, cdv1.ReadyCondition); c != nil && c.Reason == f.Reason {
		said.ready = c.Message
	}
	if c := meta.FindStatusCondition(conds, cdv1.FlowMisuseCondition); c != nil && c.Status == metav1.ConditionTrue && c.Reason == cdv1.GrantTypeNotAllowedReason {
		said.misuse = c.Message
	}
	return said
}

// sameFailure tells whether a and b record the same failed attempt.
func sameFailure(a, b *rotation.Failure) bool {
	return a != nil && b != nil && a.Request == b.Request && a.Reason == b.Reason && a.Time.Equal(b.Time) && a.Attempts == b.Attempts
}

// current is the newer of the failure memory in cached's status and the one this
// process last wrote. A cached memory this process's writes replaced is older, whatever
// its time says: one stamped by a clock ahead lies after the write that cleared it, and
// would otherwise come back (and be counted on) until the cache caught up.
func (w *writtenFailures) current(cached client.Object, memory *cdv1.FailureStatus) *rotation.Failure {
	fromCache := fromFailureStatus(memory)
	written, ok := w.recall(cached)
	switch {
	case !ok:
		return fromCache
	case fromCache == nil || !fromCache.Time.After(written.replaced):
		return written.failure
	case written.failure == nil && !fromCache.Time.After(written.at):
		return nil // cleared after the failure the cache still shows
	case written.failure != nil && (fromCache.Time.Before(written.failure.Time) ||
		(fromCache.Time.Equal(written.failure.Time) && fromCache.Attempts < written.failure.Attempts)):
		return written.failure
	}
	return fromCache
}

// said is what failure f was reported with when this process wrote it and cached may
// not show those conditions yet; empty when the cache holds the write, or f is another
// failure.
func (w *writtenFailures) said(cached client.Object, f *rotation.Failure) failureWords {
	if written, ok := w.recall(cached); ok && sameFailure(written.failure, f) {
		return written.said
	}
	return failureWords{}
}

// writtenLinks remembers the authorization URL this process last wrote to a grant's
// status. A pass on a cache that has not seen the write would find no link (or the one
// before) and mint another, so the link a customer was just given would change under
// them. Only grants whose link changed, or that still have an entry, are noted. The
// remembered link may since have been spent by a login that failed (the callback then
// clears it from status): the Authorizer refuses a link whose state the grant records as
// used, so such a link is never shown again.
type writtenLinks struct{ writeMemory[string] }

// note records the link a successful status write of grant stored (after) over the
// cached one (before). A write that shows no link ends the memory: a grant that needs no
// customer login is not kept, and one that needs a login again gets a new link anyway
// (a link the customer spent is never offered again).
func (w *writtenLinks) note(grant client.Object, written metav1.Object, before, after string) {
	switch {
	case after == "":
		w.m.Delete(client.ObjectKeyFromObject(grant))
	case before != after || w.has(grant):
		w.store(grant, written, after)
	}
}

// current is the link cached's status shows, or the one this process wrote since.
func (w *writtenLinks) current(cached client.Object, shown string) string {
	if link, ok := w.recall(cached); ok {
		return link
	}
	return shown
}
