package manager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
)

var (
	keyName = types.NamespacedName{Namespace: "cd-system", Name: KeySecretName}
	heldKey = []byte("the-key-every-replica-holds-0123456789")
)

// startKeeper runs a keyKeeper over a fake API holding the key Secret, and returns what
// its Start returned once it does.
func startKeeper(t *testing.T, cs *fake.Clientset, clk *clocktesting.FakeClock) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() { done <- (&keyKeeper{name: keyName, key: heldKey, secrets: cs, clock: clk}).Start(ctx) }()
	return done
}

// until polls cond for up to 10 seconds.
func until(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) { return cond() })
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// awaitWatch returns once the keeper has listed the Secret and opened its watch.
func awaitWatch(t *testing.T, cs *fake.Clientset) {
	t.Helper()
	until(t, "the keeper watching", func() (bool, error) {
		for _, a := range cs.Actions() {
			if a.GetVerb() == "watch" {
				return true, nil
			}
		}
		return false, nil
	})
}

func TestADeletedKeySecretIsCreatedAgainAfterAFailedAttempt(t *testing.T) {
	cs := fake.NewClientset(keySecret(keyName, heldKey))
	var creates atomic.Int32
	cs.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if creates.Add(1) == 1 {
			return true, nil, apierrors.NewServiceUnavailable("the API server is restarting")
		}
		return false, nil, nil
	})
	clk := clocktesting.NewFakeClock(time.Now())
	done := startKeeper(t, cs, clk)
	secrets := cs.CoreV1().Secrets(keyName.Namespace)
	awaitWatch(t, cs)

	if err := secrets.Delete(context.Background(), keyName.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	until(t, "the failed create waiting for its retry", func() (bool, error) { return creates.Load() == 1 && clk.HasWaiters(), nil })
	if _, err := secrets.Get(context.Background(), keyName.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the Secret after a failed create: %v", err)
	}
	clk.Step(keyRetryMin)
	until(t, "the Secret created again", func() (bool, error) {
		s, err := secrets.Get(context.Background(), keyName.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if !bytes.Equal(s.Data[keyDataKey], heldKey) {
			return false, fmt.Errorf("created with another key")
		}
		return true, nil
	})
	select {
	case err := <-done:
		t.Fatalf("the keeper returned %v", err)
	default:
	}
}

func TestAKeySecretHoldingAnotherKeyEndsTheKeeper(t *testing.T) {
	cs := fake.NewClientset(keySecret(keyName, heldKey))
	done := startKeeper(t, cs, clocktesting.NewFakeClock(time.Now()))
	awaitWatch(t, cs)
	if _, err := cs.CoreV1().Secrets(keyName.Namespace).Update(context.Background(), keySecret(keyName, []byte("rotated-on-purpose-0123456789abcdefghij")), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, errKeyReplaced) {
			t.Errorf("the keeper returned %v, want %v", err, errKeyReplaced)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the keeper still runs 10s after its Secret got another key")
	}
}
