package controllers

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
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

// boundIssuer is an identity server whose refresh tokens belong to the client and token
// URL that issued them (RFC 6749 §6): presented by another client it answers
// invalid_grant and spends nothing. It records who was sent what.
type boundIssuer struct {
	mu    sync.Mutex
	owner map[string]string // token -> tokenURL|clientID
	spent map[string]bool
	next  int
	seen  []string // "tokenURL|clientID token"
	lost  []bool   // per request: answer lost (the request never reached the server)
}

func newBoundIssuer() *boundIssuer {
	return &boundIssuer{owner: map[string]string{"refresh-0": "https://id.example.com/connect/token|login-id"}, spent: map[string]bool{}}
}

func (b *boundIssuer) ClientCredentials(context.Context, tokenclient.Endpoint) (*tokenclient.Token, error) {
	return nil, fmt.Errorf("not used")
}

func (b *boundIssuer) Exchange(context.Context, tokenclient.Endpoint, string, string, string) (*tokenclient.Token, error) {
	return nil, fmt.Errorf("not used")
}

func (b *boundIssuer) Refresh(_ context.Context, ep tokenclient.Endpoint, rt string) (*tokenclient.Token, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	who := ep.TokenURL + "|" + ep.ClientID
	b.seen = append(b.seen, who+" "+rt)
	if len(b.lost) > 0 {
		lost := b.lost[0]
		b.lost = b.lost[1:]
		if lost {
			return nil, lostAnswer
		}
	}
	if b.owner[rt] != who || b.spent[rt] {
		return nil, invalidGrant // unknown here, issued to another client, or spent
	}
	b.spent[rt] = true
	b.next++
	next := fmt.Sprintf("refresh-%d", b.next)
	b.owner[next] = who
	return &tokenclient.Token{AccessToken: fmt.Sprintf("access-%d", b.next), TokenType: "Bearer", RefreshToken: next, Scopes: []string{"marketplace"}, Lifetime: 30 * time.Minute}, nil
}

func (b *boundIssuer) sentTo() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.seen...)
}

// otherLogin is a second AuthorizationCode CDCredential of the namespace: another
// client at another token host.
func otherLogin() (*cdv1.CDCredential, *corev1.Secret) {
	return &cdv1.CDCredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "other", UID: "uid-other", Generation: 1},
			Spec:       cdv1.CDCredentialSpec{Flow: cdv1.FlowAuthorizationCode, ClientSecretRef: cdv1.ClientSecretReference{Name: "other-client"}, Issuer: "https://id.other.example.net"},
			Status: cdv1.CDCredentialStatus{ClientID: "other-id", Conditions: []metav1.Condition{{
				Type: cdv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: cdv1.ClientReadyReason, LastTransitionTime: metav1.NewTime(epoch),
			}}},
		},
		optedIn(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "other-client"},
			Data: map[string][]byte{"client_id": []byte("other-id"), "client_secret": []byte("other-secret")}}, cdv1.SecretTypeClient)
}

// A refresh whose answer was lost waits for its one resend; spec.credentialRef is
// pointed at another client at another host meanwhile (a mistake, reverted minutes
// later). The token may be live and belongs to the client it was sent to: it is not
// sent to the other (whose invalid_grant would be taken for an interrupted rotation,
// and the revert for a token sent twice), the grant says what is pending, and once
// pointed back the resend goes to its own client.
func TestALostRefreshIsResentOnlyToTheClientItWasSentTo(t *testing.T) {
	b := newBoundIssuer()
	other, otherClient := otherLogin()
	w := newWorld(t, other, otherClient)
	w.grants.Tokens = b
	res, err := w.reconcileGrant("acme") // refresh-0 -> refresh-1 at login-id
	if err != nil {
		t.Fatal(err)
	}
	w.clock.Step(res.RequeueAfter)
	b.lost = []bool{true} // the request never reached the server: refresh-1 is live
	if res, err = w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	late := w.clock.Now().Add(res.RequeueAfter)
	marked := rotation.ReadMark(w.secret("acme-refresh").Annotations)

	w.clock.Step(time.Minute)
	g := w.grant("acme")
	w.update(g, func() { g.Spec.CredentialRef.Name = "other" })
	// Passes past the point the resend was due (Stalled ends each in a terminal error;
	// the revert, a spec change, brings the grant back).
	for w.clock.Now().Before(late.Add(time.Minute)) {
		w.clock.Step(time.Minute)
		_, _ = w.reconcileGrant("acme")
	}
	if sent := b.sentTo(); len(sent) != 2 {
		t.Errorf("sent %q, want nothing after the lost refresh while the grant names another client", sent)
	}
	conds := w.grant("acme").Status.Conditions
	wantCondition(t, conds, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.RotationPendingAtOtherClientReason)
	wantCondition(t, conds, cdv1.StalledCondition, metav1.ConditionTrue, cdv1.RotationPendingAtOtherClientReason)
	if msg, want := condition(t, conds, cdv1.ReadyCondition).Message, "A rotation interrupted at client login-id is pending: point spec.credentialRef back at CDCredential login, or have the customer log in again"; !strings.HasPrefix(msg, want) {
		t.Errorf("Ready message %q, want it to start %q", msg, want)
	}
	if got := rotation.ReadMark(w.secret("acme-refresh").Annotations); got != marked {
		t.Errorf("mark after the edit %+v, want the lost send's %+v (no resend counted)", got, marked)
	}

	// The edit is reverted: the resend, due since, goes to the client the token belongs to.
	g = w.grant("acme")
	w.update(g, func() { g.Spec.CredentialRef.Name = "login" })
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"https://id.example.com/connect/token|login-id refresh-0",
		"https://id.example.com/connect/token|login-id refresh-1", // lost
		"https://id.example.com/connect/token|login-id refresh-1", // the resend, to its own client
	}
	if diff := cmp.Diff(want, b.sentTo()); diff != "" {
		t.Errorf("sent (-want +got):\n%s", diff)
	}
	if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "refresh-2" {
		t.Errorf("refresh-token Secret holds %q, want the resend's successor refresh-2", got)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
}

// Grant acme rotates acme-refresh (binding it), then its spec.refreshTokenSecretRef moves
// to a new Secret (a new login stored elsewhere). No grant names acme-refresh any more:
// the binding no longer keeps another grant off it. While acme still holds a successor
// for it, not stored yet, it does: the successor goes there, and the grant that took the
// Secret over would spend the token it replaces.
func TestASecretItsGrantNoLongerNamesIsReleasedOnceNothingIsHeldForIt(t *testing.T) {
	for _, held := range []bool{false, true} {
		t.Run(fmt.Sprintf("successor held: %v", held), func(t *testing.T) {
			w := newWorld(t,
				optedIn(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme-refresh-2"},
					Data: map[string][]byte{"refresh_token": []byte("login-2")}}, cdv1.SecretTypeRefreshToken),
				grantObj("beta", "beta-refresh"))
			if held {
				w.grants.PersistTimeout = time.Second
				stop := advanceWhenWaited(w.clock) // through the write's retries
				defer stop()
				w.failStoringNewRefreshTokens()
			}
			if _, err := w.reconcileGrant("acme"); err != nil { // refresh-0 -> refresh-1 for acme-refresh
				t.Fatal(err)
			}
			if got := w.grants.held.has("uid-acme"); got != held {
				t.Fatalf("a successor held: %v, want %v", got, held)
			}
			g := w.grant("acme")
			w.update(g, func() { g.Spec.RefreshTokenSecretRef.Name = "acme-refresh-2" })
			b := w.grant("beta")
			w.update(b, func() { b.Spec.RefreshTokenSecretRef.Name = "acme-refresh" })
			if _, err := w.reconcileGrant("beta"); err != nil {
				t.Fatal(err)
			}
			ready := condition(t, w.grant("beta").Status.Conditions, cdv1.ReadyCondition)
			if !held {
				if ready.Reason == cdv1.RefreshTokenSecretInUseReason {
					t.Errorf("beta is refused acme-refresh, which no grant names any more: %s", ready.Message)
				}
				if got := secrets.BindingOf(w.secret("acme-refresh")); got.UID != "uid-beta" {
					t.Errorf("acme-refresh bound to %+v, want beta, which took it over", got)
				}
				return
			}
			if ready.Reason != cdv1.RefreshTokenSecretInUseReason {
				t.Errorf("beta Ready %s (%s), want %s: acme holds a successor for acme-refresh", ready.Reason, ready.Message, cdv1.RefreshTokenSecretInUseReason)
			}
			if want := "CDUserGrant ns/acme"; !strings.Contains(ready.Message, want) {
				t.Errorf("beta Ready message %q does not name the grant that holds the Secret (%s)", ready.Message, want)
			}
			if diff := cmp.Diff([]string{"refresh-0"}, w.tokens.refreshes()); diff != "" {
				t.Errorf("refreshes sent (-want +got):\n%s", diff)
			}
		})
	}
}
