package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

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

// TestAGitOpsReSyncedRefreshTokenSecretIsNotSpentTwice: the platform team keeps the
// customer's refresh-token Secret in Git (a plain Secret Flux applies; a SealedSecret or
// an ExternalSecret behave alike), seeded with the token of the customer's first login.
// The operator spends it and stores its successor; Flux's drift correction applies the
// manifest again, putting the seeded token back. The operator must not send it (the
// sandbox, like Central Dispatch, revokes the grant on a reused refresh token): the grant
// stops on RefreshTokenSpent and asks for a login.
func TestAGitOpsReSyncedRefreshTokenSecretIsNotSpentTwice(t *testing.T) {
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

	eventually(t, 20*time.Second, "the grant stops on the spent token", func() error {
		if f.idp.Stats().RefreshTokensReused != 0 {
			return nil // a reuse: assertNoTokenReused says so
		}
		g, err := getGrant(f.ns, "acme")
		if err != nil {
			return err
		}
		return conditionIs(g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenSpentReason)
	})
	f.assertNoTokenReused()
}
