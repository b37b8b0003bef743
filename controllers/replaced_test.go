package controllers

import (
	"context"
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// ccHookIssuer runs hook once, on the first client-credentials request, while it is out.
type ccHookIssuer struct {
	*fakeIssuer
	hook func()
}

func (h *ccHookIssuer) ClientCredentials(ctx context.Context, e tokenclient.Endpoint) (*tokenclient.Token, error) {
	if f := h.hook; f != nil {
		h.hook = nil
		f()
	}
	return h.fakeIssuer.ClientCredentials(ctx, e)
}

// A CR's pass writes its status last, after a token request that may take seconds. A CR
// replaced meanwhile (kubectl replace --force, a GitOps tool's delete and create: its
// name, another UID) got the old pass's status, addressed by name alone: Ready, a
// token's expiry and rotation time it never had, and its output Secret (controlled by
// the old UID) is the garbage collector's. A CR deleted meanwhile ended the pass in an
// error (not found) and a retry for nothing.
func TestACRReplacedOrDeletedDuringItsPassGetsNoStatusFromIt(t *testing.T) {
	kinds := map[string]struct {
		name  string
		hook  func(w *world, f func())
		fresh func() client.Object
		pass  func(w *world) error
		// status is the CR's status at the API server, nil when it is gone.
		status func(w *world) any
	}{
		"a customer's grant": {
			name:  "acme",
			hook:  func(w *world, f func()) { w.grants.Tokens = &hookIssuer{fakeIssuer: w.tokens, hook: f} },
			fresh: func() client.Object { return grantObj("acme", "acme-refresh") },
			pass:  func(w *world) error { _, err := w.reconcileGrant("acme"); return err },
			status: func(w *world) any {
				g := &cdv1.CDUserGrant{}
				if err := w.client.Get(context.Background(), client.ObjectKey{Namespace: "ns", Name: "acme"}, g); err != nil {
					return nil
				}
				return g.Status
			},
		},
		"an API client": {
			name: "pricing",
			hook: func(w *world, f func()) { w.creds.Tokens = &ccHookIssuer{fakeIssuer: w.tokens, hook: f} },
			fresh: func() client.Object {
				return &cdv1.CDCredential{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pricing", UID: "uid-pricing", Generation: 1},
					Spec: cdv1.CDCredentialSpec{Flow: cdv1.FlowClientCredentials, ClientSecretRef: cdv1.ClientSecretReference{Name: "pricing-client"}, Issuer: "https://id.example.com"}}
			},
			pass: func(w *world) error { _, err := w.reconcileCred("pricing"); return err },
			status: func(w *world) any {
				c := &cdv1.CDCredential{}
				if err := w.client.Get(context.Background(), client.ObjectKey{Namespace: "ns", Name: "pricing"}, c); err != nil {
					return nil
				}
				return c.Status
			},
		},
	}
	for kind, k := range kinds {
		t.Run(kind+" replaced", func(t *testing.T) {
			w := newWorld(t)
			k.hook(w, func() {
				if err := w.client.Delete(context.Background(), k.fresh()); err != nil {
					t.Fatal(err)
				}
				again := k.fresh()
				again.SetUID(again.GetUID() + "-2")
				if err := w.client.Create(context.Background(), again); err != nil {
					t.Fatal(err)
				}
			})
			if err := k.pass(w); err != nil {
				t.Errorf("the old %s's pass: %v, want nothing left to do", k.name, err)
			}
			if got := k.status(w); got == nil || !reflect.ValueOf(got).IsZero() {
				t.Errorf("the new %s, never reconciled, carries a status: %+v", k.name, got)
			}
		})
		t.Run(kind+" deleted", func(t *testing.T) {
			w := newWorld(t)
			k.hook(w, func() {
				if err := w.client.Delete(context.Background(), k.fresh()); err != nil {
					t.Fatal(err)
				}
			})
			if err := k.pass(w); err != nil {
				t.Errorf("the deleted %s's pass: %v, want nothing left to do", k.name, err)
			}
		})
	}
}
