package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// The loop stores what a refresh returned, so a refusal must leave the stored token as
// it was: an error answer has no refresh token and no lifetime, and storing it spun the
// grant's goroutine on an empty token.
func TestTheLoopStoresOnlyAnIssuedToken(t *testing.T) {
	answer := `{"error":"invalid_grant"}`
	code := http.StatusBadRequest
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(answer))
	}))
	defer idp.Close()
	cs := fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: baselineNS, Name: "b1-refresh"}, Data: map[string][]byte{"refresh_token": []byte("rt-1")}})
	l := &loop{cs: cs, tokenURL: idp.URL, http: idp.Client()}
	stored := func() string {
		t.Helper()
		s, err := cs.CoreV1().Secrets(baselineNS).Get(context.Background(), "b1-refresh", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return string(s.Data["refresh_token"])
	}

	if _, ok := l.rotate("b1"); ok {
		t.Error("a refused refresh counted as a rotation")
	}
	if got := stored(); got != "rt-1" || l.writes.Load() != 0 {
		t.Errorf("after a refusal: stored %q with %d writes, want rt-1 and none", got, l.writes.Load())
	}

	answer, code = `{"access_token":"at-2","refresh_token":"rt-2","expires_in":300}`, http.StatusOK
	if lifetime, ok := l.rotate("b1"); !ok || lifetime.Seconds() != 300 {
		t.Errorf("an issued token: ok %v, lifetime %s", ok, lifetime)
	}
	if got := stored(); got != "rt-2" || l.writes.Load() != 2 {
		t.Errorf("after an issued token: stored %q with %d writes, want rt-2 and 2", got, l.writes.Load())
	}
}

// The loop counts a write only when the API server took it: its writes per rotation are
// set beside the manager's.
func TestTheLoopCountsOnlyWritesTheAPIServerTook(t *testing.T) {
	cs := fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: baselineNS, Name: "b1-refresh"}, Data: map[string][]byte{"refresh_token": []byte("rt-1")}})
	cs.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("quota exceeded")
	})
	l := &loop{cs: cs}
	s, err := cs.CoreV1().Secrets(baselineNS).Get(context.Background(), "b1-refresh", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l.store(context.Background(), "b1", s, loopToken{AccessToken: "at-2", RefreshToken: "rt-2"})
	if got := l.writes.Load(); got != 1 {
		t.Errorf("%d writes counted, want 1: the token Secret's create failed", got)
	}
}
