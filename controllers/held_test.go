package controllers

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
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
