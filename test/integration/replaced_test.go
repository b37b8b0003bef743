package integration

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

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

// TestAGrantReplacedDuringItsLoginGetsNoOutcomeOfIt replaces a grant (kubectl replace
// --force: deleted and created again, another UID, the same spec) while its customer's
// login is being completed. The callback recorded the login's outcome with a patch by
// name alone, which landed on the new grant: a login its customer never made
// (lastAuthorization), and its own link cleared from status. The outcome now goes to
// the grant the login was for, or nowhere.
func TestAGrantReplacedDuringItsLoginGetsNoOutcomeOfIt(t *testing.T) {
	t.Run("a login that succeeded, replaced as the callback records it", func(t *testing.T) {
		fc := &faults{}
		f := newOnboardingFixture(t, withManagerFaults(fc))
		authURL := f.awaiting("acme")
		old := f.grantUID(t, "acme")
		var replaced sync.Once
		fc.set(func(verb string, obj client.Object) error {
			if g, ok := obj.(*cdv1.CDUserGrant); ok && verb == "status" && g.Status.LastAuthorization != nil && g.Status.LastAuthorization.Reason == cdv1.CustomerAuthorizedReason {
				replaced.Do(func() { replaceGrant(t, f.ns, "acme") })
			}
			return nil
		})
		status, body := f.callback(f.login(authURL, "login"))
		if status != http.StatusOK {
			t.Fatalf("callback: %d %s", status, body)
		}
		f.assertNoOutcome(t, "acme", old)
	})
	t.Run("a login whose code exchange failed, replaced during the exchange", func(t *testing.T) {
		f := newOnboardingFixture(t)
		authURL := f.awaiting("acme")
		old := f.grantUID(t, "acme")
		redirect := f.login(authURL, "login")
		f.idp.InjectFault(cdsandbox.Fault{GrantType: "authorization_code", After: true, Mode: cdsandbox.FaultStatus, Status: http.StatusBadGateway})
		f.idp.OnTokenRequest(func(grantType string, _ bool) {
			if grantType == "authorization_code" {
				replaceGrant(t, f.ns, "acme")
			}
		})
		defer f.idp.OnTokenRequest(nil)
		if status, body := f.callback(redirect); status != http.StatusBadGateway {
			t.Fatalf("callback: %d %s, want 502", status, body)
		}
		f.assertNoOutcome(t, "acme", old)
	})
}

// replaceGrant deletes grant name and creates it again with the same spec, as kubectl
// replace --force does. It runs in the manager's or the identity server's goroutine.
func replaceGrant(t *testing.T, ns, name string) {
	ctx := context.Background()
	old := &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := k8s.Delete(ctx, old); err != nil {
		t.Errorf("deleting grant %s: %v", name, err)
		return
	}
	if err := k8s.Create(ctx, userGrant(ns, name, "login", name+"-refresh")); err != nil {
		t.Errorf("creating grant %s again: %v", name, err)
	}
}

func (f *onboardingFixture) grantUID(t *testing.T, name string) types.UID {
	t.Helper()
	g, err := getGrant(f.ns, name)
	if err != nil {
		t.Fatal(err)
	}
	return g.UID
}

// assertNoOutcome fails t unless grant name, created again (no longer old) while its
// predecessor's login was completed, records no login. The callback has answered, so
// its write (if any) is done.
func (f *onboardingFixture) assertNoOutcome(t *testing.T, name string, old types.UID) {
	t.Helper()
	g, err := getGrant(f.ns, name)
	if err != nil {
		t.Fatal(err)
	}
	if g.UID == old {
		t.Fatalf("grant %s was not replaced during the login", name)
	}
	if a := g.Status.LastAuthorization; a != nil {
		t.Errorf("the new grant (uid %s), whose customer never logged in, records the old grant's login: %+v", g.UID, *a)
	}
}
