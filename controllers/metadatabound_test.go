package controllers

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/metabound"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

// Finding (review, 2026-12-03): the cache kept no opted-in Secret's data over 64 KiB,
// but kept its labels and annotations at any size, and the API server bounds labels
// only by the object's size: a Secret labelled as an output could take 1.4 MiB of the
// manager's memory. The cache now keeps only a stub of a Secret over 128 KiB of them.
// The operator's writes would not make such an output smaller (what was added is not
// theirs), and the stub looks incomplete: the grant must stall on it, sending nothing,
// instead of requesting a token at each pass to repair it; and go on once it shrinks.
func TestAnOutputSecretOverMaxMetadataStallsItsGrantUntilItShrinks(t *testing.T) {
	w := newWorld(t)
	res, err := w.reconcileGrant("acme") // refresh-0 -> refresh-1, acme-token written
	if err != nil {
		t.Fatal(err)
	}
	out := w.secret("acme-token")
	w.update(out, func() { out.Annotations["padding.example.com/blob"] = strings.Repeat("x", metabound.Max) })
	cached := w.secret("acme-token")
	secrets.TrimForCache(cached) // what the manager's cache keeps of it: a stub
	if len(cached.Annotations) != 1 {
		t.Fatalf("the cache keeps annotations %v of it, want only its marker", cached.Annotations)
	}

	w.clock.Step(res.RequeueAfter) // due
	res, err = w.reconcileGrant("acme")
	if !errors.Is(err, reconcile.TerminalError(nil)) || res.RequeueAfter != 0 {
		t.Errorf("err %v, requeue after %s; want a terminal error, no requeue (shrinking it is an event)", err, res.RequeueAfter)
	}
	if sent := w.tokens.refreshes(); len(sent) != 1 {
		t.Errorf("refresh tokens sent %v, want only the first pass's", sent)
	}
	g := w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.OutputSecretTooLargeReason)
	wantCondition(t, g.Status.Conditions, cdv1.StalledCondition, metav1.ConditionTrue, cdv1.OutputSecretTooLargeReason)
	if msg := condition(t, g.Status.Conditions, cdv1.ReadyCondition).Message; !strings.Contains(msg, "Secret acme-token carries more than 128 KiB") {
		t.Errorf("Ready says %q, want the Secret and the bound named", msg)
	}
	if g.Status.SecretName != "acme-token" {
		t.Errorf("status.secretName %q, want acme-token kept (its token is still there)", g.Status.SecretName)
	}

	// Made smaller: an event for the grant, which rotates at once.
	shrunk := w.secret("acme-token")
	w.update(shrunk, func() { delete(shrunk.Annotations, "padding.example.com/blob") })
	if !outputTampered.Update(event.UpdateEvent{ObjectOld: cached, ObjectNew: w.secret("acme-token")}) {
		t.Error("the output Secret made smaller, and consistent, brought its grant no pass")
	}
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if sent := w.tokens.refreshes(); len(sent) != 2 {
		t.Errorf("refresh tokens sent %v, want the due rotation once the Secret shrank", sent)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
}

// inflate gives obj labels taking more than metabound.Max, as a tenant who may edit it
// can: the API server bounds labels only by the object's size.
func inflate(obj client.Object) {
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	for i := 0; i*73 <= metabound.Max; i++ {
		labels[fmt.Sprintf("pad-%06d", i)] = strings.Repeat("x", 63)
	}
	obj.SetLabels(labels)
}

// Finding (review, 2026-12-03): a CR's labels and annotations were cached at any size,
// and the tenant of DESIGN §8 is whoever may edit the CRs: a few hundred CRs carrying
// 1.4 MiB of labels took every replica's memory past its limit. The cache keeps a stub
// of a CR over metabound.Max, without its finalizers; a patch of finalizers computed
// from it would drop the ones it lost. So the pass does nothing for it but say why, and
// goes on once it is smaller.
func TestAGrantOverMaxMetadataIsLeftAloneUntilItShrinks(t *testing.T) {
	w := newWorld(t)
	g := w.grant("acme")
	w.update(g, func() {
		g.Spec.DeletionPolicy = cdv1.DeletionPolicyDelete
		g.Finalizers = []string{"example.com/hold"}
		inflate(g)
	})
	stub := w.grant("acme")
	metabound.Cut(stub) // what the manager's cache keeps of it
	if len(stub.Finalizers) != 0 {
		t.Fatalf("the stub keeps finalizers %v", stub.Finalizers)
	}
	w.lag(stub)

	res, err := w.reconcileGrant("acme")
	if !errors.Is(err, reconcile.TerminalError(nil)) || res.RequeueAfter != 0 {
		t.Errorf("err %v, requeue after %s; want a terminal error (making it smaller is an event)", err, res.RequeueAfter)
	}
	if sent := w.tokens.refreshes(); len(sent) != 0 {
		t.Errorf("refresh tokens sent %v, want none", sent)
	}
	g = w.grant("acme")
	if diff := cmp.Diff([]string{"example.com/hold"}, g.Finalizers); diff != "" {
		t.Errorf("finalizers (-want +got):\n%s", diff)
	}
	wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.MetadataTooLargeReason)
	wantCondition(t, g.Status.Conditions, cdv1.StalledCondition, metav1.ConditionTrue, cdv1.MetadataTooLargeReason)
	if msg := condition(t, g.Status.Conditions, cdv1.ReadyCondition).Message; !strings.Contains(msg, "This CDUserGrant carries more than 128 KiB") {
		t.Errorf("Ready says %q, want the bound named", msg)
	}

	// Made smaller: an event for the grant, which adds its finalizer and rotates.
	w.update(g, func() { g.Labels = nil })
	if !metadataBoundCrossed.Update(event.UpdateEvent{ObjectOld: stub, ObjectNew: w.grant("acme")}) {
		t.Error("the grant made smaller brought no pass")
	}
	w.lag(&cdv1.CDUserGrant{})
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	g = w.grant("acme")
	if diff := cmp.Diff([]string{"example.com/hold", "cd.credops.io/delete-refresh-token"}, g.Finalizers); diff != "" {
		t.Errorf("finalizers (-want +got):\n%s", diff)
	}
	wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
}

// A new refresh token a rotation could not store yet is the customer's session: it is
// stored though the grant has gone over the bound since, and only then is the grant
// left alone.
func TestAHeldRefreshTokenIsStoredThoughItsGrantWentOverMaxMetadata(t *testing.T) {
	w := newWorld(t)
	defer w.rotateUnstored()()
	w.setFault(nil)
	g := w.grant("acme")
	w.update(g, func() { inflate(g) })
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "refresh-1" {
		t.Errorf("the refresh-token Secret holds %q, want the held refresh-1", got)
	}
	if _, err := w.reconcileGrant("acme"); !errors.Is(err, reconcile.TerminalError(nil)) {
		t.Errorf("err %v, want the grant left alone once its token is stored", err)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.MetadataTooLargeReason)
	if diff := cmp.Diff([]string{"refresh-0"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("refresh tokens sent (-want +got):\n%s", diff)
	}
}

// A CDCredential over the bound requests nothing either.
func TestACredentialOverMaxMetadataRequestsNothing(t *testing.T) {
	w := newWorld(t)
	c := w.cred("pricing")
	w.update(c, func() { inflate(c) })
	if _, err := w.reconcileCred("pricing"); !errors.Is(err, reconcile.TerminalError(nil)) {
		t.Errorf("err %v, want terminal", err)
	}
	if n := w.tokens.ccCount(); n != 0 {
		t.Errorf("%d token requests, want none", n)
	}
	wantCondition(t, w.cred("pricing").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.MetadataTooLargeReason)
}

// A CR crossing the bound either way is a pass of its own, though its generation does
// not change (the CDCredential controller has no annotation predicate to bring it); an
// update that stays on one side is none, so the stub's own status writes bring nothing.
func TestCrossingTheMetadataBoundBringsAPass(t *testing.T) {
	small := &cdv1.CDCredential{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pricing"}}
	big := small.DeepCopy()
	inflate(big)
	stub := big.DeepCopy()
	metabound.Cut(stub)
	for _, tc := range []struct {
		name     string
		old, cur client.Object
		want     bool
	}{
		{"over the bound", small, big, true},
		{"over it, as the cache sees it", small, stub, true},
		{"back under it", stub, small, true},
		{"staying a stub (its own status write)", stub, stub, false},
		{"staying small", small, small, false},
	} {
		if got := metadataBoundCrossed.Update(event.UpdateEvent{ObjectOld: tc.old, ObjectNew: tc.cur}); got != tc.want {
			t.Errorf("%s: a pass %v, want %v", tc.name, got, tc.want)
		}
	}
}
