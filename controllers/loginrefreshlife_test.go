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
