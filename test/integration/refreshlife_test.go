package integration

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
)

// Keycloak gives a refresh token a lifetime of its own (refresh_expires_in: SSO Session
// Idle, 30 minutes by default against an hour-long access token) and refuses it after
// that with invalid_grant "Token is not active": the customer must log in again. The
// sandbox's Keycloak profile plays that with a 12-second refresh token against a
// 30-second access token. The real manager rotates the grant before each refresh token
// dies, stores each one's expiry with it, and, restarted, keeps doing so from what was
// stored: the grant stays Ready and the identity server never sees a dead or spent
// refresh token.
func TestAKeycloakGrantRotatesBeforeItsRefreshTokenDiesAcrossARestart(t *testing.T) {
	const accessTTL, refreshTTL = 30 * time.Second, 12 * time.Second
	idp := startSandbox(t, cdsandbox.Options{Profile: cdsandbox.ProfileKeycloak, Clients: centralDispatchClients(), AccessTokenTTL: accessTTL, RefreshTokenTTL: refreshTTL})
	f := newGrantFixtureOn(t, idp)
	m := startManager(t, f.opts)
	// No offline_access: Keycloak's offline tokens have no limit (refresh_expires_in 0).
	rt := idp.SeedGrant(loginClientID, "acme@carrier.example", []string{"marketplace"})
	create(t, refreshSecret(f.ns, "acme-refresh", rt))
	create(t, userGrant(f.ns, "acme", "login", "acme-refresh"))
	eventually(t, 60*time.Second, "3 rotations", f.rotations("acme", 3))

	// From the first rotation on, Ready never leaves True, across the restart too.
	var notReady atomic.Int32
	ready := func(n int64) func() error {
		return func() error {
			err := f.rotations("acme", n)()
			if err != nil && !strings.Contains(err.Error(), "rotations") {
				notReady.Add(1)
			}
			return err
		}
	}
	m.Stop(t)
	g, err := getGrant(f.ns, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if err := refreshExpiryStored(f.ns, g, refreshTTL); err != nil {
		t.Error(err)
	}
	if dies := g.Status.LastRotationTime.Add(refreshTTL); !g.Status.RenewalTime.Time.Before(dies) {
		t.Errorf("renewalTime %s, want before the refresh token dies at %s", g.Status.RenewalTime, dies)
	}

	m = startManager(t, f.opts)
	eventually(t, 60*time.Second, "2 more rotations after a restart", ready(g.Status.RotationCount+2))
	m.Stop(t)
	if n := notReady.Load(); n != 0 {
		t.Errorf("the grant was seen %d times not Ready after its first rotation", n)
	}
	g, _ = getGrant(f.ns, "acme")
	if err := refreshExpiryStored(f.ns, g, refreshTTL); err != nil {
		t.Error(err)
	}
	st := idp.Stats()
	if st.RefreshTokensExpired != 0 || st.RefreshTokensReused != 0 || st.Rejected["invalid_grant"] != 0 {
		t.Errorf("the identity server saw %d expired and %d spent refresh tokens (invalid_grant %d times), want none", st.RefreshTokensExpired, st.RefreshTokensReused, st.Rejected["invalid_grant"])
	}
	if err := conditionIs(g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenValidReason); err != nil {
		t.Error(err)
	}
	f.assertStoredTokenLive("acme")
}

// refreshExpiryStored checks that the grant's refresh-token Secret records when its
// token dies: refreshTTL after the rotation that stored it.
func refreshExpiryStored(ns string, g *cdv1.CDUserGrant, refreshTTL time.Duration) error {
	s, err := getSecret(ns, g.Spec.RefreshTokenSecretRef.Name)
	if err != nil {
		return err
	}
	v := s.Annotations[cdv1.RefreshExpiresAtAnnotation]
	want := g.Status.LastRotationTime.Add(refreshTTL).UTC().Format(time.RFC3339) + " " + g.Status.LastRotationTime.UTC().Format(time.RFC3339) + " "
	if !strings.HasPrefix(v, want) {
		return fmt.Errorf("the refresh-token Secret's %s is %q, want it to begin %q (the expiry of the token stored at status.lastRotationTime)", cdv1.RefreshExpiresAtAnnotation, v, want)
	}
	return nil
}
