package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// renewAtAnnotation records on the output Secret when its token is due for renewal, so
// that after a restart the operator knows from the Secret alone that the token is still
// fresh and does not mint another.
const renewAtAnnotation = "cd.credops.io/renew-at"

// fingerprintAnnotation records on the output Secret a hash of what the token was
// requested for (endpoint, client id, scopes), so a changed request gets a new token.
const fingerprintAnnotation = "cd.credops.io/token-request"

// missingSecretRetry is how often a CR whose referenced Secret does not exist looks
// again. It is the fallback: SecretCreations and the labelled-Secret watch bring the CR
// back as soon as the Secret is created.
const missingSecretRetry = 30 * time.Second

// issuedToken is an access token ready to be written to an output Secret.
type issuedToken struct {
	AccessToken string
	TokenType   string
	Scopes      []string
	Schedule    schedule
	Fingerprint string
}

// outputSecretName is the Secret a CR's access token goes to.
func outputSecretName(crName, specName string) string {
	if specName != "" {
		return specName
	}
	return crName + "-token"
}

// ownerLabelValue is "<kind>.<name>", shortened with a hash when it would not fit in a
// label value (63 characters).
func ownerLabelValue(kind, name string) string {
	v := kind + "." + name
	if len(v) <= 63 {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return strings.TrimRight(v[:52], ".-_") + "-" + hex.EncodeToString(sum[:])[:10]
}

// secretStore reads and writes the Secrets the operator works with. The cache holds only
// Secrets labelled cd.credops.io/watch, so a miss there is confirmed with a direct read
// (the Secret may be unlabelled, or just created and not yet seen by the informer).
type secretStore struct {
	client client.Client
	api    client.Reader
	scheme *runtime.Scheme
}

// get reads a referenced Secret. A Secret found only by the direct read is labelled, so
// that the cache holds it and a later change to it triggers a reconcile at once.
func (s secretStore) get(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
	secret := &corev1.Secret{}
	err := s.client.Get(ctx, key, secret)
	if err == nil || !apierrors.IsNotFound(err) {
		return secret, err
	}
	if err := s.api.Get(ctx, key, secret); err != nil {
		return nil, err
	}
	if secret.Labels[cdv1.WatchLabel] != "true" {
		patch := client.MergeFrom(secret.DeepCopy())
		metav1.SetMetaDataLabel(&secret.ObjectMeta, cdv1.WatchLabel, "true")
		if err := s.client.Patch(ctx, secret, patch); err != nil {
			return nil, fmt.Errorf("labelling Secret %s to watch it: %w", key.Name, err)
		}
	}
	return secret, nil
}

// errSecretNotOurs is returned when the output Secret's name is taken by a Secret the
// operator did not create.
type errSecretNotOurs struct{ name string }

func (e errSecretNotOurs) Error() string {
	return fmt.Sprintf("Secret %s exists and is not managed by this CR: choose another spec.secretName or delete that Secret", e.name)
}

// outputSecret is the desired state of one CR's output Secret.
type outputSecret struct {
	owner    client.Object
	kind     string
	name     string
	template *cdv1.SecretTemplate
	token    issuedToken
}

// apply creates or updates the output Secret (DESIGN §3), keeping keys, labels and
// annotations that others added, and writes only when something differs.
func (s secretStore) apply(ctx context.Context, want outputSecret) error {
	key := types.NamespacedName{Namespace: want.owner.GetNamespace(), Name: want.name}
	existing, err := s.existing(ctx, key)
	if err != nil {
		return err
	}
	if existing == nil {
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}, Type: corev1.SecretTypeOpaque}
		if err := s.mutate(secret, want); err != nil {
			return err
		}
		return s.client.Create(ctx, secret)
	}
	controller := metav1.GetControllerOf(existing)
	ours := controller != nil && controller.UID == want.owner.GetUID()
	unowned := controller == nil && existing.Labels[cdv1.ManagedByLabel] == cdv1.ManagedByValue
	if !ours && !unowned {
		// A user's Secret, or another CR's output: never take it over.
		return errSecretNotOurs{name: key.Name}
	}
	updated := existing.DeepCopy()
	if err := s.mutate(updated, want); err != nil {
		return err
	}
	if equality.Semantic.DeepEqual(existing, updated) {
		return nil
	}
	return s.client.Update(ctx, updated)
}

// existing returns the output Secret, or nil when there is none.
func (s secretStore) existing(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
	secret := &corev1.Secret{}
	err := s.client.Get(ctx, key, secret)
	if apierrors.IsNotFound(err) {
		err = s.api.Get(ctx, key, secret)
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return secret, err
}

func (s secretStore) mutate(secret *corev1.Secret, want outputSecret) error {
	if secret.Labels == nil {
		secret.Labels = map[string]string{}
	}
	if secret.Annotations == nil {
		secret.Annotations = map[string]string{}
	}
	if want.template != nil {
		maps.Copy(secret.Labels, want.template.Labels)
		maps.Copy(secret.Annotations, want.template.Annotations)
	}
	secret.Labels[cdv1.ManagedByLabel] = cdv1.ManagedByValue
	secret.Labels[cdv1.OwnerLabel] = ownerLabelValue(want.kind, want.owner.GetName())
	secret.Labels[cdv1.WatchLabel] = "true"
	expires := want.token.Schedule.ExpiresAt.UTC().Format(time.RFC3339)
	secret.Annotations[cdv1.ExpiresAtAnnotation] = expires
	secret.Annotations[renewAtAnnotation] = want.token.Schedule.RenewAt.UTC().Format(time.RFC3339)
	secret.Annotations[fingerprintAnnotation] = want.token.Fingerprint
	if secret.Data == nil {
		secret.Data = map[string][]byte{}
	}
	secret.Data[cdv1.AccessTokenKey] = []byte(want.token.AccessToken)
	secret.Data[cdv1.TokenTypeKey] = []byte(want.token.TokenType)
	secret.Data[cdv1.ExpiresAtKey] = []byte(expires)
	secret.Data[cdv1.ScopeKey] = []byte(strings.Join(want.token.Scopes, " "))
	secret.Data[cdv1.AuthorizationKey] = []byte(want.token.TokenType + " " + want.token.AccessToken)
	return controllerutil.SetControllerReference(want.owner, secret, s.scheme)
}

// currentSchedule reads the schedule of the token in an output Secret. ok is false when
// the Secret is not a complete, self-consistent output of this operator (deleted keys, a
// hand-edited token or expiry): such a Secret is repaired with a new token.
func currentSchedule(secret *corev1.Secret) (schedule, bool) {
	if secret == nil {
		return schedule{}, false
	}
	d := secret.Data
	token, typ := string(d[cdv1.AccessTokenKey]), string(d[cdv1.TokenTypeKey])
	if token == "" || typ == "" || string(d[cdv1.AuthorizationKey]) != typ+" "+token {
		return schedule{}, false
	}
	expiresRaw := string(d[cdv1.ExpiresAtKey])
	if secret.Annotations[cdv1.ExpiresAtAnnotation] != expiresRaw {
		return schedule{}, false
	}
	expires, err := time.Parse(time.RFC3339, expiresRaw)
	if err != nil {
		return schedule{}, false
	}
	renew, err := time.Parse(time.RFC3339, secret.Annotations[renewAtAnnotation])
	if err != nil || renew.After(expires) {
		return schedule{}, false
	}
	return schedule{ExpiresAt: expires, RenewAt: renew}, true
}
