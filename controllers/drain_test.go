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
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
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

// getHook runs hook once, on the first read of the named object through the client.
type getHook struct {
	client.Client
	name string
	hook func()
}

func (g *getHook) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if key.Name == g.name && g.hook != nil {
		f := g.hook
		g.hook = nil
		f()
	}
	return g.Client.Get(ctx, key, obj, opts...)
}

// The manager stops (SIGTERM, a lost leader election, which gives reconciles no grace)
// while a grant's pass reads its refresh-token Secret on its way to a rotation.
// Operator.Start then calls Drain, which finds no rotation in flight and returns, and
// the process exits. With no client-side rate limit (--token-requests-per-second=0) Admit
// did not look at the cancelled context, so the pass went on: it marked the token and
// sent it after Drain had returned, and the answer died with the process (the mark left,
// the successor lost: the customer logs in again).
func TestNoRotationBeginsAfterDrainReturned(t *testing.T) {
	cases := map[string]struct {
		// cancel says the manager cancelled the pass's context before Drain, as
		// controller-runtime does; a pass whose context outlives it is refused by Drain
		// alone.
		cancel bool
	}{
		"the pass's context cancelled, as the manager stopped": {cancel: true},
		"the pass's context still live":                        {cancel: false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			drained := false
			w.grants.Client = &getHook{Client: w.client, name: "acme-refresh", hook: func() {
				if tc.cancel {
					cancel()
				}
				dctx, dcancel := context.WithTimeout(context.Background(), time.Second)
				defer dcancel()
				if lost := w.grants.Drain(dctx); lost != 0 {
					t.Errorf("Drain lost %d, want 0: nothing was in flight", lost)
				}
				drained = true // Operator.Start returns; the process exits
			}}
			_, err := w.grants.Reconcile(ctx, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "acme"}})
			if !drained {
				t.Fatal("the pass did not read the refresh-token Secret")
			}
			if sent := w.tokens.refreshes(); len(sent) > 0 {
				t.Errorf("refresh token sent (%v) after Drain returned with nothing in flight: the process exits with the answer on its way", sent)
			}
			if m := rotation.ReadMark(w.secret("acme-refresh").Annotations); m.Hash != "" {
				t.Errorf("the refresh token was marked in flight (%+v) after Drain returned: an attempt counted that never went out", m)
			}
			if err == nil {
				t.Error("the pass ended without an error: nothing says the rotation did not happen")
			}
		})
	}
}
