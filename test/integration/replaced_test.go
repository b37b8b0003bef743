package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
)

// TestAGrantReplacedWhileItsRefreshIsOutGetsNoStatusOfItsPredecessor replaces a grant
// (kubectl replace --force: deleted and created again, another UID, the same spec)
// while its refresh is out at the identity server. The old grant's pass ends with its
// status write, which went by name alone and landed on the new grant: Ready, a rotation
// count and a rotation time it never had. A merge patch carrying metadata.uid would not
// have helped: the status subresource drops everything but the status. The write now
// tests the UID on this real API server and is refused; the new grant rotates for
// itself once the old grant's output Secret is gone (the garbage collector's work,
// which envtest does not run: done here by hand).
func TestAGrantReplacedWhileItsRefreshIsOutGetsNoStatusOfItsPredecessor(t *testing.T) {
	ctx := context.Background()
	f := newGrantFixture(t, 30*time.Minute)
	f.idp.InjectFault(cdsandbox.Fault{GrantType: "refresh_token", After: true, Mode: cdsandbox.FaultHang, Delay: 3 * time.Second})
	f.addGrant("acme")
	startManager(t, f.opts)
	eventually(t, 10*time.Second, "a refresh in flight", func() error {
		if f.refreshCount() < 1 {
			return fmt.Errorf("no refresh yet")
		}
		return nil
	})
	old, err := getGrant(f.ns, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(ctx, old); err != nil {
		t.Fatal(err)
	}
	create(t, userGrant(f.ns, "acme", "login", "acme-refresh"))

	// The old pass stores the successor and writes its output, controlled by its UID.
	eventually(t, 20*time.Second, "the old pass's output written", func() error {
		s, err := getSecret(f.ns, "acme-token")
		if err != nil {
			return err
		}
		if c := metav1.GetControllerOf(s); c == nil || c.UID != old.UID {
			return fmt.Errorf("acme-token controlled by %+v", c)
		}
		return nil
	})
	eventually(t, 20*time.Second, "the new grant held back by the old output", func() error {
		g, err := getGrant(f.ns, "acme")
		if err != nil {
			return err
		}
		return conditionIs(g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretNameConflictReason)
	})
	g, err := getGrant(f.ns, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if g.Status.RotationCount != 0 || g.Status.LastRotationTime != nil || g.Status.ExpiresAt != nil {
		t.Errorf("the new grant (uid %s), which rotated nothing yet, carries its predecessor's rotation: count %d, lastRotationTime %v, expiresAt %v",
			g.UID, g.Status.RotationCount, g.Status.LastRotationTime, g.Status.ExpiresAt)
	}

	s, err := getSecret(f.ns, "acme-token")
	if err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(ctx, s); err != nil { // the garbage collector's
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the new grant rotated", f.rotations("acme", 1))
	if g, _ := getGrant(f.ns, "acme"); g.Status.RotationCount != 1 {
		t.Errorf("the new grant counts %d rotations, want its own 1", g.Status.RotationCount)
	}
	f.assertNoTokenReused()
	f.assertStoredTokenLive("acme")
}
