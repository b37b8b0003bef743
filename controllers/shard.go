package controllers

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/metrics"
)

// A sharded manager's cache holds only the CRs its selector matches. A CR relabelled out
// of it (a typo, a retired shard) leaves that cache as if deleted, and no other shard may
// select it: nobody would renew its token, while its status went on saying Ready=True
// and its expiry series vanished with the cache entry. The shard it left says so on the
// CR; a shard that selects it corrects that at once (notInShard).

// leftShardRecheck is how often the manager a CR left looks at it again, to go on
// publishing its series while no shard selects it.
const leftShardRecheck = time.Minute

// reportLeftShard sets Ready=Unknown NotInShard on a CR this manager's cache no longer
// holds although it still exists at the API server without matching shard. It runs on
// the cache's "deleted", reads the CR around the cache, and writes only over the version
// it read: a shard that took the CR over in between wins. Then left remembers the CR,
// and publishes its series (metrics: they went with the cache entry, and with them every
// alert on it), looked at again every leftShardRecheck until a shard serves it (its
// Ready replaced), it is back in this shard, or deleted.
func reportLeftShard(ctx context.Context, reader client.Reader, c client.Client, shard labels.Selector, key types.NamespacedName, cr leftCR, left *LeftShard, now time.Time) (ctrl.Result, error) {
	if shard == nil || shard.Empty() {
		return ctrl.Result{}, nil
	}
	obj := cr.obj
	if err := reader.Get(ctx, key, obj); err != nil {
		if apierrors.IsNotFound(err) {
			left.forget(cr.kind, key)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err) // deleted indeed
	}
	if !obj.GetDeletionTimestamp().IsZero() || shard.Matches(labels.Set(obj.GetLabels())) {
		left.forget(cr.kind, key)
		return ctrl.Result{}, nil // going, or back in the shard: the cache brings it back
	}
	ready := meta.FindStatusCondition(*cr.conditions(), cdv1.ReadyCondition)
	switch {
	case ready != nil && ready.Reason == cdv1.NotInShardReason:
		// Said already, and no shard has replaced it.
	case left.tracks(cr.kind, key):
		// Said by this manager, and replaced since: another shard serves it.
		left.forget(cr.kind, key)
		return ctrl.Result{}, nil
	default:
		before := obj.DeepCopyObject().(client.Object)
		meta.SetStatusCondition(cr.conditions(), metav1.Condition{
			Type:               cdv1.ReadyCondition,
			Status:             metav1.ConditionUnknown,
			Reason:             cdv1.NotInShardReason,
			Message:            "The labels no longer match this manager's shard (" + shard.String() + "): unless another manager's --shard-label-selector selects it, nothing renews its token",
			ObservedGeneration: obj.GetGeneration(),
			LastTransitionTime: metav1.NewTime(now),
		})
		if err := c.Status().Patch(ctx, obj, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, err
		}
	}
	left.track(cr.kind, key, cr.series())
	return ctrl.Result{RequeueAfter: leftShardRecheck}, nil
}

// leftCR is a CR as reportLeftShard reads it: the object to read it into, its kind, its
// conditions to write, and the per-CR series it says.
type leftCR struct {
	obj        client.Object
	kind       string
	conditions func() *[]metav1.Condition
	series     func() metrics.CR
}

func leftGrant() leftCR {
	g := &cdv1.CDUserGrant{}
	return leftCR{g, kindGrant, func() *[]metav1.Condition { return &g.Status.Conditions }, func() metrics.CR { return metrics.GrantCR(g) }}
}

func leftCredential() leftCR {
	c := &cdv1.CDCredential{}
	return leftCR{c, kindCredential, func() *[]metav1.Condition { return &c.Status.Conditions }, func() metrics.CR { return metrics.CredentialCR(c) }}
}

// LeftShard remembers the CRs this manager said NotInShard about, while no shard serves
// them, with their per-CR series. Safe for concurrent use; a nil LeftShard remembers
// nothing.
type LeftShard struct {
	mu  sync.Mutex
	crs map[leftKey]metrics.CR
}

type leftKey struct {
	kind string
	key  types.NamespacedName
}

func (l *LeftShard) track(kind string, key types.NamespacedName, cr metrics.CR) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.crs == nil {
		l.crs = map[leftKey]metrics.CR{}
	}
	l.crs[leftKey{kind, key}] = cr
}

func (l *LeftShard) tracks(kind string, key types.NamespacedName) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.crs[leftKey{kind, key}]
	return ok
}

// forget drops a CR: deleted, served by a shard, or back in this manager's cache.
func (l *LeftShard) forget(kind string, key types.NamespacedName) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.crs, leftKey{kind, key})
}

// Source yields the remembered CRs' series, for the leader to publish beside its
// cache's.
func (l *LeftShard) Source() metrics.Source {
	return func(yield func(metrics.CR) bool) {
		if l == nil {
			return
		}
		l.mu.Lock()
		crs := slices.Collect(maps.Values(l.crs))
		l.mu.Unlock()
		for _, cr := range crs {
			if !yield(cr) {
				return
			}
		}
	}
}

// notInShard lets through the status write of reportLeftShard, so a shard that selects
// the CR (its new one) reconciles it and replaces that Ready at once, even when its own
// first pass came before the write and found nothing to change.
var notInShard = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		var conditions []metav1.Condition
		switch o := e.ObjectNew.(type) {
		case *cdv1.CDUserGrant:
			conditions = o.Status.Conditions
		case *cdv1.CDCredential:
			conditions = o.Status.Conditions
		}
		ready := meta.FindStatusCondition(conditions, cdv1.ReadyCondition)
		return ready != nil && ready.Reason == cdv1.NotInShardReason
	},
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
}
