package controllers

import (
	"errors"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

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
	w.grants.PersistTimeout = time.Second
	stop := advanceWhenWaited(w.clock)
	defer stop()
	w.failStoringNewRefreshTokens()
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
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
