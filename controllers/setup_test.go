package controllers

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

func TestSecretChangedLetsThroughOnlyNewsForTheCRsThatReadTheSecret(t *testing.T) {
	secret := func(typ string, data map[string]string) *corev1.Secret {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s", Labels: map[string]string{cdv1.SecretTypeLabel: typ}}, Data: map[string][]byte{}}
		for k, v := range data {
			s.Data[k] = []byte(v)
		}
		return s
	}
	stored := secret(cdv1.SecretTypeRefreshToken, nil)
	secrets.StoreRefreshToken(stored, "key", "rt-2")
	marked := stored.DeepCopy()
	rotation.WriteMark(marked.Annotations, rotation.Mark{Hash: "hash", Holder: "manager-0", Since: epoch})
	for _, tc := range []struct {
		name     string
		old, cur *corev1.Secret
		want     bool
	}{
		{"a new client secret", secret(cdv1.SecretTypeClient, map[string]string{"client_secret": "a"}), secret(cdv1.SecretTypeClient, map[string]string{"client_secret": "b"}), true},
		{"a refresh token put in by hand", secret(cdv1.SecretTypeRefreshToken, map[string]string{"refresh_token": "a"}), secret(cdv1.SecretTypeRefreshToken, map[string]string{"refresh_token": "b"}), true},
		{"a Secret opted in with another purpose", secret(cdv1.SecretTypeAccessToken, nil), secret(cdv1.SecretTypeRefreshToken, nil), true},
		{"the operator's own stored refresh token", secret(cdv1.SecretTypeRefreshToken, map[string]string{"key": "rt-1"}), stored, false},
		{"an in-flight mark (metadata only)", stored, marked, false},
		{"the same data, one map nil", &corev1.Secret{ObjectMeta: stored.ObjectMeta}, &corev1.Secret{ObjectMeta: stored.ObjectMeta, Data: map[string][]byte{}}, false},
		{"an output Secret rewritten at a rotation", secret(cdv1.SecretTypeAccessToken, map[string]string{"expires_at": "1"}), secret(cdv1.SecretTypeAccessToken, map[string]string{"expires_at": "2"}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := secretChanged.Update(event.UpdateEvent{ObjectOld: tc.old, ObjectNew: tc.cur}); got != tc.want {
				t.Errorf("secretChanged = %v, want %v", got, tc.want)
			}
		})
	}
}

// secretEvents does what Owns with outputTampered and a Watches with secretChanged did:
// the grant that owns an output Secret is reconciled when the Secret appears, goes or is
// edited by hand, never for the operator's own rotation of it; the referencing handler
// sees only the events secretChanged lets through.
func TestSecretEventsRoutesEachEventAsOwnsAndWatchesDid(t *testing.T) {
	owner := &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme", UID: "uid-1"}}
	gvk := cdv1.GroupVersion.WithKind("CDUserGrant")
	output := func(token string) *corev1.Secret {
		out := secrets.Output{Owner: owner, OwnerGVK: gvk, Name: "acme-token", AccessToken: token, TokenType: "Bearer",
			Schedule: rotation.Schedule{ExpiresAt: epoch.Add(time.Hour), RenewAt: epoch.Add(40 * time.Minute)}}
		raw, err := json.Marshal(out.Apply())
		if err != nil {
			t.Fatal(err)
		}
		s := &corev1.Secret{}
		if err := json.Unmarshal(raw, s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	issued, rewritten := output("at-1"), output("at-2")
	edited := issued.DeepCopy()
	edited.Data[cdv1.AccessTokenKey] = []byte("hand-edited")
	refresh := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme-refresh", Labels: map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeRefreshToken}},
		Data: map[string][]byte{"refresh_token": []byte("rt-1")}}
	byHand := refresh.DeepCopy()
	byHand.Data["refresh_token"] = []byte("rt-from-a-login")
	stored := refresh.DeepCopy()
	secrets.StoreRefreshToken(stored, "refresh_token", "rt-2")

	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(gvk, meta.RESTScopeNamespace)
	scheme := runtime.NewScheme()
	if err := cdv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	update := func(old, cur *corev1.Secret) event.UpdateEvent {
		return event.UpdateEvent{ObjectOld: old, ObjectNew: cur}
	}
	for _, tc := range []struct {
		name            string
		send            func(handler.EventHandler, workqueue.TypedRateLimitingInterface[reconcile.Request])
		wantOwner       bool // the grant owning the Secret is enqueued
		wantReferencing int  // events given to the referencing handler
	}{
		{"an output Secret created", func(h handler.EventHandler, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			h.Create(t.Context(), event.CreateEvent{Object: issued}, q)
		}, true, 1},
		{"the operator's new token in its output Secret", func(h handler.EventHandler, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			h.Update(t.Context(), update(issued, rewritten), q)
		}, false, 0},
		{"an output Secret edited by hand", func(h handler.EventHandler, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			h.Update(t.Context(), update(issued, edited), q)
		}, true, 0},
		{"an output Secret deleted", func(h handler.EventHandler, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			h.Delete(t.Context(), event.DeleteEvent{Object: issued}, q)
		}, true, 1},
		{"a refresh token put in by hand", func(h handler.EventHandler, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			h.Update(t.Context(), update(refresh, byHand), q)
		}, false, 1},
		{"the operator's own stored refresh token", func(h handler.EventHandler, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			h.Update(t.Context(), update(refresh, stored), q)
		}, false, 0},
		{"a generic event", func(h handler.EventHandler, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			h.Generic(t.Context(), event.GenericEvent{Object: refresh}, q)
		}, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
			defer q.ShutDown()
			var referencing calls
			tc.send(secretEvents{owned: handler.EnqueueRequestForOwner(scheme, mapper, &cdv1.CDUserGrant{}, handler.OnlyControllerOwner()), referencing: referencing.handler()}, q)
			if got := q.Len() == 1; got != tc.wantOwner {
				t.Errorf("the owning grant enqueued: %v, want %v (queue length %d)", got, tc.wantOwner, q.Len())
			}
			if referencing.n != tc.wantReferencing {
				t.Errorf("the referencing handler was given %d events, want %d", referencing.n, tc.wantReferencing)
			}
		})
	}
}

// calls counts the events a handler was given.
type calls struct{ n int }

func (c *calls) handler() handler.EventHandler {
	return handler.Funcs{
		CreateFunc: func(context.Context, event.CreateEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			c.n++
		},
		UpdateFunc: func(context.Context, event.UpdateEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			c.n++
		},
		DeleteFunc: func(context.Context, event.DeleteEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			c.n++
		},
		GenericFunc: func(context.Context, event.GenericEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			c.n++
		},
	}
}
