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

// terminalFailures are the token errors that no retry can fix: each stalls the object,
// with its reason and the start of its message, until the spec or a watched object
// changes.
var terminalFailures = map[tokenclient.ErrorKind]struct{ reason, message string }{
	tokenclient.KindHostNotAllowed:      {cdv1.TokenHostNotAllowedReason, "The token endpoint's host is not on the manager's --allowed-token-hosts list, or the URL is plain http to a host other than loopback; nothing was sent"},
	tokenclient.KindInvalidClient:       {cdv1.InvalidClientReason, "The identity server rejected the client id or secret: fix the client Secret"},
	tokenclient.KindGrantTypeNotAllowed: {cdv1.GrantTypeNotAllowedReason, "The identity server refused this grant type for the client"},
	tokenclient.KindProductNotAllocated: {cdv1.ProductNotAllocatedReason, "The identity server answered 402: the subscription behind this client lacks the product, or this is the wrong credential set"},
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
	if t, ok := terminalFailures[te.Kind]; ok {
		msg := t.message + ": " + te.Error()
		if te.Kind == tokenclient.KindGrantTypeNotAllowed {
			msg = fmt.Sprintf("%s: %s%s: %s", t.message, misuseHint(flow), hint, te.Error())
			conds.set(cdv1.FlowMisuseCondition, true, t.reason, msg)
		}
		conds.stalled(t.reason, msg)
		return ctrl.Result{}, stalledError(msg)
	}
	switch te.Kind {
	case tokenclient.KindRateLimited:
		conds.notReady(cdv1.RateLimitedReason, "The identity server asked the operator to slow down; it waits as long as it was told")
		return ctrl.Result{RequeueAfter: te.RetryAfter}, nil
	case tokenclient.KindInvalidResponse:
		conds.notReady(cdv1.InvalidTokenResponseReason, "The identity server's answer cannot be used: "+te.Error())
	default:
		conds.notReady(cdv1.TokenRequestFailedReason, "Token request failed, retrying with backoff: "+te.Error())
	}
	return ctrl.Result{}, err
}
