package controllers

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

// The README's key rotation (replace hmac-key in place; the manager restarts with the new
// key and writes each CDCredential's clientSecretHash once anew) must not lose the
// incident's condition: two CDCredentials of one client across flows stay flagged.
// After the restart the start-up list reconciles both, one before the other: the first
// finds its sharer's hash still under the old key (no match) and clears FlowMisuse; the
// second's hash rewrite (old key -> new key) must bring the first back. The first
// version of the installs fix took it for another install's and did not: an
// AuthorizationCode CDCredential has no renewal pass, so it stayed unflagged.
func TestAKeyRotationKeepsClientSharedAcrossFlows(t *testing.T) {
	copycat := &cdv1.CDCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "copycat", UID: "uid-copycat", Generation: 1},
		Spec:       cdv1.CDCredentialSpec{Flow: cdv1.FlowAuthorizationCode, ClientID: "pricing-id", ClientSecretRef: cdv1.ClientSecretReference{Name: "pricing-client"}},
	}
	w := newWorld(t, copycat)
	copyKey := client.ObjectKeyFromObject(copycat)
	if _, err := w.creds.Reconcile(t.Context(), reconcile.Request{NamespacedName: copyKey}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.creds.Reconcile(t.Context(), reconcile.Request{NamespacedName: copyKey}); err != nil {
		t.Fatal(err)
	}
	flagged := func(name string) bool {
		c := &cdv1.CDCredential{}
		if err := w.client.Get(context.Background(), client.ObjectKey{Namespace: "ns", Name: name}, c); err != nil {
			t.Fatal(err)
		}
		for _, cond := range c.Status.Conditions {
			if cond.Type == cdv1.FlowMisuseCondition {
				return cond.Status == metav1.ConditionTrue
			}
		}
		return false
	}
	if !flagged("copycat") || !flagged("pricing") {
		t.Fatalf("before the rotation: copycat flagged %v, pricing flagged %v", flagged("copycat"), flagged("pricing"))
	}

	// The key rotated; the manager restarted with the new key.
	newKey := []byte("a-rotated-operator-key-0123456789abcdef")
	w.creds = &CDCredentialReconciler{Client: w.client, APIReader: w.client, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Key: newKey}
	handler := sharersHandler(w.client, secrets.KeyID(newKey))
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	// The start-up list: copycat first, then pricing; each status write goes through the
	// watch's handler, and what it queues is reconciled.
	pass := func(key client.ObjectKey) {
		before := &cdv1.CDCredential{}
		if err := w.client.Get(context.Background(), key, before); err != nil {
			t.Fatal(err)
		}
		if _, err := w.creds.Reconcile(t.Context(), reconcile.Request{NamespacedName: key}); err != nil {
			t.Fatal(err)
		}
		after := &cdv1.CDCredential{}
		if err := w.client.Get(context.Background(), key, after); err != nil {
			t.Fatal(err)
		}
		if after.ResourceVersion != before.ResourceVersion {
			handler.Update(context.Background(), event.UpdateEvent{ObjectOld: before, ObjectNew: after}, q)
		}
	}
	pass(copyKey)
	pass(client.ObjectKey{Namespace: "ns", Name: "pricing"})
	for q.Len() > 0 {
		req, _ := q.Get()
		pass(req.NamespacedName)
		q.Forget(req)
		q.Done(req)
	}
	if !flagged("copycat") || !flagged("pricing") {
		t.Errorf("after the key rotation settled: copycat FlowMisuse=True %v, pricing FlowMisuse=True %v; want both flagged (the client is still shared across flows)", flagged("copycat"), flagged("pricing"))
	}
}
