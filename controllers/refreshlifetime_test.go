package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// A Keycloak realm with an hour-long access token and the default SSO Session Idle of
// 30 minutes answers a refresh with expires_in 3600 and refresh_expires_in 1800. The
// rotation must spend the refresh token before it dies (renewing at 2/3 of the hour, it
// was refused with invalid_grant and the customer had to log in again), and a restarted
// manager, which has only what was stored, must keep that earlier time. Pods are still
// told the access token's own expiry.
func TestARotationComesBeforeTheRefreshTokenExpiresAcrossARestart(t *testing.T) {
	w := newWorld(t)
	w.tokens.lifetime, w.tokens.refreshLifetime = time.Hour, 30*time.Minute
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	g := w.grant("acme")
	dies := epoch.Add(30 * time.Minute)
	if g.Status.RenewalTime == nil || !g.Status.RenewalTime.Time.Before(dies) {
		t.Fatalf("renewalTime %v, want before the refresh token dies at %s", g.Status.RenewalTime, dies)
	}
	renewAt := g.Status.RenewalTime.Time
	wantExpiry := epoch.Add(time.Hour).Format(time.RFC3339)
	if got := string(w.secret("acme-token").Data[cdv1.ExpiresAtKey]); got != wantExpiry || !g.Status.ExpiresAt.Time.Equal(epoch.Add(time.Hour)) {
		t.Errorf("expires_at %s, status.expiresAt %s; want the access token's expiry %s", got, g.Status.ExpiresAt, wantExpiry)
	}

	// A restarted manager: a new reconciler, nothing in memory.
	w.clock.SetTime(epoch.Add(time.Minute))
	w.grants = &CDUserGrantReconciler{Client: w.client, APIReader: w.client, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Holder: "me-after-restart"}
	res, err := w.reconcileGrant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if want := renewAt.Sub(w.clock.Now()); res.RequeueAfter != want {
		t.Errorf("after a restart: requeue after %s, want %s (the renewal time stored before it)", res.RequeueAfter, want)
	}
	if writes := w.takeWrites(); len(writes) != 0 {
		t.Errorf("a restart with a fresh token wrote %v", writes)
	}

	w.clock.SetTime(renewAt)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if n := len(w.tokens.refreshes()); n != 2 {
		t.Fatalf("at the renewal time, %s before the refresh token dies: %d refreshes in all, want 2", dies.Sub(renewAt), n)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
}
