package integration

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

// Every write the operator makes names it: the API server takes an update's or a
// patch's field manager from the client's user agent, and audit logs show that agent.
// Before, both were the binary's name ("manager" in the image, the test binary's here).
func TestEveryWriteOfTheOperatorNamesIt(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	rt := f.idp.SeedGrant(loginClientID, "acme@carrier.example", []string{"marketplace", "offline_access"})
	create(t, refreshSecret(f.ns, "acme-refresh", rt))
	create(t, userGrant(f.ns, "acme", "login", "acme-refresh"))
	startManager(t, f.opts)
	eventually(t, 20*time.Second, "the first rotation", f.rotations("acme", 1))

	for _, w := range []struct {
		obj         client.Object
		name        string
		operation   metav1.ManagedFieldsOperationType
		subresource string
	}{
		{&cdv1.CDUserGrant{}, "acme", metav1.ManagedFieldsOperationUpdate, "status"},
		{&corev1.Secret{}, "acme-refresh", metav1.ManagedFieldsOperationUpdate, ""},
		{&corev1.Secret{}, "acme-token", metav1.ManagedFieldsOperationApply, ""},
	} {
		if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: f.ns, Name: w.name}, w.obj); err != nil {
			t.Fatal(err)
		}
		var managers []string
		for _, e := range w.obj.GetManagedFields() {
			if e.Operation == w.operation && e.Subresource == w.subresource {
				managers = append(managers, e.Manager)
			}
		}
		// The refresh-token Secret's other Update entry is this test's, which created it.
		if !slices.Contains(managers, secrets.FieldOwner) {
			t.Errorf("%s: the field managers of %s writes are %q, none of them %q", w.name, w.operation, managers, secrets.FieldOwner)
		}
	}
}
