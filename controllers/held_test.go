package controllers

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// refuseOutput has the API server refuse every write of the output Secret name, as a
// quota, a webhook or a namespace being terminated does: the token stays held.
func (w *world) refuseOutput(name string, err error) {
	w.setFault(func(verb string, obj client.Object) error {
		if verb == "apply" && obj.GetName() == name {
			return err
		}
		return nil
	})
}

// A result held because its output write was refused holds an access token of use only
// to its CR. A CR deleted meanwhile (a CDCredential has no finalizer, a Retain grant goes
// at once), or deleted and created again under a new UID, is never reconciled under its
// old UID again: its access token must not stay in the manager's memory.
func TestAHeldAccessTokenGoesWithItsCR(t *testing.T) {
	quota := apierrors.NewForbidden(corev1.Resource("secrets"), "x", errors.New(`exceeded quota: secrets, requested: count/secrets=1`))
	type kind struct {
		name, output string
		uid          types.UID
		held         func(w *world) *heldResults
		reconcile    func(w *world) error
		obj          func(w *world) client.Object
	}
	kinds := map[string]kind{
		"a CDCredential": {name: "pricing", output: "pricing-token", uid: "uid-pricing",
			held:      func(w *world) *heldResults { return &w.creds.held },
			reconcile: func(w *world) error { _, err := w.reconcileCred("pricing"); return err },
			obj:       func(w *world) client.Object { return w.cred("pricing") },
		},
		"a Retain grant": {name: "acme", output: "acme-token", uid: "uid-acme",
			held:      func(w *world) *heldResults { return &w.grants.held },
			reconcile: func(w *world) error { _, err := w.reconcileGrant("acme"); return err },
			obj:       func(w *world) client.Object { return w.grant("acme") },
		},
	}
	for kname, k := range kinds {
		for _, recreated := range []bool{false, true} {
			name := kname + " deleted"
			if recreated {
				name += " and created again"
			}
			t.Run(name, func(t *testing.T) {
				w := newWorld(t)
				w.refuseOutput(k.output, quota)
				if err := k.reconcile(w); err != nil {
					t.Fatal(err)
				}
				if r, ok := k.held(w).get(k.uid); !ok || r.access == nil || r.refresh != nil {
					t.Fatalf("setup: the refused write left no access token held alone (%+v)", r)
				}
				old := k.obj(w)
				if err := w.client.Delete(t.Context(), old); err != nil {
					t.Fatal(err)
				}
				if recreated {
					again := old.DeepCopyObject().(client.Object)
					again.SetResourceVersion("")
					again.SetUID(k.uid + "-2")
					if err := w.client.Create(t.Context(), again); err != nil {
						t.Fatal(err)
					}
				}
				if err := k.reconcile(w); err != nil {
					t.Fatal(err)
				}
				if k.held(w).has(k.uid) {
					t.Errorf("the access token of the deleted %s (UID %s) is still held in memory", k.name, k.uid)
				}
			})
		}
	}
}

// A grant whose new refresh token is held through an outage is deleted and created
// again under the same name, now naming another refresh-token Secret (a rename in a
// GitOps repository, kubectl replace --force). The passes for that name find the new
// grant, so the path for a deleted grant (storeOrphan) never runs: the old grant's live
// token must still be stored into the Secret it was read from, which the old grant left
// behind (Retain) holding the spent token under this process's in-flight mark.
func TestAHeldRefreshTokenOfAGrantRecreatedWithAnotherSecretIsStored(t *testing.T) {
	w := newWorld(t, optedIn(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme-refresh-v2"},
		Data: map[string][]byte{"refresh_token": []byte("other-0")}}, cdv1.SecretTypeRefreshToken))
	defer w.rotateUnstored()()
	if r, ok := w.grants.held.get("uid-acme"); !ok || r.refresh == nil {
		t.Fatal("setup: no new refresh token held through the outage")
	}
	if err := w.client.Delete(t.Context(), w.grant("acme")); err != nil {
		t.Fatal(err)
	}
	g := grantObj("acme", "acme-refresh-v2")
	g.UID = "uid-acme-2"
	if err := w.client.Create(t.Context(), g); err != nil {
		t.Fatal(err)
	}
	w.setFault(nil) // the outage is over
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "refresh-1" {
		t.Errorf("the retained Secret acme-refresh holds %q, want the live refresh-1", got)
	}
	if w.grants.held.has("uid-acme") {
		t.Error("the old grant's result is still held once its token is stored")
	}
	if got := w.tokens.refreshes(); !slices.Equal(got, []string{"refresh-0", "other-0"}) {
		t.Errorf("refresh tokens sent %v, want refresh-0 then the new grant's own other-0", got)
	}
}

// kubectl delete --cascade=foreground cdcred pricing: the API server sets the
// deletionTimestamp and the foregroundDeletion finalizer, and the garbage collector
// deletes the output Secret (blockOwnerDeletion) before it lets the credential go. The
// credential is going: no token is requested for it and its output is not created again
// (for the collector to delete once more).
func TestACDCredentialBeingDeletedGetsNoNewToken(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	if n := w.tokens.ccCount(); n != 1 {
		t.Fatalf("setup: %d token requests", n)
	}
	c := w.cred("pricing")
	w.update(c, func() { c.Finalizers = []string{metav1.FinalizerDeleteDependents} })
	if err := w.client.Delete(t.Context(), w.cred("pricing")); err != nil {
		t.Fatal(err)
	}
	if err := w.client.Delete(t.Context(), w.secret("pricing-token")); err != nil { // the collector
		t.Fatal(err)
	}
	res, err := w.reconcileCred("pricing")
	if err != nil {
		t.Fatal(err)
	}
	if n := w.tokens.ccCount(); n != 1 {
		t.Errorf("a token was requested for a CDCredential being deleted (%d requests)", n)
	}
	if writes := w.takeWrites(); len(writes) != 0 {
		t.Errorf("writes for a CDCredential being deleted: %v", writes)
	}
	if res != (ctrl.Result{}) {
		t.Errorf("result %+v, want none: nothing is left to do", res)
	}
}

// deleteNamespace has the namespace ns deleted and kept Terminating by a finalizer. The
// API server keeps a namespace by spec.finalizers, which the fake client ignores: a
// metadata finalizer stands in for it.
func (w *world) deleteNamespace() {
	w.t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns"}}
	w.update(ns, func() { ns.Finalizers = []string{string(corev1.FinalizerKubernetes)} })
	if err := w.client.Delete(w.t.Context(), ns); err != nil {
		w.t.Fatal(err)
	}
}

// namespaceTerminatingRefusal is the API server's refusal of a create in a namespace
// being deleted (the NamespaceLifecycle admission plugin).
func namespaceTerminatingRefusal(name string) error {
	err := apierrors.NewForbidden(corev1.Resource("secrets"), name, errors.New("unable to create new content in namespace ns because it is being terminated"))
	err.ErrStatus.Details.Causes = append(err.ErrStatus.Details.Causes, metav1.StatusCause{
		Type: corev1.NamespaceTerminatingCause, Message: "namespace ns is being terminated", Field: "metadata.namespace",
	})
	return err
}

// kubectl delete namespace: the namespace controller deletes the Secrets with the CRs,
// and the API server refuses every create in the namespace meanwhile. A CR whose output
// Secret vanished must not request a token (nor spend a customer's refresh token) just
// to have its output refused; and a create refused for that reason is final (the CR is
// about to go): the token is dropped, not retried, and Ready does not change. A grant's
// new refresh token is still stored first: its Secret, if there, takes an update.
func TestATerminatingNamespaceGetsNoNewTokens(t *testing.T) {
	type kind struct {
		output    string
		reconcile func(w *world) (ctrl.Result, error)
		requests  func(w *world) int
		ready     func(w *world) []metav1.Condition
	}
	kinds := map[string]kind{
		"CDCredential": {output: "pricing-token",
			reconcile: func(w *world) (ctrl.Result, error) { return w.reconcileCred("pricing") },
			requests:  func(w *world) int { return w.tokens.ccCount() },
			ready:     func(w *world) []metav1.Condition { return w.cred("pricing").Status.Conditions },
		},
		"CDUserGrant": {output: "acme-token",
			reconcile: func(w *world) (ctrl.Result, error) { return w.reconcileGrant("acme") },
			requests:  func(w *world) int { return len(w.tokens.refreshes()) },
			ready:     func(w *world) []metav1.Condition { return w.grant("acme").Status.Conditions },
		},
	}
	for name, k := range kinds {
		t.Run(name+" whose output vanished", func(t *testing.T) {
			w := newWorld(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns"}})
			if _, err := k.reconcile(w); err != nil {
				t.Fatal(err)
			}
			ready := condition(t, k.ready(w), cdv1.ReadyCondition)
			w.deleteNamespace()
			if err := w.client.Delete(t.Context(), w.secret(k.output)); err != nil { // its first sweep
				t.Fatal(err)
			}
			w.refuseOutput(k.output, namespaceTerminatingRefusal(k.output))
			res, err := k.reconcile(w)
			if err != nil {
				t.Fatal(err)
			}
			if n := k.requests(w); n != 1 {
				t.Errorf("%d token requests, want only the first: none in a namespace being deleted", n)
			}
			if res != (ctrl.Result{}) {
				t.Errorf("result %+v, want none", res)
			}
			if diff := cmp.Diff(ready, condition(t, k.ready(w), cdv1.ReadyCondition)); diff != "" {
				t.Errorf("Ready changed (-before +after):\n%s", diff)
			}
		})
		// The namespace is marked for deletion after the pass read it, or the manager
		// may not read namespaces: the create's refusal says so.
		t.Run(name+" whose create is refused as the namespace terminates", func(t *testing.T) {
			w := newWorld(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns"}})
			w.refuseOutput(k.output, namespaceTerminatingRefusal(k.output))
			res, err := k.reconcile(w)
			if err != nil {
				t.Fatal(err)
			}
			if w.creds.held.has("uid-pricing") || w.grants.held.has("uid-acme") {
				t.Error("the refused token is still held")
			}
			if res != (ctrl.Result{}) {
				t.Errorf("result %+v, want none: the refusal is final", res)
			}
			if c := meta.FindStatusCondition(k.ready(w), cdv1.ReadyCondition); c != nil && c.Reason == cdv1.SecretWriteFailedReason {
				t.Errorf("Ready %s/%s: a namespace being deleted is no write failure to report", c.Status, c.Reason)
			}
			if name == "CDUserGrant" {
				if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "refresh-1" {
					t.Errorf("acme-refresh holds %q, want the new refresh-1", got)
				}
			}
			w.deleteNamespace() // as the next pass finds it
			if _, err := k.reconcile(w); err != nil {
				t.Fatal(err)
			}
			if n := k.requests(w); n != 1 {
				t.Errorf("%d token requests: the refusal was retried", n)
			}
		})
	}
}

// TestANewCRsFirstPassReadsNoNamespace: a cold start creates thousands of outputs, each
// CR's first pass finding none; only a CR that had a token, whose output went as in a
// namespace's sweep, asks the API server whether its namespace is being deleted.
func TestANewCRsFirstPassReadsNoNamespace(t *testing.T) {
	w := newWorld(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns"}})
	var reads int
	counting := interceptor.NewClient(w.client, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if m, ok := obj.(*metav1.PartialObjectMetadata); ok && m.Kind == "Namespace" {
				reads++
			}
			return c.Get(ctx, key, obj, opts...)
		},
	})
	w.creds.APIReader, w.grants.APIReader = counting, counting
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if reads != 0 {
		t.Errorf("%d namespace reads on first passes, want none", reads)
	}
	if err := w.client.Delete(t.Context(), w.secret("pricing-token")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	if reads != 1 {
		t.Errorf("%d namespace reads after the output of a CR that had a token went, want 1", reads)
	}
}
