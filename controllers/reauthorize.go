package controllers

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// dropAnsweredReauthorization removes a reauthorization request a stored login already
// answered. The callback removes it once it has stored the new refresh token; when that
// write fails (an API server hiccup), the login still succeeded and the request must not
// keep the grant asking for another one.
func (r *CDUserGrantReconciler) dropAnsweredReauthorization(ctx context.Context, grant *cdv1.CDUserGrant) error {
	if !answeredReauthorization(grant) {
		return nil
	}
	// Guarded: a request made again since this read is not the answered one.
	patch := client.MergeFromWithOptions(grant.DeepCopy(), client.MergeFromWithOptimisticLock{})
	delete(grant.Annotations, cdv1.ReauthorizeAnnotation)
	return r.Patch(ctx, grant, patch)
}

// answeredReauthorization tells whether a grant's reauthorization request was answered:
// status.lastAuthorization is a successful login (CustomerAuthorized) that the callback
// recorded as answering this very request (answeredRequest, the annotation's value when
// the login completed). No clock is compared: a request made after the login, even in
// the login's second or stamped by a clock running behind, has another value and is kept.
func answeredReauthorization(grant *cdv1.CDUserGrant) bool {
	value, requested := grant.Annotations[cdv1.ReauthorizeAnnotation]
	a := grant.Status.LastAuthorization
	return requested && value != "" && a != nil && a.Reason == cdv1.CustomerAuthorizedReason && a.AnsweredRequest == value
}
