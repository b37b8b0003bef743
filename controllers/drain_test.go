package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// After SIGTERM the manager gives Drain manager.ShutdownDrain to store the held refresh
// tokens, and the pod is killed at its grace period's end: Drain whose context ended
// returns at once with the tokens it could not store, so the process logs the customers
// it lost instead of being killed mid-retry.
func TestDrainStopsWhenItsContextEnds(t *testing.T) {
	w := newWorld(t)
	w.grants.PersistTimeout = time.Second
	stop := advanceWhenWaited(w.clock)
	defer stop()
	w.failStoringNewRefreshTokens() // the API server is down from the send on
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if _, ok := w.grants.held.get("uid-acme"); !ok {
		t.Fatal("no token held")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // the drain budget is spent
	start := w.clock.Now()
	lost := drain(t, w, ctx)
	if spent := w.clock.Now().Sub(start); spent > 5*time.Second {
		t.Errorf("Drain with its context ended went on retrying for %v (until the holder deadline); want it to return at once", spent)
	}
	if lost != 1 {
		t.Errorf("Drain lost %d, want the 1 token it could not store", lost)
	}
}

// Drain's budget is shared by every held refresh token: an outage each token's write
// outlasts only after several tries does not spend the budget on the first token while
// the others wait their turn.
func TestDrainTriesEveryHeldTokenBeforeBackingOffOnAny(t *testing.T) {
	w := newWorld(t,
		optedIn(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "beta-refresh", Annotations: map[string]string{cdv1.BoundToAnnotation: "beta/uid-beta"}},
			Data: map[string][]byte{"refresh_token": []byte("beta-0")}}, cdv1.SecretTypeRefreshToken),
		grantObj("beta", "beta-refresh"))
	w.grants.PersistTimeout = time.Second
	stop := advanceWhenWaited(w.clock)
	defer stop()
	storing := func(verb string, obj client.Object) bool {
		return verb == "update" && strings.HasSuffix(obj.GetName(), "-refresh") && obj.GetAnnotations()[cdv1.RotationInFlightAnnotation] == ""
	}
	w.setFault(func(verb string, obj client.Object) error {
		if storing(verb, obj) {
			return errors.New("connection refused")
		}
		return nil
	})
	for _, g := range []string{"acme", "beta"} {
		if _, err := w.reconcileGrant(g); err != nil {
			t.Fatal(err)
		}
		if _, ok := w.grants.held.get(types.UID("uid-" + g)); !ok {
			t.Fatalf("no token held for %s", g)
		}
	}
	// Each Secret's write fails 6 times more (about 10 s of backoff), and the budget ends
	// 15 s in: enough for both in turns, not for one after the other. A write after the
	// budget ended fails, as its request would.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	budget := w.clock.Now().Add(15 * time.Second)
	failures := map[string]int{}
	w.setFault(func(verb string, obj client.Object) error {
		if !w.clock.Now().Before(budget) {
			cancel()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if storing(verb, obj) && failures[obj.GetName()] < 6 {
			failures[obj.GetName()]++
			return errors.New("connection refused")
		}
		return nil
	})
	lost := drain(t, w, ctx)
	if lost != 0 {
		t.Errorf("Drain lost %d of 2 tokens (failed writes %v), want both stored within the budget", lost, failures)
	}
	for s, want := range map[string]string{"acme-refresh": "refresh-1", "beta-refresh": "refresh-2"} {
		if got := string(w.secret(s).Data["refresh_token"]); got != want {
			t.Errorf("%s holds %q, want %q", s, got, want)
		}
	}
}

// A held refresh token whose holder deadline passes while Drain retries it is given up
// (another process may resend the spent token from then on) and counted as lost: that
// customer must log in again.
func TestDrainCountsATokenWhoseHolderDeadlinePassed(t *testing.T) {
	w := newWorld(t)
	w.grants.PersistTimeout = time.Second
	stop := advanceWhenWaited(w.clock)
	defer stop()
	w.failStoringNewRefreshTokens() // the outage outlasts the holder deadline
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if _, ok := w.grants.held.get("uid-acme"); !ok {
		t.Fatal("no token held")
	}
	if lost := drain(t, w, t.Context()); lost != 1 {
		t.Errorf("Drain reported %d lost, want 1: the token's holder deadline passed unstored", lost)
	}
}

// drain runs Drain with ctx and returns how many tokens it lost, failing the test if it
// does not return (the fake clock advances as it waits).
func drain(t *testing.T, w *world, ctx context.Context) int {
	t.Helper()
	done := make(chan int)
	go func() { done <- w.grants.Drain(ctx) }()
	select {
	case lost := <-done:
		return lost
	case <-time.After(20 * time.Second):
		t.Fatal("Drain did not return")
		return 0
	}
}
