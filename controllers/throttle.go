package controllers

import (
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// throttle is the outcome of a token request that has no turn yet in its namespace's
// share of token requests (share; nil: no share), asked by obj at the pass's time; nil
// when the request may go now. It is asked only once the decision is to send, so a
// turn is never spent on a pass that sends nothing.
func throttle(share *tokenclient.Share, obj metav1.Object, in rotation.Input) outcome {
	if wait := share.Turn(obj.GetNamespace(), string(obj.GetUID()), in.Now); wait > 0 {
		return throttled{until: in.Now.Add(wait)}
	}
	return nil
}

// reportThrottled words a request waiting for its namespace's turn. Only a CR with no
// Ready yet says so (a first pass, which would otherwise show nothing while it waits):
// any other keeps what it says, its token still working or its failure standing, so a
// wait costs no status write and says nothing that is undone a moment later.
func reportThrottled(c conditions, share *tokenclient.Share) {
	if c.find(cdv1.ReadyCondition) != nil {
		return
	}
	c.set(cdv1.ReadyCondition, false, cdv1.ReconcilingReason, "The operator has not finished a first pass yet")
	c.set(cdv1.ReconcilingCondition, true, cdv1.TokenRequestsThrottledReason,
		"The token request waits for its turn: this namespace has used its share of the operator's token requests ("+
			strconv.FormatFloat(share.PerSecond(), 'g', -1, 64)+" per second, --token-requests-per-namespace-per-second)")
}
