package controllers

import (
	"context"
	"errors"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
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
