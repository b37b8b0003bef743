package controllers

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

// A customer asked to log in again (a reauthorization) whose login lacks
// offline_access gets Keycloak's browser-session refresh token, which dies at SSO
// Session Idle (30 minutes); the callback stores its expiry with it. The access token in
// the output Secret is still fresh, its renewal planned from the offline token it
// replaced (no limit), about 40 minutes in: waited for, the new refresh token is dead by
// then, refused, and the customer must log in once more. The renewal comes 2 minutes
// before it dies, and the passes that find the token fresh meanwhile write nothing.
func TestANewLoginsRefreshTokenThatDiesFirstBringsTheRenewalForward(t *testing.T) {
	w := newWorld(t)
	w.tokens.lifetime = time.Hour // an offline token: no refresh_expires_in
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	planned := w.grant("acme").Status.RenewalTime.Time

	login := epoch.Add(5 * time.Minute)
	w.clock.SetTime(login)
	s := w.secret("acme-refresh")
	w.update(s, func() {
		secrets.StoreRefreshToken(s, secrets.RefreshKey(w.grant("acme")), "login-2")
		secrets.SetRefreshLife(s, rotation.Hash("login-2"), rotation.Schedule{Issued: login, ExpiresAt: login.Add(30 * time.Minute)})
	})
	dies := login.Add(30 * time.Minute)
	want := dies.Add(-rotation.MinRenewMargin)
	if !want.Before(planned) {
		t.Fatalf("the test needs the renewal planned (%s in) after the new refresh token dies (%s in)", planned.Sub(epoch), dies.Sub(epoch))
	}
	res, err := w.reconcileGrant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if next := w.clock.Now().Add(res.RequeueAfter); res.RequeueAfter <= 0 || next.After(want) {
		t.Fatalf("after the login %s in: next pass %s in, want no later than %s in, 2 minutes before the new refresh token dies (the renewal was planned %s in)",
			login.Sub(epoch), next.Sub(epoch), want.Sub(epoch), planned.Sub(epoch))
	}
	w.takeWrites()
	w.clock.Step(time.Minute)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if writes := w.takeWrites(); len(writes) != 0 {
		t.Errorf("a pass that found the token fresh after the login wrote %v", writes)
	}
	// A restarted manager, which has only what was stored, waits for the same time and
	// writes nothing.
	w.grants = &CDUserGrantReconciler{Client: w.client, APIReader: w.client, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Holder: "me-after-restart"}
	res, err = w.reconcileGrant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if next := w.clock.Now().Add(res.RequeueAfter); !next.Equal(want) {
		t.Errorf("after a restart: next pass %s in, want %s in", next.Sub(epoch), want.Sub(epoch))
	}
	if writes := w.takeWrites(); len(writes) != 0 {
		t.Errorf("a restart with a fresh token after the login wrote %v", writes)
	}

	w.clock.SetTime(want)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"refresh-0", "login-2"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("refresh tokens sent by %s in (-want +got): the new login's must go before it dies at %s in\n%s", want.Sub(epoch), dies.Sub(epoch), diff)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
}

// A login stores a refresh token with its own expiry (the callback, refresh_expires_in)
// beside an access token that is still fresh. The passes that find that token fresh
// renew before the new refresh token dies (stillFresh), and Ready must say so, as it
// says it for a rotated grant, not drop the words until the next rotation brings them
// back. That renewal keeps 2 minutes before the refresh token's death, not
// spec.renewBefore, so the words carry no margin until a rotation plans one. The words
// stay the same on every pass (a restart writes nothing).
func TestReadyNamesTheRefreshTokenLifetimeAfterALogin(t *testing.T) {
	const (
		plain  = "Access token is in Secret acme-token"
		dies   = plain + "; the refresh token expires before the access token (refresh_expires_in 30m0s, expires_in 1h0m0s): renewing before the refresh token expires"
		dies5m = plain + "; the refresh token expires before the access token (refresh_expires_in 30m0s, expires_in 1h0m0s): renewing 5m0s before the refresh token expires"
	)
	cases := map[string]struct {
		// refreshLifetime is the first rotation's refresh_expires_in (0: an offline
		// token); the next rotation's is 30 minutes.
		refreshLifetime, renewBefore time.Duration
		// Ready's message before the login, after it, and after the next rotation.
		before, after, next string
	}{
		"a grant rotated with a 30-minute refresh token, and a login that gets another": {
			refreshLifetime: 30 * time.Minute, before: dies, after: dies, next: dies,
		},
		"a grant rotated with an offline token, and a login without offline_access": {
			before: plain, after: dies, next: dies,
		},
		"renewBefore 5m, a grant rotated with an offline token, and a login without offline_access": {
			renewBefore: 5 * time.Minute, before: plain, after: dies, next: dies5m,
		},
		"renewBefore 5m, a grant rotated with a 30-minute refresh token, and a login that gets another": {
			refreshLifetime: 30 * time.Minute, renewBefore: 5 * time.Minute, before: dies5m, after: dies, next: dies5m,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			w.tokens.lifetime, w.tokens.refreshLifetime = time.Hour, tc.refreshLifetime
			if tc.renewBefore > 0 {
				g := w.grant("acme")
				w.update(g, func() { g.Spec.RenewBefore = &metav1.Duration{Duration: tc.renewBefore} })
			}
			if _, err := w.reconcileGrant("acme"); err != nil {
				t.Fatal(err)
			}
			ready := func() string {
				return condition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition).Message
			}
			if got := ready(); got != tc.before {
				t.Fatalf("before the login, Ready says %q, want %q", got, tc.before)
			}

			login := epoch.Add(5 * time.Minute)
			w.clock.SetTime(login)
			s := w.secret("acme-refresh")
			w.update(s, func() {
				secrets.StoreRefreshToken(s, secrets.RefreshKey(w.grant("acme")), "login-2")
				secrets.SetRefreshLife(s, rotation.Hash("login-2"), rotation.Life(login, 30*time.Minute))
			})
			if _, err := w.reconcileGrant("acme"); err != nil {
				t.Fatal(err)
			}
			if n := len(w.tokens.refreshes()); n != 1 {
				t.Fatalf("the pass after the login sent %d refresh tokens in all, want 1: the access token is fresh", n)
			}
			if got := ready(); got != tc.after {
				t.Errorf("after the login, Ready says %q, want %q", got, tc.after)
			}
			// What the words say: the renewal comes before the login's token dies.
			if latest := login.Add(30*time.Minute - rotation.MinRenewMargin); w.grant("acme").Status.RenewalTime.Time.After(latest) {
				t.Errorf("after the login, renewalTime %s in, want no later than %s in", w.grant("acme").Status.RenewalTime.Sub(epoch), latest.Sub(epoch))
			}
			w.takeWrites()

			w.clock.Step(time.Minute)
			w.grants = &CDUserGrantReconciler{Client: w.client, APIReader: w.client, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Holder: "me-after-restart"}
			if _, err := w.reconcileGrant("acme"); err != nil {
				t.Fatal(err)
			}
			if got := ready(); got != tc.after {
				t.Errorf("after the login and a restart, Ready says %q, want %q", got, tc.after)
			}
			if writes := w.takeWrites(); len(writes) != 0 {
				t.Errorf("a restart with a fresh token after the login wrote %v", writes)
			}

			w.tokens.refreshLifetime = 30 * time.Minute
			w.clock.SetTime(w.grant("acme").Status.RenewalTime.Time)
			if _, err := w.reconcileGrant("acme"); err != nil {
				t.Fatal(err)
			}
			if got := w.tokens.refreshes(); len(got) != 2 || got[1] != "login-2" {
				t.Fatalf("refresh tokens sent by the renewal time: %v, want the login's second", got)
			}
			if got := ready(); got != tc.next {
				t.Errorf("after the next rotation, Ready says %q, want %q", got, tc.next)
			}
		})
	}
}
