package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// refuseImmutable refuses, as the API server does, a write of an immutable Secret's
// data (an update that changes it, or any server-side apply, which carries it); its
// metadata may still change. The fake client does not enforce `immutable`.
func (w *world) refuseImmutable(verb string, obj client.Object) error {
	if verb != "update" && verb != "apply" {
		return nil
	}
	stored := &corev1.Secret{}
	if w.client.Get(context.Background(), client.ObjectKeyFromObject(obj), stored) != nil || stored.Immutable == nil || !*stored.Immutable {
		return nil
	}
	if s, ok := obj.(*corev1.Secret); ok && verb == "update" && equality.Semantic.DeepEqual(s.Data, stored.Data) && s.Immutable != nil && *s.Immutable {
		return nil
	}
	return apierrors.NewInvalid(schema.GroupKind{Kind: "Secret"}, obj.GetName(),
		field.ErrorList{field.Forbidden(field.NewPath("data"), "field is immutable when `immutable` is set")})
}

// makeImmutable sets immutable: true on Secret name, as a user or a policy would.
func (w *world) makeImmutable(name string) {
	w.t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}}
	w.update(s, func() { yes := true; s.Immutable = &yes })
}

// duringRequest runs hook while a token request is out, after the mark and before
// anything is stored.
type duringRequest struct {
	*fakeIssuer
	hook func()
}

func (d duringRequest) Refresh(ctx context.Context, e tokenclient.Endpoint, rt string) (*tokenclient.Token, error) {
	d.hook()
	return d.fakeIssuer.Refresh(ctx, e, rt)
}

func (d duringRequest) ClientCredentials(ctx context.Context, e tokenclient.Endpoint) (*tokenclient.Token, error) {
	d.hook()
	return d.fakeIssuer.ClientCredentials(ctx, e)
}

// An immutable refresh-token Secret (a "Secrets must be immutable" policy, a user's
// patch) can never take the new refresh token a rotation returns: the token is not sent,
// the grant says why and how to fix it, and a Secret created again without `immutable`
// is rotated at once.
func TestAnImmutableRefreshTokenSecretIsNeverSent(t *testing.T) {
	w := newWorld(t)
	w.setFault(w.refuseImmutable)
	w.makeImmutable("acme-refresh")
	if _, err := w.reconcileGrant("acme"); err == nil {
		t.Error("a pass that can do nothing until the Secret changes ended without a terminal error")
	}
	if n := len(w.tokens.refreshes()); n != 0 {
		t.Fatalf("%d refresh requests sent for a refresh token whose successor the API server cannot store (immutable Secret)", n)
	}
	g := w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.RefreshTokenSecretImmutableReason)
	wantCondition(t, g.Status.Conditions, cdv1.StalledCondition, metav1.ConditionTrue, cdv1.RefreshTokenSecretImmutableReason)
	msg := condition(t, g.Status.Conditions, cdv1.ReadyCondition).Message
	for _, want := range []string{"Secret acme-refresh", "immutable", cdv1.SecretTypeLabel + "=" + cdv1.SecretTypeRefreshToken, "refresh_token"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Ready message %q does not say %q", msg, want)
		}
	}
	if events := w.recorded(); len(events) != 1 || !strings.HasPrefix(events[0], "Warning "+cdv1.RefreshTokenSecretImmutableReason) {
		t.Errorf("events %q, want one RefreshTokenSecretImmutable warning", events)
	}
	if s := w.secret("acme-refresh"); s.Annotations[cdv1.RotationInFlightAnnotation] != "" {
		t.Errorf("in-flight mark %q on a Secret whose token is not sent", s.Annotations[cdv1.RotationInFlightAnnotation])
	}

	// The customer's Secret created again as the message says: rotated at once.
	old := w.secret("acme-refresh")
	if err := w.client.Delete(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	if err := w.client.Create(context.Background(), optedIn(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme-refresh"},
		Data: map[string][]byte{"refresh_token": []byte("refresh-0")}}, cdv1.SecretTypeRefreshToken)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if sent := w.tokens.refreshes(); len(sent) != 1 {
		t.Errorf("refreshes %q, want one once the Secret is mutable", sent)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	if v := string(w.secret("acme-refresh").Data["refresh_token"]); v != "refresh-1" {
		t.Errorf("refresh-token Secret holds %q, want the new refresh-1", v)
	}
}

// A refresh-token Secret made immutable while its token is out: the new refresh token
// is held, and Ready says the one thing that stores it (immutable cannot be unset):
// delete the Secret, and the operator creates it again with the new token.
func TestARefreshTokenSecretMadeImmutableMidRotationIsCreatedAgainWithTheNewToken(t *testing.T) {
	w := newWorld(t)
	w.setFault(w.refuseImmutable)
	w.grants.Tokens = duringRequest{fakeIssuer: w.tokens, hook: func() { w.makeImmutable("acme-refresh") }}
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	g := w.grant("acme")
	wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretWriteFailedReason)
	msg := condition(t, g.Status.Conditions, cdv1.ReadyCondition).Message
	for _, want := range []string{"immutable", "Delete Secret acme-refresh", "creates it again with the new refresh token"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Ready message %q does not say %q", msg, want)
		}
	}
	if strings.Contains(msg, "writes it again with backoff") {
		t.Errorf("Ready message %q promises a write the API server refuses for good", msg)
	}

	old := w.secret("acme-refresh")
	if err := w.client.Delete(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	s := w.secret("acme-refresh")
	if v := string(s.Data["refresh_token"]); v != "refresh-1" || s.Immutable != nil {
		t.Errorf("refresh-token Secret holds %q (immutable %v), want the new refresh-1 in a Secret created again", v, s.Immutable)
	}
	if sent := w.tokens.refreshes(); len(sent) != 1 {
		t.Errorf("refreshes %q, want the one whose successor was stored", sent)
	}
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
}

// A CR's own output Secret made immutable (by a user, or a policy) cannot take the next
// token: the operator deletes it (it is the CR's, guarded by its UID and
// resourceVersion) and creates it again with the token, requesting exactly one, whether
// it turned immutable before the renewal or while the request was out.
func TestAnImmutableOutputSecretIsCreatedAgainWithTheNextToken(t *testing.T) {
	type cr struct {
		name, output string
		pass         func(w *world) error
		requests     func(w *world) int
		tokenKey     string
	}
	kinds := map[string]cr{
		"CDCredential": {name: "pricing", output: "pricing-token", tokenKey: "cc-access-2",
			pass:     func(w *world) error { _, err := w.reconcileCred("pricing"); return err },
			requests: func(w *world) int { return w.tokens.ccCount() }},
		"CDUserGrant": {name: "acme", output: "acme-token", tokenKey: "access-2",
			pass:     func(w *world) error { _, err := w.reconcileGrant("acme"); return err },
			requests: func(w *world) int { return len(w.tokens.refreshes()) }},
	}
	for kind, k := range kinds {
		for _, during := range []bool{false, true} {
			name := kind + ", made immutable before the renewal"
			if during {
				name = kind + ", made immutable while the request is out"
			}
			t.Run(name, func(t *testing.T) {
				w := newWorld(t)
				w.setFault(w.refuseImmutable)
				if err := k.pass(w); err != nil {
					t.Fatal(err)
				}
				w.clock.Step(25 * 60e9) // past renewal, before expiry
				if during {
					hook := func() { w.makeImmutable(k.output) }
					w.grants.Tokens = duringRequest{fakeIssuer: w.tokens, hook: hook}
					w.creds.Tokens = duringRequest{fakeIssuer: w.tokens, hook: hook}
				} else {
					w.makeImmutable(k.output)
				}
				if err := k.pass(w); err != nil {
					t.Fatal(err)
				}
				now := w.secret(k.output)
				if got := string(now.Data["access_token"]); got != k.tokenKey || now.Immutable != nil {
					t.Errorf("output Secret holds %q (immutable %v), want %s in a Secret created again", got, now.Immutable, k.tokenKey)
				}
				if !metav1.IsControlledBy(now, ownerOf(w, kind, k.name)) {
					t.Errorf("output Secret created again without its controller reference: %+v", now.OwnerReferences)
				}
				if n := k.requests(w); n != 2 {
					t.Errorf("%d token requests, want 2 (the first token, and one renewal)", n)
				}
				var conds []metav1.Condition
				if kind == "CDCredential" {
					conds = w.cred(k.name).Status.Conditions
				} else {
					conds = w.grant(k.name).Status.Conditions
				}
				wantCondition(t, conds, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
			})
		}
	}
}

// An immutable Secret under the output's name that is not the CR's (an orphaned output
// it would adopt) is not deleted, and no token is requested that could not be stored.
func TestAnImmutableOutputSecretNotTheCRsIsLeftAndNothingIsRequested(t *testing.T) {
	yes := true
	orphan := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pricing-token", Labels: map[string]string{
		cdv1.ManagedByLabel: cdv1.ManagedByValue, cdv1.SecretTypeLabel: cdv1.SecretTypeAccessToken,
	}}, Immutable: &yes, Data: map[string][]byte{"access_token": []byte("old")}}
	w := newWorld(t, orphan)
	w.setFault(w.refuseImmutable)
	_, _ = w.reconcileCred("pricing")
	if n := w.tokens.ccCount(); n != 0 {
		t.Errorf("%d token requests for an output Secret that cannot take the token", n)
	}
	if s := w.secret("pricing-token"); string(s.Data["access_token"]) != "old" {
		t.Errorf("the Secret that is not the CR's was replaced: %q", s.Data["access_token"])
	}
	c := w.cred("pricing")
	ready := condition(t, c.Status.Conditions, cdv1.ReadyCondition)
	if ready.Status != metav1.ConditionFalse || !strings.Contains(ready.Message, "immutable") {
		t.Errorf("Ready %s/%s %q, want False saying the Secret is immutable", ready.Status, ready.Reason, ready.Message)
	}
}

func ownerOf(w *world, kind, name string) metav1.Object {
	if kind == "CDCredential" {
		return w.cred(name)
	}
	return w.grant(name)
}

// A CR's own output Secret is made immutable; at the renewal (25 min into a 30-minute
// token) the identity server is briefly down (502). The token in the output Secret is
// still valid for 5 minutes, and pods keep it as long as the Secret is there. The
// README promises that a pod starting finds no Secret only "in the moment between the
// delete and the create": the delete must not leave the output gone when no token came.
// The first version of the immutable fix deleted it before the request.
func TestAnImmutableOutputIsNotDeletedForARequestThatFails(t *testing.T) {
	for _, kind := range []string{"CDCredential", "CDUserGrant"} {
		t.Run(kind, func(t *testing.T) {
			w := newWorld(t)
			w.setFault(w.refuseImmutable)
			pass := func() { _, _ = w.reconcileCred("pricing") }
			output := "pricing-token"
			if kind == "CDUserGrant" {
				pass = func() { _, _ = w.reconcileGrant("acme") }
				output = "acme-token"
			}
			pass()
			w.clock.Step(25 * time.Minute) // past renewal, 5 minutes before expiry
			w.makeImmutable(output)
			w.tokens.failNext(badGateway)
			pass()
			s := &corev1.Secret{}
			if err := w.client.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: output}, s); err != nil {
				t.Errorf("after a failed renewal the output Secret is gone (%v), though its token is valid for another 5 minutes: pods starting meanwhile cannot start", err)
			}
		})
	}
}
