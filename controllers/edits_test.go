package controllers

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
)

// A refresh whose answer was lost keeps its mark, and its one resend waits for the last
// safe point before the access token expires (README "Rotating refresh tokens safely"
// 5). A client secret rotated meanwhile by an external secrets tool changes the request
// in its secret values only: the resend must still wait, not go out seconds later into
// the outage that swallowed the first send.
func TestANewClientSecretDoesNotBringALostAnswersResendForward(t *testing.T) {
	w := newWorld(t)
	res, err := w.reconcileGrant("acme") // refresh-0 -> refresh-1, token until 10:30
	if err != nil {
		t.Fatal(err)
	}
	w.clock.Step(res.RequeueAfter) // due
	w.tokens.failNext(lostAnswer)
	if res, err = w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if m := rotation.ReadMark(w.secret("acme-refresh").Annotations); m.Hash != rotation.Hash("refresh-1") || m.Attempts != 1 {
		t.Fatalf("mark %+v, want refresh-1's, first attempt", m)
	}
	late := w.clock.Now().Add(res.RequeueAfter)

	// 30 s later the client secret is rotated (both values valid at the IdP meanwhile).
	w.clock.Step(30 * time.Second)
	s := w.secret("login-client")
	w.update(s, func() { s.Data["client_secret"] = []byte("login-secret-2") })
	if res, err = w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"refresh-0", "refresh-1"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("refreshes sent at %s, %s before the last safe point (-want +got):\n%s",
			w.clock.Now().Format(time.TimeOnly), late.Sub(w.clock.Now()), diff)
	}
	if got := w.clock.Now().Add(res.RequeueAfter); !got.Equal(late) {
		t.Errorf("requeued for %s, want the last safe point %s", got.Format(time.TimeOnly), late.Format(time.TimeOnly))
	}

	// At the last safe point the resend goes, with the new client secret.
	w.clock.Step(res.RequeueAfter)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"refresh-0", "refresh-1", "refresh-1"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("refreshes sent (-want +got):\n%s", diff)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "refresh-2" {
		t.Errorf("refresh-token Secret holds %q, want the resend's successor refresh-2", got)
	}
}
