package controllers

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
)

// TestASpentRefreshTokenWrittenBackIsNeverSentAgain: a customer's refresh-token Secret
// that a GitOps tool manages (Flux drift correction, an ExternalSecret's refresh, a
// SealedSecret unsealed again) is put back to the token it was seeded with, which the
// operator spent in its first rotation. Sent again, a strict single-use provider (Central
// Dispatch) detects the reuse and revokes the customer's whole grant (DESIGN §1): the
// grant stops and says why instead, with one event, and no token in any message.
func TestASpentRefreshTokenWrittenBackIsNeverSentAgain(t *testing.T) {
	w := newWorld(t)
	res, err := w.reconcileGrant("acme") // spends refresh-0, stores refresh-1
	if err != nil {
		t.Fatal(err)
	}
	if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "refresh-1" {
		t.Fatalf("stored %q, want refresh-1", got)
	}
	w.recorded()
	// The GitOps tool re-syncs the Secret from Git: the seeded (now spent) token.
	w.clock.Step(time.Minute)
	w.login("refresh-0")
	w.clock.Step(res.RequeueAfter)
	var errs []error
	for range 2 { // the second pass finds nothing new
		_, err := w.reconcileGrant("acme")
		errs = append(errs, err)
	}

	if diff := cmp.Diff([]string{"refresh-0"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("refresh tokens sent (-want +got), refresh-0 was spent by the operator itself in the first rotation:\n%s", diff)
	}
	for _, err := range errs {
		if !errors.Is(err, reconcile.TerminalError(nil)) {
			t.Errorf("err %v, want a terminal error: nothing to do until the Secret changes", err)
		}
	}
	g := w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenSpentReason)
	wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.RefreshTokenSpentReason)
	wantCondition(t, g.Status.Conditions, cdv1.StalledCondition, metav1.ConditionTrue, cdv1.RefreshTokenSpentReason)
	msg := condition(t, g.Status.Conditions, cdv1.ReadyCondition).Message
	for _, want := range []string{"acme-refresh", "already spent", "reuse", "logs in again", "create-only"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Ready's message %q does not say %q", msg, want)
		}
	}
	warnings := warningsWithReason(t, w, cdv1.RefreshTokenSpentReason, "refresh-0", "refresh-1")
	if len(warnings) != 1 {
		t.Errorf("%s events %q, want one", cdv1.RefreshTokenSpentReason, warnings)
	}

	// The customer logs in again: the grant goes on with the new token.
	w.login("new-login")
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
}

// TestTheStoreOfASuccessorRecordsTheSpentTokenAtNoExtraWrite: the write that stores a
// new refresh token also records the hash of the one it replaced (the first ever spent
// from the Secret, which a GitOps tool writes back, and the last three), so a routine
// rotation stays DESIGN §9's four writes. A server that rotates nothing spent nothing:
// its token is not listed.
func TestTheStoreOfASuccessorRecordsTheSpentTokenAtNoExtraWrite(t *testing.T) {
	w := newWorld(t)
	for i := range 5 {
		res, err := w.reconcileGrant("acme")
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"update acme-refresh", "update acme-refresh", "apply acme-token", "status acme"}
		if diff := cmp.Diff(want, w.takeWrites()); diff != "" {
			t.Errorf("rotation %d: writes (-want +got):\n%s", i, diff)
		}
		w.clock.Step(res.RequeueAfter)
	}
	want := []string{rotation.Hash("refresh-0"), rotation.Hash("refresh-2"), rotation.Hash("refresh-3"), rotation.Hash("refresh-4")}
	if diff := cmp.Diff(want, spentList(w)); diff != "" {
		t.Errorf("spent hashes (-want +got):\n%s", diff)
	}

	w.tokens.noRotate = true
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, spentList(w)); diff != "" {
		t.Errorf("after a refresh that returned no new refresh token, spent hashes (-want +got):\n%s", diff)
	}
}

func spentList(w *world) []string {
	v := w.secret("acme-refresh").Annotations[cdv1.SpentHashesAnnotation]
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// TestASpentTokenWrittenBackWhileARefreshIsOutDoesNotKeepTheSuccessorOut: a GitOps
// re-sync lands while the next refresh is out, so the store's guarded write conflicts and
// reads the Secret again. A new login stored meanwhile wins over the successor, but the
// spent seed is no new login: the successor is stored, and it is what the next renewal
// sends.
func TestASpentTokenWrittenBackWhileARefreshIsOutDoesNotKeepTheSuccessorOut(t *testing.T) {
	w := newWorld(t)
	res, err := w.reconcileGrant("acme") // spends refresh-0, stores refresh-1
	if err != nil {
		t.Fatal(err)
	}
	w.clock.Step(res.RequeueAfter)
	w.grants.Tokens = &whileOut{Issuer: w.tokens, do: func() {
		// Server-side apply of the data alone: the operator's annotations stay.
		s := w.secret("acme-refresh")
		w.update(s, func() { s.Data["refresh_token"] = []byte("refresh-0") })
	}}
	res, err = w.reconcileGrant("acme") // spends refresh-1
	if err != nil {
		t.Fatal(err)
	}
	w.grants.Tokens = w.tokens
	if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "refresh-2" {
		t.Errorf("refresh-token Secret holds %q, want the successor refresh-2", got)
	}
	w.clock.Step(res.RequeueAfter)
	_, _ = w.reconcileGrant("acme")
	if diff := cmp.Diff([]string{"refresh-0", "refresh-1", "refresh-2"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("refresh tokens sent (-want +got):\n%s", diff)
	}
}

// warningsWithReason returns the Warning events recorded since the last look that carry
// reason, and fails the test for any event that carries one of tokens.
func warningsWithReason(t *testing.T, w *world, reason string, tokens ...string) []string {
	t.Helper()
	var out []string
	for _, e := range w.recorded() {
		for _, token := range tokens {
			if strings.Contains(e, token) {
				t.Errorf("event carries a token: %q", e)
			}
		}
		if strings.HasPrefix(e, "Warning "+reason) {
			out = append(out, e)
		}
	}
	return out
}
