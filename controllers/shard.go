package controllers

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// A sharded manager's cache holds only the CRs its selector matches. A CR relabelled out
// of it (a typo, a retired shard) leaves that cache as if deleted, and no other shard may
// select it: nobody would renew its token, while its status went on saying Ready=True
// and its expiry series vanished with the cache entry. The shard it left says so on the
// CR; a shard that selects it corrects that at once (notInShard).

// reportLeftShard sets Ready=Unknown NotInShard on a CR this manager's cache no longer
// holds although it still exists at the API server without matching shard. It runs on
// the cache's "deleted" only, reads the CR around the cache, and writes only over the
// version it read: a shard that took the CR over in between wins.
func reportLeftShard(ctx context.Context, reader client.Reader, c client.Client, shard labels.Selector, key types.NamespacedName, obj client.Object, conditions func() *[]metav1.Condition, now time.Time) error {
	if shard == nil || shard.Empty() {
		return nil
	}
	if err := reader.Get(ctx, key, obj); err != nil {
		return client.IgnoreNotFound(err) // deleted indeed
	}
	if !obj.GetDeletionTimestamp().IsZero() || shard.Matches(labels.Set(obj.GetLabels())) {
		return nil // going, or back in the shard: the cache brings it back
	}
	ready := meta.FindStatusCondition(*conditions(), cdv1.ReadyCondition)
	if ready != nil && ready.Reason == cdv1.NotInShardReason {
		return nil
	}
	before := obj.DeepCopyObject().(client.Object)
	meta.SetStatusCondition(conditions(), metav1.Condition{
		Type:               cdv1.ReadyCondition,
		Status:             metav1.ConditionUnknown,
		Reason:             cdv1.NotInShardReason,
		Message:            "The labels no longer match this manager's shard (" + shard.String() + "): unless another manager's --shard-label-selector selects it, nothing renews its token",
		ObservedGeneration: obj.GetGeneration(),
		LastTransitionTime: metav1.NewTime(now),
	})
	return c.Status().Patch(ctx, obj, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
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
