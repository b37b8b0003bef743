package controllers

import (
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
)

// report is the one place that turns a CDCredential's outcome into status: conditions,
// failure memory, token times, events and the requeue. sharers are the CDCredentials of
// the other flow that hold the same client (id and secret).
func (r *CDCredentialReconciler) report(cred *cdv1.CDCredential, o outcome, sharers sharing) (ctrl.Result, error) {
	now := r.Clock.Now()
	cred.Status.ObservedGeneration = cred.Generation
	c := newConditions(&cred.Status.Conditions, cred.Generation, now)
	misuse := ""
	// standing is what Ready=True stands on in this pass, before FlowMisuse's word on
	// it; none when Ready is not True.
	var standing readyState
	var res ctrl.Result

	switch o := o.(type) {
	case clientUnusable:
		reason, terminal := blockedReason(o.err)
		msg := o.err.Error()
		if apierrors.IsNotFound(o.err) {
			msg = "Client Secret " + cred.Spec.ClientSecretRef.Name + " not found in namespace " + cred.Namespace + "; the operator picks it up as soon as it is created and labelled " + cdv1.SecretTypeLabel + "=" + cdv1.SecretTypeClient
		}
		if terminal {
			c.stalled(reason, msg)
		} else {
			c.waiting(reason, msg)
			res.RequeueAfter = missingSecretRecheck
		}
	case outputBlocked:
		res = reportOutputBlocked(c, o, "no token is requested")
	case metadataTooLarge:
		c.stalled(cdv1.MetadataTooLargeReason, o.message())
	case clientReady:
		standing = readyState{cdv1.ClientReadyReason, "The client id and secret are usable; CDUserGrants can use this client" + leftoverNote(o.leftover, "of this credential's ClientCredentials flow", kindCredential)}
		c.ready(standing.reason, standing.message)
	case fresh:
		// Said as the storing pass said it: a pass that only confirms a token (a
		// restart, a Secret event) writes nothing.
		clamp := clampOf(cred.Spec.RenewBefore, cred.Status.LastIssuedTime, cred.Status.ExpiresAt, o.schedule, rotation.Schedule{})
		cred.Status.ExpiresAt, cred.Status.RenewalTime = timePtr(o.schedule.ExpiresAt), timePtr(o.schedule.RenewAt)
		standing = readyState{cdv1.TokenIssuedReason, readyMessage(cred.Status.SecretName, clamp) + renamedNote(o.leftover, kindCredential)}
		c.ready(standing.reason, standing.message)
		res.RequeueAfter = untilRenewal(o.schedule, now)
	case stored:
		s := o.token.schedule
		noteRenewedAhead(r.Recorder, cred, cred.Status.LastIssuedTime, now)
		cred.Status.ExpiresAt, cred.Status.RenewalTime, cred.Status.LastIssuedTime = timePtr(s.ExpiresAt), timePtr(s.RenewAt), timePtr(s.Issued)
		cred.Status.GrantedScopes = o.token.scopes
		cred.Status.LastFailure = nil
		standing = readyState{cdv1.TokenIssuedReason, readyMessage(cred.Status.SecretName, o.token.clamp) + renamedNote(o.leftover, kindCredential)}
		c.ready(standing.reason, standing.message)
		res.RequeueAfter = untilRenewal(s, now)
	case throttled:
		if o.failure != nil {
			cred.Status.LastFailure = failureStatus(*o.failure)
		}
		reportThrottled(c, cred.Generation)
		res.RequeueAfter = max(o.until.Sub(now), time.Millisecond)
	case remembered:
		// As for a grant: the memory the pass acted on, whatever a lagging cache shows.
		cred.Status.LastFailure = failureStatus(o.failure)
		misuse = keepFailure(c, o.failure, r.written.said(cred, &o.failure), lifetimeOf(cred.Status.LastIssuedTime, cred.Status.ExpiresAt))
		res.RequeueAfter = retryAfter(o.failure, now)
	case deferred:
		cred.Status.LastFailure = reportDeferred(c, o, cred.Status.SecretName, &cred.Status.RenewalTime, lifetimeOf(cred.Status.LastIssuedTime, cred.Status.ExpiresAt))
		misuse = keptMisuse(c, o.failure, r.written.said(cred, o.failure))
		if ready := c.find(cdv1.ReadyCondition); ready.Status == metav1.ConditionTrue && o.last != nil {
			// Ready stands on the token in the Secret, which still works: worded anew
			// here, never from the kept message, so FlowMisuse's note is said once.
			standing = readyState{cdv1.TokenIssuedReason, readyMessage(cred.Status.SecretName, clampOf(cred.Spec.RenewBefore, cred.Status.LastIssuedTime, cred.Status.ExpiresAt, *o.last, rotation.Schedule{})) + renamedNote(o.leftover, kindCredential)}
		}
		res.RequeueAfter = max(o.until.Sub(now), time.Second)
	case answered:
		ref, msg := refusalOf(o, false)
		f := rotation.Fail(r.written.current(cred, cred.Status.LastFailure), o.request, ref.reason, now, withLifetime(o.outcome.Retry(), cred.Status.LastIssuedTime, cred.Status.ExpiresAt, now, r.active.since(now)), string(cred.UID))
		cred.Status.LastFailure = failureStatus(f)
		if o.outcome.Verdict == rotation.Misuse {
			misuse = msg
		}
		reportFailure(c, f, msg, lifetimeOf(cred.Status.LastIssuedTime, cred.Status.ExpiresAt))
		res.RequeueAfter = retryAfter(f, now)
	case expiredUnstored:
		f := rotation.Fail(r.written.current(cred, cred.Status.LastFailure), o.request, cdv1.InvalidTokenResponseReason, now, withLifetime(rotation.Retry{}, cred.Status.LastIssuedTime, cred.Status.ExpiresAt, now, r.active.since(now)), string(cred.UID))
		cred.Status.LastFailure = failureStatus(f)
		reportFailure(c, f, o.message(), lifetimeOf(cred.Status.LastIssuedTime, cred.Status.ExpiresAt))
		res.RequeueAfter = retryAfter(f, now)
	case writeFailed:
		f := rotation.Fail(r.written.current(cred, cred.Status.LastFailure), o.request, cdv1.SecretWriteFailedReason, now, withLifetime(rotation.Retry{}, cred.Status.LastIssuedTime, cred.Status.ExpiresAt, now, r.active.since(now)), string(cred.UID))
		cred.Status.LastFailure = failureStatus(f)
		c.retrying(cdv1.SecretWriteFailedReason, writeFailure(o.err))
		res.RequeueAfter = retryAfter(f, now)
	}

	if _, waits := o.(throttled); !waits {
		// A pass that waits for its turn learnt nothing new of the client: FlowMisuse,
		// and Ready's word on it, stay as the last pass that sent said them.
		reportFlowMisuse(c, cred, misuse, sharers, standing)
	}
	c.recordChanges(r.Recorder, cred)
	return res, c.terminal(res)
}

// missingSecretRecheck is how often a CR that waits on a Secret looks again. An opted-in
// Secret brings the CR back at once through the watch; this catches what the cache does
// not hold: a client Secret created without the label (so the CR can say how to opt it
// in), a user's Secret that took the output name and was deleted, a refresh-token
// Secret's holder of another shard that was deleted.
const missingSecretRecheck = 5 * time.Minute

// reportOutputBlocked reports an output Secret that cannot be written whatever the
// token: a taken name waits and looks again (the name may be freed without an event
// here), an invalid template stalls until the spec changes. Either way nothing is sent.
func reportOutputBlocked(c conditions, o outputBlocked, nothing string) ctrl.Result {
	reason, terminal := blockedReason(o.err)
	if terminal {
		c.stalled(reason, o.err.Error()+"; "+nothing+" until this changes")
		return ctrl.Result{}
	}
	c.waiting(reason, o.err.Error()+"; "+nothing+" while the name is taken")
	return ctrl.Result{RequeueAfter: missingSecretRecheck}
}

// readyState is a Ready=True reason and message.
type readyState struct{ reason, message string }

// reportFlowMisuse sets FlowMisuse: a grant type the identity server refused, or the
// client declared for the other flow too. A client shared across flows is said on Ready
// as well, worded from standing (what Ready stands on in this pass) and never from
// Ready's kept message, so passes that change nothing word it the same. Only Ready is
// touched: a Reconciling that says when a deferred request goes out stays.
func reportFlowMisuse(c conditions, cred *cdv1.CDCredential, misuse string, sharers sharing, standing readyState) {
	switch {
	case misuse != "":
		c.set(cdv1.FlowMisuseCondition, true, cdv1.GrantTypeNotAllowedReason, misuse)
	case len(sharers) > 0:
		c.set(cdv1.FlowMisuseCondition, true, cdv1.ClientSharedAcrossFlowsReason, sharers.message(cred))
		if standing.reason != "" {
			// Still working, on purpose: the identity server decides which of the
			// sharers is wrong, and stalling the right one would stop its customers.
			// The Reason column of `kubectl get cdcred` shows the misuse all the same.
			c.set(cdv1.ReadyCondition, true, cdv1.ClientSharedAcrossFlowsReason, standing.message+"; but see FlowMisuse: this client is also declared for the other flow")
		}
	default:
		c.set(cdv1.FlowMisuseCondition, false, cdv1.FlowCorrectReason, "No sign that this client is used for the wrong flow")
		if standing.reason != "" {
			c.set(cdv1.ReadyCondition, true, standing.reason, standing.message) // a sharer gone since Ready was kept
		}
	}
}

// readyMessage says where the token is, and whether the renewal time was clamped.
func readyMessage(secret, clamp string) string {
	msg := "Access token is in Secret " + secret
	if clamp != "" {
		msg += "; " + clamp
	}
	return msg
}

// reportFailure sets the conditions of a failed attempt: Stalled when it is terminal,
// Reconciling while it is retried. A terminal failure says what brings the CR back, and
// when: a change to a referenced Secret (a new client secret, a customer's login) at
// once; a spec edit once the request budget allows, no later than the time rotation
// holds it to (Failure.EditFloor over lifetime, that of the last token stored, 0 when
// unknown); and a refusal the identity server may fix at its recheck time. The times
// are named by the status fields that hold them, never written into the message
// (STYLE: messages without timestamps), so a retry changes no condition.
func reportFailure(c conditions, f rotation.Failure, msg string, lifetime time.Duration) {
	if !f.Terminal() {
		c.retryingNoted(f.Reason, msg+"; tried again at status.lastFailure.retryTime", msg)
		return
	}
	then := "a change to a referenced Secret is tried at once, a spec edit no later than " + rotation.ChangeFloor(lifetime).String() + " after status.lastFailure.lastFailureTime (at most 3 requests per token lifetime)"
	if f.Recheck.IsZero() {
		c.stalled(f.Reason, msg+"; nothing is sent again until a referenced Secret or the spec changes: "+then)
		return
	}
	fixed := "it was fixed at the identity server"
	if f.Reason == cdv1.TokenHostNotAllowedReason {
		// Nothing was sent: only a restart with another --allowed-token-hosts fixes it.
		fixed = "the manager now allows the host"
	}
	c.stalled(f.Reason, msg+"; asked again at status.lastFailure.recheckTime in case "+fixed+"; "+then)
}

// keepFailure confirms the conditions of a failure remembered in status: the pass sent
// nothing, so they stand as they were written (after a restart too). A cache that has
// not seen them yet shows other conditions: they are said again in the words this
// process wrote them with (said), or, unknown, worded anew from the reason. It returns
// the FlowMisuse message when the failure was a refused grant type.
func keepFailure(c conditions, f rotation.Failure, said failureWords, lifetime time.Duration) string {
	state := cdv1.ReconcilingCondition
	if f.Terminal() {
		state = cdv1.StalledCondition
	}
	ready := c.find(cdv1.ReadyCondition)
	switch {
	case said.ready != "":
		// Even over a cached Ready of the same reason: an older attempt's words would
		// replace the newer ones written, with the whole conditions list.
		if f.Terminal() {
			c.stalled(f.Reason, said.ready)
		} else {
			c.retrying(f.Reason, said.ready)
		}
	case ready == nil || ready.Reason != f.Reason || c.find(state) == nil:
		reportFailure(c, f, "The last request failed ("+f.Reason+")", lifetime)
	default:
		c.keep(cdv1.ReadyCondition, false, f.Reason, "")
		c.keep(state, true, f.Reason, "")
	}
	// Exactly one of the two: a Stalled left from an earlier, terminal failure would turn
	// a backoff into a terminal error, which is never requeued.
	if f.Terminal() {
		c.remove(cdv1.ReconcilingCondition)
	} else {
		c.remove(cdv1.StalledCondition)
	}
	return keptMisuse(c, &f, said)
}

// keptMisuse is the FlowMisuse message a remembered refusal of the grant type keeps
// standing while nothing new is sent: as the refusal said it (said, while the cache may
// not show it, or the cached condition), or worded from the reason; "" for any other
// failure, or none.
func keptMisuse(c conditions, f *rotation.Failure, said failureWords) string {
	if f == nil || f.Reason != cdv1.GrantTypeNotAllowedReason {
		return ""
	}
	if said.misuse != "" {
		return said.misuse
	}
	if m := c.find(cdv1.FlowMisuseCondition); m != nil && m.Status == "True" {
		return m.Message
	}
	return "The identity server refused this grant type for the client"
}

// reportDeferred sets the conditions of a changed request held back by the request
// budget (at most 3 requests per token lifetime): Reconciling=True saying why and when
// it goes out, never Stalled (the wait ends by itself, and a terminal error is never
// requeued). Ready stays as it was while the budget counts from the token in the output
// Secret, which still works, and reports the generation that token was issued for
// (pending), so `kubectl wait --for=condition=Ready` waits for the edit's token; after a
// failed request it keeps that failure's reason. It returns the failure memory to write:
// the one the pass acted on.
//
// With no failure it sets renewalTime to when the next token is asked for, which the
// message names: the token in the Secret is fresh. After a failure renewalTime keeps the
// schedule of the token in the Secret, which may have expired:
// cdcredops_token_renewal_timestamp_seconds follows it, and CDTokenExpiresSoon needs it
// in the past to page for an expired token that waits for the edit. The message then
// names the fields rotation holds the edit to (tooSoonAfterFailure): ChangeFloor over
// lifetime (that of the last token stored, 0 when unknown) after the failure, sooner
// only to renew that token before it expires, later only for a backoff that ends later.
func reportDeferred(c conditions, o deferred, secret string, renewal **metav1.Time, lifetime time.Duration) *cdv1.FailureStatus {
	if o.afterFailure {
		when := "no later than " + rotation.ChangeFloor(lifetime).String() + " after status.lastFailure.lastFailureTime"
		if f := o.failure; !f.Terminal() && !f.Retry.IsZero() {
			when += ", or at status.lastFailure.retryTime if that is later"
		}
		c.retrying(o.failure.Reason, fmt.Sprintf("The last request failed (%s); the spec changed since, and the request for it is sent %s (at most 3 requests per token lifetime)", o.failure.Reason, when))
		return failureStatus(*o.failure)
	}
	*renewal = timePtr(o.until)
	c.pending()
	c.keep(cdv1.ReadyCondition, false, cdv1.ReconcilingReason, "The operator has not finished a first pass yet")
	c.set(cdv1.ReconcilingCondition, true, cdv1.ReconcilingReason, fmt.Sprintf("The spec changed since the token in Secret %s was issued; the token for it is requested at status.renewalTime (at most 3 requests per token lifetime)", secret))
	c.remove(cdv1.StalledCondition)
	if o.failure == nil {
		return nil
	}
	return failureStatus(*o.failure)
}

// retryAfter is the requeue of a failure: its retry time, its recheck time while it is
// terminal, or none (a change to the spec or a referenced Secret brings the CR back).
func retryAfter(f rotation.Failure, now time.Time) time.Duration {
	switch {
	case f.Terminal() && f.Recheck.IsZero():
		return 0
	case f.Terminal():
		return max(f.Recheck.Sub(now), time.Second)
	}
	return max(f.Retry.Sub(now), time.Second)
}

// untilRenewal is the requeue of a token: at its renewal time, and never "no requeue".
func untilRenewal(s rotation.Schedule, now time.Time) time.Duration {
	return max(s.RenewAt.Sub(now), time.Second)
}
