package controllers

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/metrics"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// throttle is the outcome of a token request that has no turn yet in its namespace's
// part of the token requests (share; nil: no share), asked by obj (of kind) at the
// pass's time; nil when the request may go now. It is asked only once the decision is
// to send, so a turn is never spent on a pass that sends nothing.
func throttle(share *tokenclient.Share, kind string, obj metav1.Object, in rotation.Input) outcome {
	requester := turnOf(kind, types.NamespacedName{Namespace: obj.GetNamespace(), Name: obj.GetName()})
	if wait := share.Turn(obj.GetNamespace(), requester, in.Now); wait > 0 {
		metrics.TokenRequestThrottled(obj.GetNamespace())
		return throttled{until: in.Now.Add(wait), failure: in.Failure}
	}
	return nil
}

// turnOf names a CR's turn in the share: by kind and name, so that a deleted CR's turn,
// which only its name is left to tell, is given back (Share.Forget).
func turnOf(kind string, key types.NamespacedName) string {
	return kind + "/" + key.String()
}

// throttledMessage says why a request waits for its turn.
const throttledMessage = "The token request waits for its turn: the operator's token requests are shared among the namespaces asking for them, and this namespace has used its part for now (--token-requests-per-second, --token-requests-per-namespace-per-second)"

// reportThrottled words a request waiting for its turn (Reconciling=True,
// TokenRequestsThrottled), unless Ready=True stands on a token of the CR's current
// generation: a routine renewal's token still works, and its wait of a few seconds costs
// no status write. Ready=False keeps its reason (the failure being retried, the login
// just answered), and Stalled goes: the request is on its way. A first pass gets its
// Ready=False, Reconciling.
func reportThrottled(c conditions, generation int64) {
	ready := c.find(cdv1.ReadyCondition)
	switch {
	case ready == nil:
		c.set(cdv1.ReadyCondition, false, cdv1.ReconcilingReason, "The operator has not finished a first pass yet")
	case ready.Status == metav1.ConditionTrue && ready.ObservedGeneration == generation:
		return
	case ready.Status == metav1.ConditionTrue:
		c.pending() // Ready stands on an earlier generation's token
	}
	c.set(cdv1.ReconcilingCondition, true, cdv1.TokenRequestsThrottledReason, throttledMessage)
	c.remove(cdv1.StalledCondition)
}
