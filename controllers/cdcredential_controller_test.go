package controllers

import (
	"context"
	"errors"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// refusingIssuer refuses every client-credentials request the way Central Dispatch
// refuses an authorization-code client, and counts the requests.
type refusingIssuer struct {
	mu   sync.Mutex
	sent int
	err  error
}

func (f *refusingIssuer) ClientCredentials(context.Context, tokenclient.Endpoint) (*tokenclient.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent++
	return nil, f.err
}

func (f *refusingIssuer) Refresh(context.Context, tokenclient.Endpoint, string) (*tokenclient.Token, error) {
	return nil, errors.New("not used")
}

func (f *refusingIssuer) Exchange(context.Context, tokenclient.Endpoint, string, string, string) (*tokenclient.Token, error) {
	return nil, errors.New("not used")
}

// TestARefusedRequestIsNotSentAgainUntilItChanges: a CR brought back by an event that
// changes nothing about its request (a sharer's status, say) reports the refusal again
// without sending; a new client secret, or a new generation, is a new request.
func TestARefusedRequestIsNotSentAgainUntilItChanges(t *testing.T) {
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	_ = cdv1.AddToScheme(scheme)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pricing-client", Labels: map[string]string{cdv1.WatchLabel: "true"}},
		Data: map[string][]byte{"client_id": []byte("login-id"), "client_secret": []byte("secret-1")}}
	cred := &cdv1.CDCredential{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pricing", UID: "uid-pricing", Generation: 1},
		Spec: cdv1.CDCredentialSpec{Flow: cdv1.FlowClientCredentials, ClientSecretRef: cdv1.ClientSecretReference{Name: "pricing-client"}, Issuer: "https://id.example.com"}}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(secret, cred).WithStatusSubresource(&cdv1.CDCredential{}).
		WithIndex(&cdv1.CDCredential{}, credentialClientIDIndex, indexClientID).Build()
	tokens := &refusingIssuer{err: &tokenclient.Error{Kind: tokenclient.KindGrantTypeNotAllowed, Code: "unauthorized_client", StatusCode: 400}}
	r := &CDCredentialReconciler{Client: c, APIReader: c, Clock: clocktesting.NewFakeClock(epoch), Tokens: tokens, Recorder: events.NewFakeRecorder(100)}
	key := types.NamespacedName{Namespace: "ns", Name: "pricing"}

	steps := []struct {
		name   string
		change func()
		sent   int
	}{
		{"the first reconcile sends and is refused", func() {}, 1},
		{"a reconcile that changes nothing sends nothing", func() {}, 1},
		{"another one still sends nothing", func() {}, 1},
		{"a new client secret is a new request", func() {
			secret.Data["client_secret"] = []byte("secret-2")
			if err := c.Update(context.Background(), secret); err != nil {
				t.Fatal(err)
			}
		}, 2},
		{"a new generation is a new request", func() {
			got := &cdv1.CDCredential{}
			_ = c.Get(context.Background(), key, got)
			got.Generation++
			if err := c.Update(context.Background(), got); err != nil {
				t.Fatal(err)
			}
		}, 3},
	}
	for _, s := range steps {
		s.change()
		_, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: key})
		if !errors.Is(err, reconcile.TerminalError(nil)) {
			t.Fatalf("%s: err %v, want a terminal error", s.name, err)
		}
		if tokens.sent != s.sent {
			t.Fatalf("%s: %d requests sent, want %d", s.name, tokens.sent, s.sent)
		}
		got := &cdv1.CDCredential{}
		if err := c.Get(context.Background(), key, got); err != nil {
			t.Fatal(err)
		}
		for _, typ := range []string{cdv1.FlowMisuseCondition, cdv1.StalledCondition} {
			if cond := meta.FindStatusCondition(got.Status.Conditions, typ); cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != cdv1.GrantTypeNotAllowedReason {
				t.Errorf("%s: %s is %+v, want True/GrantTypeNotAllowed", s.name, typ, cond)
			}
		}
	}
}
