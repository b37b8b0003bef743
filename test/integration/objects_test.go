package integration

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
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

func clientSecret(ns, name, id, secret string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{cdv1.WatchLabel: "true"}},
		StringData: map[string]string{"client_id": id, "client_secret": secret},
	}
}

// unlabelled is s without the operator's watch label, as `kubectl create secret` makes it.
func unlabelled(s *corev1.Secret) *corev1.Secret {
	s.Labels = nil
	return s
}

func refreshSecret(ns, name, token string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{cdv1.WatchLabel: "true"}},
		StringData: map[string]string{"refresh_token": token},
	}
}

func credential(ns, name string, flow cdv1.Flow, secretName, issuer string) *cdv1.CDCredential {
	return &cdv1.CDCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: cdv1.CDCredentialSpec{
			Flow:            flow,
			ClientSecretRef: cdv1.ClientSecretReference{Name: secretName},
			Issuer:          issuer,
		},
	}
}

func userGrant(ns, name, credName, refreshSecretName string) *cdv1.CDUserGrant {
	return &cdv1.CDUserGrant{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: cdv1.CDUserGrantSpec{
			CredentialRef:         cdv1.CredentialReference{Name: credName},
			RefreshTokenSecretRef: cdv1.RefreshTokenSecretReference{Name: refreshSecretName},
		},
	}
}

func getSecret(ns, name string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	return s, k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, s)
}

// conditionIs checks one condition's status and reason.
func conditionIs(conds []metav1.Condition, typ string, status metav1.ConditionStatus, reason string) error {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return fmt.Errorf("no %s condition in %+v", typ, conds)
	}
	if c.Status != status || c.Reason != reason {
		return fmt.Errorf("%s is %s/%s (%q), want %s/%s", typ, c.Status, c.Reason, c.Message, status, reason)
	}
	return nil
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
