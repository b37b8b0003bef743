package controllers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

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

// The operator's own output Secrets, created or rewritten, bring no pass: the pass that
// wrote one finds nothing more to do, and one run before the cache shows its status
// write would write that status again. A Secret created or edited incomplete or
// inconsistent (by hand, by a restore) does bring one, and so does a deletion.
func TestOutputTamperedLetsThroughOnlyOutputsTheOperatorDidNotWrite(t *testing.T) {
	written := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pricing-token"}}
	ac := secrets.Output{
		Owner: &cdv1.CDCredential{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pricing"}}, OwnerGVK: cdv1.GroupVersion.WithKind("CDCredential"),
		Name: written.Name, AccessToken: "at-1", TokenType: "Bearer", Fingerprint: "fp",
		Schedule: rotation.Schedule{ExpiresAt: epoch.Add(time.Hour), RenewAt: epoch.Add(40 * time.Minute)},
	}.Apply()
	written.Labels, written.Annotations, written.Data = ac.Labels, ac.Annotations, ac.Data
	edited := written.DeepCopy()
	edited.Data[cdv1.AccessTokenKey] = []byte("pasted-by-hand")
	for _, tc := range []struct {
		name string
		got  bool
		want bool
	}{
		{"the operator's creation", outputTampered.Create(event.CreateEvent{Object: written}), false},
		{"the operator's rewrite", outputTampered.Update(event.UpdateEvent{ObjectOld: written, ObjectNew: written}), false},
		{"a creation with a hand-edited token", outputTampered.Create(event.CreateEvent{Object: edited}), true},
		{"a hand edit", outputTampered.Update(event.UpdateEvent{ObjectOld: written, ObjectNew: edited}), true},
		{"a deletion", outputTampered.Delete(event.DeleteEvent{Object: written}), true},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: outputTampered lets it through: %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}
