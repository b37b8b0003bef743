package controllers

import (
	"errors"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
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
	w.update(out, func() { out.Annotations["padding.example.com/blob"] = strings.Repeat("x", secrets.MaxMetadata) })
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
