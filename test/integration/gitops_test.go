package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// fluxApply applies manifest the way Flux's kustomize-controller does: server-side
// apply, field manager "kustomize-controller", force.
func fluxApply(t *testing.T, manifest map[string]any) {
	t.Helper()
	body, err := json.Marshal(manifest)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: manifest}
	if err := k8s.Patch(context.Background(), u, client.RawPatch(types.ApplyPatchType, body), client.FieldOwner("kustomize-controller"), client.ForceOwnership); err != nil {
		t.Fatalf("server-side apply of %s: %v", u.GetName(), err)
	}
}

// TestAGitOpsReSyncedRefreshTokenSecretGetsItsLiveTokenBack: the platform team keeps the
// customer's refresh-token Secret in Git (a plain Secret Flux applies; a SealedSecret or
// an ExternalSecret behave alike), seeded with the token of the customer's first login.
// The operator spends it and stores its successor; Flux's drift correction applies the
// manifest again, putting the seeded token back. The operator must not send it (the
// sandbox, like Central Dispatch, revokes the grant on a reused refresh token), and need
// not stop either: it saw the successor go in the update, puts it back with a Warning,
// and the grant goes on rotating without the customer logging in again.
func TestAGitOpsReSyncedRefreshTokenSecretGetsItsLiveTokenBack(t *testing.T) {
	f := newGrantFixture(t, 3*time.Second)
	seed := f.idp.SeedGrant(loginClientID, "acme@carrier.example", []string{"marketplace", "offline_access"})
	manifest := map[string]any{
		"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]any{"namespace": f.ns, "name": "acme-refresh", "labels": map[string]any{cdv1.SecretTypeLabel: cdv1.SecretTypeRefreshToken}},
		"type":     "Opaque",
		"data":     map[string]any{"refresh_token": base64.StdEncoding.EncodeToString([]byte(seed))},
	}
	fluxApply(t, manifest)
	create(t, userGrant(f.ns, "acme", "login", "acme-refresh"))
	startManager(t, f.opts)
	eventually(t, 20*time.Second, "first rotation", f.rotations("acme", 1))

	fluxApply(t, manifest) // the next Flux interval: drift corrected back to Git

	eventually(t, 20*time.Second, "the live token put back", func() error {
		evs := &eventsv1.EventList{}
		if err := k8s.List(context.Background(), evs, client.InNamespace(f.ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == cdv1.RefreshTokenRestoredReason && e.Regarding.Name == "acme" {
				return nil
			}
		}
		g, err := getGrant(f.ns, "acme")
		if err != nil {
			return err
		}
		return fmt.Errorf("no %s event; conditions %+v", cdv1.RefreshTokenRestoredReason, g.Status.Conditions)
	})
	g, err := getGrant(f.ns, "acme")
	if err != nil {
		t.Fatal(err)
	}
	// Two more rotations at the strict sandbox: the session the Secret holds is alive.
	eventually(t, 20*time.Second, "two rotations after the put-back", f.rotations("acme", g.Status.RotationCount+2))
	if err := grantCondition(f.ns, "acme", cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenValidReason)(); err != nil {
		t.Error(err)
	}
	f.assertNoTokenReused()
	if n := f.idp.Stats().GrantsRevoked; n != 0 {
		t.Errorf("the identity server revoked %d grants, want 0", n)
	}
}
