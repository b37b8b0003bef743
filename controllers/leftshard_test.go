package controllers

import (
	"iter"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/metrics"
)

// A CR relabelled out of its manager's shard left that manager's cache, and with it the
// per-CR series every alert reads: a label typo stopped its renewals and nothing said
// so. The manager it left publishes its series, Ready=Unknown NotInShard with its
// expiry, looking at it again every leftShardRecheck, until a shard serves it (Ready
// replaced), it comes back, or it is deleted; a look again writes nothing.
func TestACRThatLeftTheShardIsPublishedUntilAShardServesIt(t *testing.T) {
	w := newWorld(t)
	key := types.NamespacedName{Namespace: "ns", Name: "pricing"}
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	expires := w.cred("pricing").Status.ExpiresAt
	c := w.cred("pricing")
	w.update(c, func() { c.Labels = map[string]string{"shard": "c"} })
	shard := labels.SelectorFromSet(labels.Set{"shard": "a"})
	left := &LeftShard{}
	look := func() (time.Duration, []metrics.CR) {
		t.Helper()
		res, err := reportLeftShard(t.Context(), w.client, w.client, shard, key, leftCredential(), left, w.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		return res.RequeueAfter, slices.Collect(iter.Seq[metrics.CR](left.Source()))
	}

	w.takeWrites()
	requeue, published := look()
	wantCondition(t, w.cred("pricing").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionUnknown, cdv1.NotInShardReason)
	if requeue != leftShardRecheck || len(published) != 1 {
		t.Fatalf("requeue %s, published %d CRs; want %s and pricing", requeue, len(published), leftShardRecheck)
	}
	ready := meta.FindStatusCondition(published[0].Conditions, cdv1.ReadyCondition)
	if p := published[0]; p.Kind != "CDCredential" || p.Name != "pricing" || ready == nil || ready.Reason != cdv1.NotInShardReason || !p.ExpiresAt.Equal(expires) {
		t.Errorf("published %+v, want pricing with Ready NotInShard and its expiry %s", p, expires)
	}

	w.takeWrites()
	if requeue, published := look(); requeue != leftShardRecheck || len(published) != 1 {
		t.Errorf("looked at again: requeue %s, %d published; want it still published", requeue, len(published))
	}
	if writes := w.takeWrites(); len(writes) != 0 {
		t.Errorf("a look again wrote %v", writes)
	}

	// Another manager's shard selects it and replaces Ready.
	c = w.cred("pricing")
	meta.SetStatusCondition(&c.Status.Conditions, metav1.Condition{Type: cdv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: cdv1.TokenIssuedReason, Message: "served by shard c"})
	if err := w.client.Status().Update(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	w.takeWrites()
	if requeue, published := look(); requeue != 0 || len(published) != 0 {
		t.Errorf("once another shard serves it: requeue %s, %d published; want neither", requeue, len(published))
	}
	if writes := w.takeWrites(); len(writes) != 0 {
		t.Errorf("wrote %v over the shard that serves it", writes)
	}
	wantCondition(t, w.cred("pricing").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)

	// Left again, then deleted.
	c = w.cred("pricing")
	meta.SetStatusCondition(&c.Status.Conditions, metav1.Condition{Type: cdv1.ReadyCondition, Status: metav1.ConditionUnknown, Reason: cdv1.NotInShardReason, Message: "left shard c"})
	if err := w.client.Status().Update(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	if _, published := look(); len(published) != 1 {
		t.Fatalf("%d published, want pricing", len(published))
	}
	if err := w.client.Delete(t.Context(), w.cred("pricing")); err != nil {
		t.Fatal(err)
	}
	if requeue, published := look(); requeue != 0 || len(published) != 0 {
		t.Errorf("once deleted: requeue %s, %d published; want neither", requeue, len(published))
	}
}

// A CR back in the manager's shard is published from its cache again, not twice.
func TestACRBackInTheShardIsForgotten(t *testing.T) {
	w := newWorld(t)
	left := &LeftShard{}
	key := types.NamespacedName{Namespace: "ns", Name: "pricing"}
	left.track(kindCredential, key, metrics.CR{Kind: kindCredential, Namespace: "ns", Name: "pricing"})
	w.creds.LeftShard = left
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	if published := slices.Collect(iter.Seq[metrics.CR](left.Source())); len(published) != 0 {
		t.Errorf("%d published after a pass found it in the cache, want none", len(published))
	}
}

// A manager without a LeftShard (nil) remembers and publishes nothing.
func TestANilLeftShardPublishesNothing(t *testing.T) {
	var left *LeftShard
	left.track(kindGrant, types.NamespacedName{Namespace: "ns", Name: "acme"}, metrics.CR{})
	if left.tracks(kindGrant, types.NamespacedName{Namespace: "ns", Name: "acme"}) || len(slices.Collect(iter.Seq[metrics.CR](left.Source()))) != 0 {
		t.Error("a nil LeftShard remembered a CR")
	}
}
