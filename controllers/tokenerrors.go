package controllers

import (
	"errors"
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// misuseHint is appended to GrantTypeNotAllowed messages: it names the likely cause, so
// the reader knows what to change without knowing OAuth.
func misuseHint(flow cdv1.Flow) string {
	if flow == cdv1.FlowClientCredentials {
		return "this client id is probably registered for the authorization-code flow; use the client-credentials credential set Central Dispatch issued you"
	}
	return "this client id is probably registered for the client-credentials flow; use the authorization-code credential set for customer logins"
}

// tokenFailure records a failed token request in the conditions and says how the
// controller goes on: terminal errors stall the object until something it watches
// changes, rate limits wait as long as they were told, the rest back off.
func tokenFailure(conds conditions, flow cdv1.Flow, hint string, err error) (ctrl.Result, error) {
	var te *tokenclient.Error
	if !errors.As(err, &te) {
		conds.notReady(cdv1.TokenRequestFailedReason, "Token request failed: "+err.Error())
		return ctrl.Result{}, err
	}
	switch te.Kind {
	case tokenclient.KindHostNotAllowed:
		msg := "The token endpoint's host is not on the manager's --allowed-token-hosts list, or the URL is plain http to a host other than loopback; nothing was sent: " + te.Error()
		conds.stalled(cdv1.TokenHostNotAllowedReason, msg)
		return ctrl.Result{}, stalledError(msg)
	case tokenclient.KindInvalidClient:
		msg := "The identity server rejected the client id or secret: fix the client Secret: " + te.Error()
		conds.stalled(cdv1.InvalidClientReason, msg)
		return ctrl.Result{}, stalledError(msg)
	case tokenclient.KindGrantTypeNotAllowed:
		msg := fmt.Sprintf("The identity server refused this grant type for the client: %s%s: %s", misuseHint(flow), hint, te.Error())
		conds.set(cdv1.FlowMisuseCondition, true, cdv1.GrantTypeNotAllowedReason, msg)
		conds.stalled(cdv1.GrantTypeNotAllowedReason, msg)
		return ctrl.Result{}, stalledError(msg)
	case tokenclient.KindProductNotAllocated:
		msg := "The identity server answered 402: the subscription behind this client lacks the product, or this is the wrong credential set: " + te.Error()
		conds.stalled(cdv1.ProductNotAllocatedReason, msg)
		return ctrl.Result{}, stalledError(msg)
	case tokenclient.KindRateLimited:
		conds.notReady(cdv1.RateLimitedReason, "The identity server asked the operator to slow down; it waits as long as it was told")
		return ctrl.Result{RequeueAfter: te.RetryAfter}, nil
	case tokenclient.KindInvalidResponse:
		conds.notReady(cdv1.InvalidTokenResponseReason, "The identity server's answer cannot be used: "+te.Error())
		return ctrl.Result{}, err
	default:
		conds.notReady(cdv1.TokenRequestFailedReason, "Token request failed, retrying with backoff: "+te.Error())
		return ctrl.Result{}, err
	}
}
