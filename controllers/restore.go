package controllers

import (
	"bytes"
	"context"
	"maps"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/eventnote"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

// A GitOps tool that re-syncs a refresh-token Secret's data (Flux drift correction with
// force, an ExternalSecret's refresh) sets it back to the token it was seeded with, which
// the operator spent long ago. The live token the Secret held just before is then in no
// object in the cluster: only the update event that replaced it still carries it. The
// grant controller's Secret watch remembers it, for a short while, so the grant's next
// pass can put it back instead of asking the customer to log in again.
const (
	// successorsKept bounds how many Secrets a write-back is remembered for at once. A
	// GitOps tool re-syncing a namespace writes back all its refresh-token Secrets in
	// one go, and the watch notes every one before most of their passes run, so the
	// bound is what one such re-sync may hold without a customer losing a session.
	// Each entry holds one token of at most secrets.MaxValue bytes: at most about 4.3 MiB
	// in all, and nothing once the write-backs are older than successorTTL. Room is made
	// in the namespace that holds the most (makeRoom).
	successorsKept = 1024
	// successorTTL is how long one is remembered: the pass the event enqueues comes at
	// once, or after the workqueue's backoff; a successor older than this is as likely
	// stale as live.
	successorTTL = 5 * time.Minute
)

// successor is the live refresh token a Secret held under key, as the operator wrote it,
// before an update set key to a spent token (over, its rotation.Hash).
type successor struct {
	uid   types.UID
	key   string
	over  string
	token string
	at    time.Time
}

// successors are the live refresh tokens seen replaced by spent ones, by Secret. Only
// update events fill it, and only for a Secret set back to a spent token.
type successors struct {
	mu sync.Mutex
	m  map[types.NamespacedName]successor
}

// note judges one update of a refresh-token Secret: old carried the operator's own last
// write, and cur sets a key of it to a token on cur's spent list, so old's value is the
// live successor. Any other change of data forgets what was remembered for the Secret:
// the remembered token is no longer the one the Secret lost.
func (s *successors) note(old, cur *corev1.Secret, now time.Time) {
	if maps.EqualFunc(old.Data, cur.Data, bytes.Equal) {
		// Every rotation's in-flight mark, and any change of metadata alone: nothing to
		// judge, and nothing hashed or locked on the hot path.
		return
	}
	name := types.NamespacedName{Namespace: cur.Namespace, Name: cur.Name}
	e, ok := writtenBack(old, cur)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok {
		// Every rotation's store comes here: a map delete, and no walk of what is
		// remembered (up to successorsKept entries), which expires on the next write-back
		// or lookup.
		delete(s.m, name)
		return
	}
	s.expire(now)
	if s.m == nil {
		s.m = map[types.NamespacedName]successor{}
	}
	if _, known := s.m[name]; !known && len(s.m) >= successorsKept {
		s.makeRoom()
	}
	e.at = now
	s.m[name] = e
}

// writtenBack finds the key of cur that was set back from the operator's write in old to
// a token the operator spent.
func writtenBack(old, cur *corev1.Secret) (successor, bool) {
	if cur.Labels[cdv1.SecretTypeLabel] != cdv1.SecretTypeRefreshToken || old.UID != cur.UID || !secrets.WrittenByOperator(old) {
		return successor{}, false
	}
	for key, v := range cur.Data {
		was := old.Data[key]
		// A token longer than secrets.MaxValue is one the operator never reads, so never
		// sends: remembering it would only let a forged write-back take memory.
		if len(was) == 0 || len(was) > secrets.MaxValue || bytes.Equal(was, v) || !secrets.Spent(cur, rotation.Hash(string(v))) || secrets.Spent(cur, rotation.Hash(string(was))) {
			continue
		}
		return successor{uid: cur.UID, key: key, over: rotation.Hash(string(v)), token: string(was)}, true
	}
	return successor{}, false
}

// live returns the token to put back into sec, which holds under key the spent token
// hashed spent: remembered for this very Secret (its UID), from the update that wrote
// this token over it, recently, and not spent since. It stays remembered after a
// put-back: a pass reading a cache that has not seen the put-back yet tries it again,
// conflicts, and reads the Secret again; once the operator spends it, it is on the spent
// list and never put back.
func (s *successors) live(sec *corev1.Secret, key, spent string, now time.Time) (string, bool) {
	name := types.NamespacedName{Namespace: sec.Namespace, Name: sec.Name}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now)
	e, ok := s.m[name]
	if !ok || e.uid != sec.UID || e.key != key || e.over != spent || secrets.Spent(sec, rotation.Hash(e.token)) {
		return "", false
	}
	return e.token, true
}

func (s *successors) expire(now time.Time) {
	for name, e := range s.m {
		if now.Sub(e.at) > successorTTL {
			delete(s.m, name)
		}
	}
}

// makeRoom forgets one remembered token: the oldest of the namespace that holds the
// most. Anyone who can write a refresh-token Secret can make its updates look like
// write-backs (the operator's annotations are plain hashes of what the Secret holds), so
// the bound is shared fairly: a tenant flooding forged write-backs fills the memory with
// its own and then evicts its own, and another namespace's live token stays remembered
// until its grant's pass puts it back.
func (s *successors) makeRoom() {
	held := map[string]int{}
	for name := range s.m {
		held[name.Namespace]++
	}
	var drop types.NamespacedName
	var at time.Time
	found := false
	for name, e := range s.m {
		n, most := held[name.Namespace], held[drop.Namespace]
		if !found || n > most || n == most && e.at.Before(at) {
			drop, at, found = name, e.at, true
		}
	}
	delete(s.m, drop)
}

// noticingWriteBacks has next (the mapping of a refresh-token Secret to its grants) see
// every event, after an update has been judged for a write-back (successors.note), so the
// pass it enqueues finds the successor remembered.
func (r *CDUserGrantReconciler) noticingWriteBacks(next handler.EventHandler) handler.EventHandler {
	return handler.Funcs{
		CreateFunc: next.Create,
		DeleteFunc: next.Delete,
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			old, okOld := e.ObjectOld.(*corev1.Secret)
			cur, okNew := e.ObjectNew.(*corev1.Secret)
			if okOld && okNew {
				r.successors.note(old, cur, r.Clock.Now())
			}
			next.Update(ctx, e, q)
		},
		GenericFunc: next.Generic,
	}
}

// putBackTries bounds how often one pass reads a refresh-token Secret again after its
// put-back conflicted: a conflict means someone wrote the Secret meanwhile, and what it
// holds now is decided afresh.
const putBackTries = 3

// putBack writes the live token remembered for s (successors.live) back over the spent
// token hashed spent, with a resourceVersion-guarded update as the operator's own write:
// the spent list, the binding, the opt-in label and any in-flight mark (it was on the
// live token, which the GitOps tool's data-only write left in place) stay. It returns
// nil when nothing is remembered: the spent token stays refused (RefreshTokenSpent).
func (r *CDUserGrantReconciler) putBack(ctx context.Context, grant *cdv1.CDUserGrant, s *corev1.Secret, key, spent string) (*storedToken, error) {
	token, ok := r.successors.live(s, key, spent, r.Clock.Now())
	if !ok {
		return nil, nil
	}
	put := s.DeepCopy()
	secrets.PutBack(put, key, token)
	if err := r.Update(ctx, put); err != nil {
		return nil, err
	}
	r.Recorder.Eventf(eventTarget(grant), nil, corev1.EventTypeWarning, cdv1.RefreshTokenRestoredReason, "Restore", "%s", eventnote.Cut(restoredMessage(s.Name)))
	ctrl.LoggerFrom(ctx).Info("Put the live refresh token back over a spent one written back", "secret", s.Name)
	return &storedToken{secret: put, key: key, value: token, hash: rotation.Hash(token)}, nil
}

// restoredMessage says what the put-back undid, and what keeps it from coming back.
func restoredMessage(secret string) string {
	return "Secret " + secret + " was set back to a refresh token this operator already spent (a GitOps re-sync?); " +
		"the current refresh token, which it held just before, was put back and nothing spent was sent. " +
		"Have the GitOps tool create this Secret once and never re-sync its data (create-only: see the README, Refresh-token Secrets and GitOps): " +
		"after an operator restart the token could not be put back, and the customer would have to log in again"
}
