package controllers

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// goingBeforeRequest reports whether the namespace of a CR whose output Secret does not
// exist is being deleted, before any token is requested for it: the namespace controller
// deletes Secrets and CRs at once, the Secrets (no finalizer) often first, and the API
// server refuses every create meanwhile,
// so a token requested then (a customer's refresh token spent) would only have its output
// refused. The CR is about to go, so the pass reports nothing.
//
// A namespace a create was refused in lately answers from memory. Otherwise only a CR
// that had a token (hadToken: its output was deleted, as in a namespace's sweep) asks the
// API server: a new one, each of a cold start's thousands, has no output to lose, and its
// first pass costs no read past the cache; its create's refusal, if any, is remembered.
func goingBeforeRequest(ctx context.Context, reader client.Reader, recent *recently, ns string, hadToken bool, now time.Time) (bool, error) {
	if recent.has(ns, now) {
		return true, nil
	}
	if !hadToken {
		return false, nil
	}
	return namespaceGoing(ctx, reader, ns)
}

// namespaceGoing reports whether namespace ns is being deleted, as the API server says
// (the cache holds no namespaces).
//
// A namespace that cannot be read (not found, or a manager whose RBAC predates this read)
// is taken for a live one: the create's refusal still says so (refusedAsTerminating).
func namespaceGoing(ctx context.Context, reader client.Reader, ns string) (bool, error) {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	err := reader.Get(ctx, types.NamespacedName{Name: ns}, m)
	if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if m.DeletionTimestamp.IsZero() {
		return false, nil
	}
	ctrl.LoggerFrom(ctx).Info("Not requesting a token: the namespace is being deleted")
	return true, nil
}

// refusedAsTerminating reports whether the API server refused a create because the
// namespace is being deleted (the NamespaceLifecycle admission plugin). Such a refusal is
// final: the CR goes with its namespace, so its token is dropped, not written again, and
// no failure is reported on a CR that is about to go.
func refusedAsTerminating(err error) bool {
	return apierrors.IsForbidden(err) && apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause)
}

// recently remembers names until a time: the namespaces a create was refused in as being
// deleted (refusedAsTerminating), so the other CRs of a namespace being swept request no
// token and read nothing to learn it; the grants whose refresh token a deletion pass
// revoked and deleted, so a pass run again before the finalizer's removal is seen does
// not take the Secret it deleted for one deleted first. The zero value is empty.
//
// A name whose time is past goes when it is looked up, and all of them at once at the
// first mark or lookup once every name held at the last such sweep is past: a burst of
// thousands of deletions leaves nothing behind a lifetime later, whether or not another
// comes, and neither a mark nor a lookup scans the memory on each call.
type recently struct {
	mu    sync.Mutex
	until map[string]time.Time
	// sweep is when the names whose time is past are next dropped together: the latest
	// time held at the last sweep, or the first mark's; zero when nothing is held.
	sweep time.Time
}

// mark remembers name until until.
func (t *recently) mark(name string, now, until time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expire(now)
	if t.until == nil {
		t.until = map[string]time.Time{}
	}
	if t.sweep.IsZero() {
		t.sweep = until
	}
	t.until[name] = until
}

func (t *recently) has(name string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expire(now)
	until, ok := t.until[name]
	if ok && !now.Before(until) {
		delete(t.until, name)
		return false
	}
	return ok
}

// expire drops every name whose time is past once the sweep is due, and sets the next.
func (t *recently) expire(now time.Time) {
	if t.sweep.IsZero() || now.Before(t.sweep) {
		return
	}
	t.sweep = time.Time{}
	for n, u := range t.until {
		switch {
		case !now.Before(u):
			delete(t.until, n)
		case u.After(t.sweep):
			t.sweep = u
		}
	}
}

// terminatingRemembered is how long a namespace seen being deleted is remembered: one of
// that name created again afterwards has its CRs served within a minute.
const terminatingRemembered = time.Minute
