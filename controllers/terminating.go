package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// namespaceGoing reports whether namespace ns is being deleted, as the API server says
// (the cache holds no namespaces). It is asked only when a CR's output Secret does not
// exist, before any token is requested for it: the namespace controller deletes the
// Secrets before the CRs, and the API server refuses every create meanwhile, so a token
// requested then (a customer's refresh token spent) would only have its output refused.
// The CR is about to go, so the pass reports nothing.
//
// A namespace that cannot be read (not found, or a manager whose RBAC predates this read)
// is taken for a live one: the create's refusal still says so (refusedAsTerminating).
func namespaceGoing(ctx context.Context, reader client.Reader, ns string) (bool, error) {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	err := reader.Get(ctx, types.NamespacedName{Name: ns}, m)
	if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if m.DeletionTimestamp.IsZero() {
		return false, nil
	}
	ctrl.LoggerFrom(ctx).Info("Not requesting a token: the namespace is being deleted")
	return true, nil
}

// refusedAsTerminating reports whether the API server refused a create because the
// namespace is being deleted (the NamespaceLifecycle admission plugin). Such a refusal is
// final: the CR goes with its namespace, so its token is dropped, not written again, and
// no failure is reported on a CR that is about to go.
func refusedAsTerminating(err error) bool {
	return apierrors.IsForbidden(err) && apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause)
}
