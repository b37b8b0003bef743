package controllers

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

// A Keycloak session ends at SSO Session Max however often it is refreshed: each
// answer's refresh_expires_in is the lesser of SSO Session Idle and what is left, and
// its expires_in the lesser of the access token's lifespan and what is left. The
// grant renews at its usual pace up to the end, the last renewal is planned past it (a
// renewal before it extends nothing), and Ready names the end, in words a restarted
// manager says again from what was stored, without a write.
func TestACappedSessionIsRenewedAtItsPaceAndReadyNamesItsEnd(t *testing.T) {
	const access, idle = 5 * time.Minute, 30 * time.Minute
	ends := epoch.Add(40 * time.Minute)
	w := newWorld(t)
	w.tokens.lifetime = access
	answer := func() {
		left := ends.Sub(w.clock.Now())
		w.tokens.lifetime, w.tokens.refreshLifetime = min(access, left).Truncate(time.Second), min(idle, left).Truncate(time.Second)
	}
	answer()
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	last := w.clock.Now()
	for range 100 {
		renewal := w.grant("acme").Status.RenewalTime.Time
		if !renewal.Before(ends) {
			break
		}
		// The pass at the renewal time, and one a second after: a wait pulled back
		// before the planned renewal would rotate there.
		for _, at := range []time.Time{renewal, renewal.Add(time.Second)} {
			w.clock.SetTime(at)
			answer()
			if _, err := w.reconcileGrant("acme"); err != nil {
				t.Fatal(err)
			}
		}
		if sent := w.grant("acme").Status.LastRotationTime.Time; sent.Sub(last) < access/3 {
			t.Errorf("a renewal %s after the one before, %s before the session's end, want at least a third of the access token's %s", sent.Sub(last), ends.Sub(sent), access)
		}
		last = w.grant("acme").Status.LastRotationTime.Time
	}
	g := w.grant("acme")
	t.Logf("%d rotations; the renewal planned %s after the session's end", g.Status.RotationCount, g.Status.RenewalTime.Time.Sub(ends))
	// 40 minutes of 5-minute tokens renewed 2m50s-3m apart: 13 or 14 rotations, plus at
	// most one for the session's end.
	if g.Status.RotationCount > 15 {
		t.Errorf("%d rotations in a 40-minute session of 5-minute tokens, want at most 15", g.Status.RotationCount)
	}
	want := "Access token is in Secret acme-token; the provider's session ends at " + ends.Format(time.RFC3339) + ": the customer must log in again by then"
	if got := meta.FindStatusCondition(g.Status.Conditions, cdv1.ReadyCondition).Message; got != want {
		t.Errorf("after the last renewal, Ready says %q, want %q", got, want)
	}
	if g.Status.RenewalTime.Time.Before(ends) {
		t.Errorf("renewalTime %s, want at or past the session's end %s", g.Status.RenewalTime.Time, ends)
	}

	w.takeWrites()
	w.clock.SetTime(last.Add(ends.Sub(last) / 2)) // before the end: the last token is held to it
	w.grants = &CDUserGrantReconciler{Client: w.client, APIReader: w.client, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Holder: "me-after-restart"}
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if got := meta.FindStatusCondition(w.grant("acme").Status.Conditions, cdv1.ReadyCondition).Message; got != want {
		t.Errorf("after a restart, Ready says %q, want %q", got, want)
	}
	if writes := w.takeWrites(); len(writes) != 0 {
		t.Errorf("a pass that found the token fresh wrote %v", writes)
	}
}

// The first refresh after a login follows it at once (the login brings no access
// token), in the second the login's refresh token was issued. Under Keycloak's SSO
// Session Idle the answer's refresh token lives as long as the login's did, and so ends
// in the same second: an idle timeout, which the next refresh extends, not a capped
// session's end. With hour-long access tokens and a 30-minute idle timeout, taken for
// a capped session the renewal would be planned from the access token alone, 40
// minutes in, and the refresh token would be dead by then.
func TestTheRefreshRightAfterALoginIsNotTakenForACappedSession(t *testing.T) {
	const access, idle = time.Hour, 30 * time.Minute
	w := newWorld(t)
	w.tokens.lifetime, w.tokens.refreshLifetime = access, idle
	w.storeRefreshLife(rotation.Life(w.clock.Now(), idle))
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	dies := w.clock.Now().Add(idle)
	g := w.grant("acme")
	if g.Status.RotationCount != 1 {
		t.Fatalf("%d rotations, want the refresh right after the login", g.Status.RotationCount)
	}
	if renewal := g.Status.RenewalTime.Time; !renewal.Before(dies) {
		t.Errorf("renewal planned %s after the login, want before the new refresh token dies %s after it", renewal.Sub(epoch), idle)
	}
	if msg := meta.FindStatusCondition(g.Status.Conditions, cdv1.ReadyCondition).Message; strings.Contains(msg, "session ends") {
		t.Errorf("Ready says %q: an idle timeout is no session's end", msg)
	}
}

// A refresh sent in a capped session's last second may be answered with expires_in 0
// as well as refresh_expires_in 0 (what is left, rounded down): that access token dies
// with the session. Taken for a token without a stated lifetime (FallbackLifetime), the
// output Secret vouched for it for 5 minutes and the request after the end, the one
// that asks for the new login, waited more than 3.
func TestAnAccessTokenWithoutALifetimeInASessionsLastSecondDiesWithIt(t *testing.T) {
	w := newWorld(t)
	ends := epoch.Add(time.Second)
	w.storeRefreshLife(rotation.Schedule{Issued: epoch.Add(-10 * time.Second), ExpiresAt: ends})
	w.tokens.lifetime, w.tokens.refreshLifetime = 0, 0
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	g := w.grant("acme")
	if g.Status.RotationCount != 1 || g.Status.ExpiresAt == nil || g.Status.RenewalTime == nil {
		t.Fatalf("status %+v, want one rotation with an expiry and a renewal time", g.Status)
	}
	if got := g.Status.ExpiresAt.Time; got.After(ends) {
		t.Errorf("the access token expires %s after the session's end, want at it", got.Sub(ends))
	}
	if got := g.Status.RenewalTime.Time; !got.Equal(ends) {
		t.Errorf("renewal %s after the session's end, want at it (the request that asks for the login)", got.Sub(ends))
	}
}

// storeRefreshLife stores the life of the world's refresh token (refresh-0) beside it,
// as the login or the rotation that stored the token would have.
func (w *world) storeRefreshLife(life rotation.Schedule) {
	s := w.secret("acme-refresh")
	w.update(s, func() { secrets.SetRefreshLife(s, rotation.Hash("refresh-0"), life) })
}
