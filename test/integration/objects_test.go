package integration

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/test/support"
)

const (
	apiClientID       = "c01cc60e-api"
	apiClientSecret   = "api-secret-value-1"
	loginClientID     = "57fd8af0-login"
	loginClientSecret = "login-secret-value-1"
)

// centralDispatchClients registers clients the way Central Dispatch does: one per flow.
func centralDispatchClients() []cdsandbox.Client {
	return []cdsandbox.Client{
		{ID: apiClientID, Secret: apiClientSecret, GrantTypes: []string{"client_credentials"}},
		{ID: loginClientID, Secret: loginClientSecret, GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"http://127.0.0.1/callback"}},
	}
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

var (
	clientSecret  = support.ClientSecret
	refreshSecret = support.RefreshSecret
	credential    = support.Credential
	userGrant     = support.UserGrant
	conditionIs   = support.ConditionIs
)

// unlabelled is s without its opt-in label, as `kubectl create secret` makes it.
func unlabelled(s *corev1.Secret) *corev1.Secret {
	s.Labels = nil
	return s
}

func getSecret(ns, name string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	return s, k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, s)
}

func getCredential(ns, name string) (*cdv1.CDCredential, error) {
	c := &cdv1.CDCredential{}
	return c, k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, c)
}

func getGrant(ns, name string) (*cdv1.CDUserGrant, error) {
	g := &cdv1.CDUserGrant{}
	return g, k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, g)
}

// credentialCondition returns a check that a CDCredential has a condition.
func credentialCondition(ns, name, typ string, status metav1.ConditionStatus, reason string) func() error {
	return func() error {
		c, err := getCredential(ns, name)
		if err != nil {
			return err
		}
		return conditionIs(c.Status.Conditions, typ, status, reason)
	}
}

// grantCondition returns a check that a CDUserGrant has a condition.
func grantCondition(ns, name, typ string, status metav1.ConditionStatus, reason string) func() error {
	return func() error {
		g, err := getGrant(ns, name)
		if err != nil {
			return err
		}
		return conditionIs(g.Status.Conditions, typ, status, reason)
	}
}
