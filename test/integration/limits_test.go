package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// The API server's limits, which the fake client of the unit tests does not keep.

// annotationBytes is the API server's measure of metadata.annotations (keys and values).
func annotationBytes(a map[string]string) int {
	n := 0
	for k, v := range a {
		n += len(k) + len(v)
	}
	return n
}

// A tenant's refresh-token Secret carries annotations up to just under the API server's
// 256 KiB limit (a last-applied-configuration, a backup tool's, a policy engine's). The
// operator's in-flight mark is then refused as Invalid on every renewal: the grant says
// so instead of staying Ready while its access token runs out, and rotates again once
// the Secret is trimmed.
func TestAnInFlightMarkTheAPIServerRefusesIsOnTheGrant(t *testing.T) {
	f := newGrantFixture(t, 4*time.Second)
	startManager(t, f.opts)
	f.addGrant("acme")
	eventually(t, 20*time.Second, "the first rotation", f.rotations("acme", 1))

	const padKey = "tenant.example/pad"
	editRefreshSecret := func(edit func(a map[string]string)) {
		t.Helper()
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			s, err := getSecret(f.ns, "acme-refresh")
			if err != nil {
				return err
			}
			edit(s.Annotations)
			return k8s.Update(context.Background(), s)
		}); err != nil {
			t.Fatalf("the tenant's own write: %v", err)
		}
	}
	editRefreshSecret(func(a map[string]string) {
		delete(a, padKey)
		a[padKey] = strings.Repeat("p", 256*1024-annotationBytes(a)-len(padKey)-40) // room for 40 bytes, not for a mark
	})
	eventually(t, 20*time.Second, "SecretWriteFailed", grantCondition(f.ns, "acme", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretWriteFailedReason))
	g, _ := getGrant(f.ns, "acme")
	if msg := conditionMessage(g.Status.Conditions, cdv1.ReadyCondition); !strings.Contains(msg, "acme-refresh (Invalid)") {
		t.Errorf("Ready message %q, want the Secret and the API server's reason", msg)
	}

	editRefreshSecret(func(a map[string]string) { delete(a, padKey) })
	eventually(t, 20*time.Second, "a rotation once the Secret is trimmed", f.rotations("acme", g.Status.RotationCount+1))
}
