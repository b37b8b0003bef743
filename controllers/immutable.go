package controllers

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

// isImmutable reports whether s is marked immutable: the API server refuses every change
// of its data, for good (`immutable` cannot be unset; the Secret can only be deleted).
func isImmutable(s *corev1.Secret) bool {
	return s != nil && s.Immutable != nil && *s.Immutable
}

// immutableRefreshSecret says a grant's refresh-token Secret is immutable, found before
// its token is sent: a rotation could not store the successor, and the token sent would
// be spent with its successor in memory only.
type immutableRefreshSecret struct{ secret, key string }

func (e *immutableRefreshSecret) Error() string {
	return "Secret " + e.secret + " is immutable (immutable: true): every rotation writes the new refresh token into it, which the API server refuses for an immutable Secret, " +
		"and immutable cannot be unset. So its refresh token was not sent: sent, it would be spent, and its successor could not be stored. " +
		"Create the Secret again without immutable (delete it, then create it with the current refresh token under key " + e.key +
		" and the label " + cdv1.SecretTypeLabel + "=" + cdv1.SecretTypeRefreshToken + "), and exempt it from any policy that makes Secrets immutable; the grant goes on at once"
}

// immutableRefusal is the API server's refusal to store a new refresh token, held in
// memory only, because its Secret was made immutable while the refresh was out. Deleting
// the Secret is the one way left to store it: the store creates a deleted Secret again
// (tryStoreRefresh).
type immutableRefusal struct {
	secret string
	err    error
}

func (e *immutableRefusal) Error() string { return e.err.Error() }
func (e *immutableRefusal) Unwrap() error { return e.err }

// message is Ready's words for it: the API server's reason, and what to do.
func (e *immutableRefusal) message() string {
	why := truncate(e.err.Error(), 400)
	var status apierrors.APIStatus
	if errors.As(e.err, &status) {
		why = "(" + string(status.Status().Reason) + "): " + truncate(status.Status().Message, 400)
	}
	return "The API server refused to store the new refresh token " + why + ". Secret " + e.secret + " was made immutable while its refresh token was out, and immutable cannot be unset. " +
		"Delete Secret " + e.secret + ": the operator creates it again with the new refresh token, which it holds in memory only until then (the one it replaced is spent; a restart of the operator meanwhile loses the customer's session). " +
		"Exempt the Secret from any policy that makes Secrets immutable"
}

// refusedAsImmutable returns err as an immutableRefusal when it is the API server's
// refusal of a write of Secret key that is now immutable; err otherwise. The refusal
// does not say so in a way to rely on, so the Secret is read again, on this error path
// only.
func refusedAsImmutable(ctx context.Context, api client.Reader, key types.NamespacedName, err error) error {
	if !writeRefused(err) {
		return err
	}
	s := &corev1.Secret{}
	if api.Get(ctx, key, s) != nil || !isImmutable(s) {
		return err
	}
	return &immutableRefusal{secret: key.Name, err: err}
}

// immutableOutputConflict is the name conflict of an immutable Secret under the output's
// name that this CR does not control (an orphaned output it would adopt): it cannot take
// the token, and it is not the operator's to delete.
func immutableOutputConflict(name string) error {
	return fmt.Errorf("%w: Secret %s is immutable (immutable: true) and not controlled by this CR, so it cannot take the token; delete it or choose another spec.secretName", secrets.ErrNameConflict, name)
}

// replaceImmutableOutput deletes current, the CR's own output Secret, when it is
// immutable: the API server refuses every new token in it, for good, so writeOutput
// deletes it once it holds the token and creates it again. Not before the request: a
// request that then failed would leave pods without the Secret while its token was still
// valid. The delete is guarded by the Secret's UID and resourceVersion: a Secret changed
// or created again meanwhile is judged again by the next pass.
func replaceImmutableOutput(ctx context.Context, c client.Client, owner client.Object, current *corev1.Secret) error {
	if !isImmutable(current) || !metav1.IsControlledBy(current, owner) {
		return nil
	}
	uid, rv := current.UID, current.ResourceVersion
	if err := c.Delete(ctx, current, client.Preconditions{UID: &uid, ResourceVersion: &rv}); err != nil {
		return client.IgnoreNotFound(err)
	}
	ctrl.LoggerFrom(ctx).Info("Deleted an immutable output Secret to create it again with the next token", "secret", current.Name)
	return nil
}

// writeOutput is applyOutput, which replaces the CR's own output Secret when the API
// server refused the token because the Secret was made immutable while it was requested:
// the token held is written into the Secret created again, instead of being held until
// it expires and another requested.
func writeOutput(ctx context.Context, c client.Client, api client.Reader, owner client.Object, gvk schema.GroupVersionKind, name string, tmpl *cdv1.SecretTemplate, t *issued) error {
	err := applyOutput(ctx, c, owner, gvk, name, tmpl, t)
	if !writeRefused(err) {
		return err
	}
	s := &corev1.Secret{}
	if api.Get(ctx, types.NamespacedName{Namespace: owner.GetNamespace(), Name: name}, s) != nil || !isImmutable(s) || !metav1.IsControlledBy(s, owner) {
		return err
	}
	if err := replaceImmutableOutput(context.WithoutCancel(ctx), c, owner, s); err != nil {
		return err
	}
	return applyOutput(ctx, c, owner, gvk, name, tmpl, t)
}
