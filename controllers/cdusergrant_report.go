package controllers

import (
	"errors"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/metrics"
	"github.com/credops/cd-credentials-operator/internal/rotation"
)

// grantReport is what a grant's outcome says beyond Ready: FlowMisuse and
// ReauthorizationRequired. An empty reason keeps the condition as it is (or sets its
// default when absent): the pass learnt nothing about it.
type grantReport struct {
	misuse, misuseMsg string
	reauth, reauthMsg string
	// valid: the pass saw a refresh token that works (ReauthorizationRequired=False).
	valid bool
	// tried: the pass tried the refresh token in the Secret (sent it, or the manager
	// refused to send it), so there is one, whatever came of it.
	tried bool
}

// report is the one place that turns a CDUserGrant's outcome into status: conditions,
// failure memory, token times, events and the requeue. Outcomes that stopped the pass
// before anything was decided are worded by reportPrecondition, the rest here.
func (r *CDUserGrantReconciler) report(grant *cdv1.CDUserGrant, o outcome) (ctrl.Result, error) {
	now := r.Clock.Now()
	grant.Status.ObservedGeneration = grant.Generation
	c := newConditions(&grant.Status.Conditions, grant.Generation, now)
	g, res, done := reportPrecondition(grant, c, o, r.Authorizer != nil)
	if !done {
		g, res = r.reportAttempt(grant, c, o, now)
	}
	r.reportGrantConditions(grant, c, g)
	c.recordChanges(r.Recorder, grant)
	if m, ok := o.(markRefused); ok {
		// Retried on controller-runtime's backoff, and at once when the Secret changes
		// (it is watched). Nothing was sent, so nothing goes into the failure memory,
		// which holds the request budget: the refusal may end without a change the
		// operator sees (an admission policy fixed).
		return res, m.err
	}
	return res, c.terminal(res)
}

// reportPrecondition words an outcome that stopped the pass before a decision: a
// missing or unusable credential or Secret. done is false for any other outcome. links
// tells whether this manager offers customers a login link (its callback is on).
func reportPrecondition(grant *cdv1.CDUserGrant, c conditions, o outcome, links bool) (g grantReport, res ctrl.Result, done bool) {
	switch o := o.(type) {
	case credentialMissing:
		msg := "CDCredential " + o.name + " not found in namespace " + grant.Namespace
		if o.outsideShard {
			msg = "CDCredential " + o.name + " exists but is not among this manager's CRs: it lacks the shard label this grant carries (a grant's CDCredential must carry the same label)"
		}
		c.waiting(cdv1.CredentialNotFoundReason, msg)
	case wrongFlow:
		msg := "CDCredential " + o.name + " is a ClientCredentials (server-to-server) client; a customer grant needs the AuthorizationCode credential set. Point spec.credentialRef at an AuthorizationCode CDCredential. Nothing was sent to the identity server"
		c.stalled(cdv1.UserGrantOnClientCredentialsReason, msg)
		g.misuse, g.misuseMsg = cdv1.UserGrantOnClientCredentialsReason, msg
	case credentialNotReady:
		c.waiting(cdv1.CredentialNotReadyReason, "CDCredential "+o.name+" is not Ready; see its conditions")
	case refreshTokenMissing:
		msg := awaitingMessage(o, links)
		c.waiting(cdv1.AwaitingAuthorizationReason, msg)
		g.reauth, g.reauthMsg = cdv1.RefreshTokenMissingReason, msg
		showLastAuthorization(c, grant.Status.LastAuthorization)
		res.RequeueAfter = missingSecretRecheck
	case refreshTokenSpent:
		msg := spentMessage(o.secret)
		c.stalled(cdv1.RefreshTokenSpentReason, msg)
		g.reauth, g.reauthMsg = cdv1.RefreshTokenSpentReason, msg
	case refreshSecretUnusable:
		reason, terminal := blockedReason(o.err)
		if terminal {
			c.stalled(reason, o.err.Error())
			break
		}
		c.waiting(reason, inUseMessage(grant.Spec.RefreshTokenSecretRef.Name, o.err))
		res.RequeueAfter = missingSecretRecheck
	case outputBlocked:
		res = reportOutputBlocked(c, o, "nothing is sent")
	case metadataTooLarge:
		c.stalled(cdv1.MetadataTooLargeReason, o.message())
	default:
		return g, res, false
	}
	return g, res, true
}

// inUseMessage says which grant holds the refresh-token Secret secret (err, a
// boundElsewhereError) and when it lets go.
func inUseMessage(secret string, err error) string {
	holder := "another CDUserGrant"
	var bound boundElsewhereError
	if errors.As(err, &bound) {
		holder = "CDUserGrant " + bound.grant.String()
	}
	return "Secret " + secret + " holds the refresh token of " + holder + "; a refresh token can be spent by one grant only. Nothing was sent. " +
		"Give this grant its own refresh-token Secret; it takes this one over once that grant is deleted, or names another Secret and has stored its last token"
}

// awaitingMessage says why a grant waits for a refresh token and how it gets one: the
// customer logs in at the link this manager offers, or, without a callback server (no
// link ever comes), someone turns it on or puts a refresh token in the Secret.
func awaitingMessage(o refreshTokenMissing, links bool) string {
	missing := "No refresh token in Secret " + o.secret
	if o.err != nil {
		missing = "No usable refresh token in Secret " + o.secret + " (" + o.err.Error() + ")"
	}
	put := "put a refresh token under key " + o.key + " of a Secret labelled " + cdv1.SecretTypeLabel + "=" + cdv1.SecretTypeRefreshToken
	if !links {
		return missing + ", and " + cdv1.NoLoginLinkMessage + " (its callback server is off): " + put +
			", or enable the callback (manager flags --callback-bind-address and --callback-url; Helm chart value callback.enabled) for the customer to log in at status.authorizationURL"
	}
	if o.err != nil {
		return missing + ": the customer has to log in"
	}
	return missing + ": the customer has to log in (or " + put + ")"
}

// spentMessage says why a Secret set back to a spent refresh token is not sent, and
// what ends the wait.
func spentMessage(secret string) string {
	return "Secret " + secret + " was set back to a refresh token this operator already spent and replaced (a GitOps re-sync, or a restore of its data from a backup?). " +
		"It is not sent: at an identity server with refresh-token reuse detection, sending it again would revoke the customer's whole session. " +
		"The customer logs in again, or put the current refresh token back; have GitOps tools create this Secret once and never re-sync its data (create-only: see the README, Refresh-token Secrets and GitOps)"
}

// reportAttempt words a decision, an answer of the identity server, or a stored token.
func (r *CDUserGrantReconciler) reportAttempt(grant *cdv1.CDUserGrant, c conditions, o outcome, now time.Time) (g grantReport, res ctrl.Result) {
	switch o := o.(type) {
	case fresh:
		// Said as the storing pass said it: a restart with a fresh token writes nothing.
		clamp := clampOf(grant.Spec.RenewBefore, grant.Status.LastRotationTime, grant.Status.ExpiresAt, o.schedule, o.refreshLife)
		grant.Status.ExpiresAt, grant.Status.RenewalTime = timePtr(o.schedule.ExpiresAt), timePtr(o.schedule.RenewAt)
		c.ready(cdv1.TokenIssuedReason, readyMessage(grant.Status.SecretName, clamp)+renamedNote(o.leftover, kindGrant))
		g.valid = true
		res.RequeueAfter = untilRenewal(o.schedule, now)
	case holding:
		// The other process's token may be for an earlier generation: Ready does not
		// vouch for this one until a pass stores a token for it.
		c.pending()
		c.keep(cdv1.ReadyCondition, false, cdv1.ReconcilingReason, "The operator has not finished a first pass yet")
		c.set(cdv1.ReconcilingCondition, true, cdv1.ReconcilingReason, holdingMessage(o))
		// Whatever stopped the grant before (a token since replaced by a new login) no
		// longer holds: a Stalled left standing would end the pass in a terminal error,
		// which is never requeued, and the wait would never end.
		c.remove(cdv1.StalledCondition)
		res.RequeueAfter = max(o.until.Sub(now), time.Second)
	case throttled:
		// As for remembered: the memory the pass acted on, and a misuse it keeps.
		if o.failure != nil {
			grant.Status.LastFailure = failureStatus(*o.failure)
		}
		if msg := keptMisuse(c, o.failure, r.written.said(grant, o.failure)); msg != "" {
			g.misuse, g.misuseMsg = cdv1.GrantTypeNotAllowedReason, msg
		}
		// There is a refresh token to send: a "no refresh token" standing from before
		// (a customer who just logged in) is said no more.
		g.tried = true
		reportThrottled(c, grant.Generation)
		res.RequeueAfter = max(o.until.Sub(now), time.Millisecond)
	case remembered:
		// The memory the pass acted on, which a cache behind this process's last write
		// may not show: a write from this pass must not record it as cleared.
		grant.Status.LastFailure = failureStatus(o.failure)
		if msg := keepFailure(c, o.failure, r.written.said(grant, &o.failure), lifetimeOf(grant.Status.LastRotationTime, grant.Status.ExpiresAt)); msg != "" {
			g.misuse, g.misuseMsg = cdv1.GrantTypeNotAllowedReason, msg
		}
		if reauthReasons[o.failure.Reason] && o.failure.Terminal() {
			g.reauth, g.reauthMsg = o.failure.Reason, c.find(cdv1.ReadyCondition).Message
		}
		res.RequeueAfter = retryAfter(o.failure, now)
	case deferred:
		grant.Status.LastFailure = reportDeferred(c, o, grant.Status.SecretName, &grant.Status.RenewalTime, lifetimeOf(grant.Status.LastRotationTime, grant.Status.ExpiresAt))
		if msg := keptMisuse(c, o.failure, r.written.said(grant, o.failure)); msg != "" {
			g.misuse, g.misuseMsg = cdv1.GrantTypeNotAllowedReason, msg
		}
		res.RequeueAfter = max(o.until.Sub(now), time.Second)
	case abandoned:
		msg := "The stored refresh token was sent twice and no answer came back either time: it was most likely spent, and is not sent a third time. The customer must log in again"
		f := rotation.Fail(r.written.current(grant, grant.Status.LastFailure), o.request, cdv1.RotationInterruptedReason, now, rotation.Retry{Terminal: true}, string(grant.UID))
		grant.Status.LastFailure = failureStatus(f)
		reportFailure(c, f, msg, lifetimeOf(grant.Status.LastRotationTime, grant.Status.ExpiresAt))
		g.reauth, g.reauthMsg = cdv1.RotationInterruptedReason, msg
	case redirected:
		c.stalled(cdv1.RotationPendingAtOtherClientReason, o.message())
	case answered:
		g.tried = true
		ref, msg := refusalOf(o, true)
		retry := withLifetime(o.outcome.Retry(), grant.Status.LastRotationTime, grant.Status.ExpiresAt, now, r.active.since(now))
		retry.RefreshExpires = refreshExpiry(o.refreshLife, now, r.active.since(now))
		// No answer: the one resend left waits for the last safe point (DESIGN §6).
		retry.ResendLate = o.outcome.Verdict == rotation.Lost
		prev, request := r.written.current(grant, grant.Status.LastFailure), o.request
		if o.next != "" {
			prev, request = retriedAs(prev, o.request, o.next), o.next
		}
		f := rotation.Fail(prev, request, ref.reason, now, retry, string(grant.UID))
		grant.Status.LastFailure = failureStatus(f)
		reportFailure(c, f, msg, lifetimeOf(grant.Status.LastRotationTime, grant.Status.ExpiresAt))
		switch {
		case o.outcome.Verdict == rotation.Misuse:
			g.misuse, g.misuseMsg = cdv1.GrantTypeNotAllowedReason, msg+"; "+misuseHint(cdv1.FlowAuthorizationCode)
		case f.Terminal() && (o.outcome.Verdict == rotation.Rejected || o.outcome.Verdict == rotation.Interrupted || o.outcome.Verdict == rotation.Refused):
			g.reauth, g.reauthMsg = ref.reason, msg
		default:
			g.valid = o.outcome.Verdict != rotation.Lost
		}
		res.RequeueAfter = retryAfter(f, now)
	case stored:
		s := o.token.schedule
		grant.Status.ExpiresAt, grant.Status.RenewalTime = timePtr(s.ExpiresAt), timePtr(s.RenewAt)
		if o.token.rotated {
			noteRenewedAhead(r.Recorder, grant, grant.Status.LastRotationTime, now)
			grant.Status.LastRotationTime = timePtr(s.Issued)
			grant.Status.RotationCount++
			metrics.RotationStored()
		}
		grant.Status.GrantedScopes, grant.Status.Subject = o.token.scopes, o.token.subject
		grant.Status.LastFailure = nil
		c.ready(cdv1.TokenIssuedReason, readyMessage(grant.Status.SecretName, o.token.clamp)+renamedNote(o.leftover, kindGrant))
		g.valid = true
		res.RequeueAfter = untilRenewal(s, now)
	case expiredUnstored:
		// The identity server accepted the refresh token, and its successor is stored:
		// only the access token was lost.
		retry := withLifetime(rotation.Retry{}, grant.Status.LastRotationTime, grant.Status.ExpiresAt, now, r.active.since(now))
		retry.RefreshExpires = refreshExpiry(o.refreshLife, now, r.active.since(now))
		// The successor's request is a retry of the one answered, not a new login: the
		// count goes on from that one's.
		prev := retriedAs(r.written.current(grant, grant.Status.LastFailure), o.answered, o.request)
		f := rotation.Fail(prev, o.request, cdv1.InvalidTokenResponseReason, now, retry, string(grant.UID))
		grant.Status.LastFailure = failureStatus(f)
		reportFailure(c, f, o.message(), lifetimeOf(grant.Status.LastRotationTime, grant.Status.ExpiresAt))
		g.valid = true
		res.RequeueAfter = retryAfter(f, now)
	case writeFailed:
		retry := withLifetime(rotation.Retry{Holding: o.holding}, grant.Status.LastRotationTime, grant.Status.ExpiresAt, now, r.active.since(now))
		retry.RefreshExpires = refreshExpiry(o.refreshLife, now, r.active.since(now))
		f := rotation.Fail(r.written.current(grant, grant.Status.LastFailure), o.request, cdv1.SecretWriteFailedReason, now, retry, string(grant.UID))
		if !o.inherited {
			grant.Status.LastFailure = failureStatus(f)
		}
		c.retrying(cdv1.SecretWriteFailedReason, writeFailure(o.err))
		// What failed to land came from the identity server: it accepted the grant's
		// refresh token (a new login's, after a refusal), which a refusal standing in
		// ReauthorizationRequired would deny. An inherited token is another grant's.
		g.valid = !o.inherited
		res.RequeueAfter = retryAfter(f, now)
	case markRefused:
		// The token in the output Secret is still the last one stored: status keeps
		// describing it, and the refresh token was not tried.
		c.retrying(cdv1.SecretWriteFailedReason, markRefusal(o.secret, o.err))
	}
	return g, res
}

// holdingMessage says whose rotation of the grant's refresh token a pass waits for.
func holdingMessage(o holding) string {
	if o.here {
		return "This operator process is spending this grant's refresh token for another CDUserGrant (one deleted or replaced while its request was out); waiting for the answer to be stored"
	}
	return "Another operator process is rotating this grant's refresh token; waiting for it to finish"
}

// reauthReasons are the failures that leave the customer to log in again.
var reauthReasons = map[string]bool{
	cdv1.RefreshTokenRejectedReason: true, cdv1.RotationInterruptedReason: true, cdv1.RefreshTokenRefusedReason: true,
}

// reportGrantConditions sets FlowMisuse and ReauthorizationRequired from the pass.
func (r *CDUserGrantReconciler) reportGrantConditions(grant *cdv1.CDUserGrant, c conditions, g grantReport) {
	if g.misuse != "" {
		c.set(cdv1.FlowMisuseCondition, true, g.misuse, g.misuseMsg)
	} else {
		c.set(cdv1.FlowMisuseCondition, false, cdv1.FlowCorrectReason, "The grant uses an AuthorizationCode credential")
	}
	_, requested := grant.Annotations[cdv1.ReauthorizeAnnotation]
	switch {
	case g.reauth != "":
		c.set(cdv1.ReauthorizationRequiredCondition, true, g.reauth, g.reauthMsg)
	case requested && r.Authorizer != nil:
		c.set(cdv1.ReauthorizationRequiredCondition, true, cdv1.ReauthorizationRequestedReason, reauthorizationRequested(c.find(cdv1.ReauthorizationRequiredCondition), grant.Status.LastAuthorization))
	case requested:
		// Without a callback server the request cannot be answered: say so, where
		// `kubectl cd reauthorize` looks, rather than ignore it.
		c.set(cdv1.ReauthorizationRequiredCondition, true, cdv1.ReauthorizationRequestedReason, "A new customer login was asked for ("+cdv1.ReauthorizeAnnotation+"), but "+cdv1.NoLoginLinkMessage+
			" (its callback server is off): enable the callback (manager flags --callback-bind-address and --callback-url; Helm chart value callback.enabled), or remove the annotation; the grant keeps rotating its current refresh token")
	case g.valid:
		c.set(cdv1.ReauthorizationRequiredCondition, false, cdv1.RefreshTokenValidReason, "The grant holds a refresh token the identity server last accepted")
	case stale(c.find(cdv1.ReauthorizationRequiredCondition), g.tried):
		c.set(cdv1.ReauthorizationRequiredCondition, false, cdv1.RefreshTokenNotCheckedReason, "The refresh token has not been checked yet")
	default:
		c.keep(cdv1.ReauthorizationRequiredCondition, false, "", "")
	}
}

// stale tells whether ReauthorizationRequired (cur) says nothing true about the grant's
// refresh token any more, so that a pass that learnt nothing about it words it anew: it
// is absent, a request for a login that was answered, or "no refresh token" after the
// pass tried one (refused for a reason a login does not fix, or unanswered).
func stale(cur *metav1.Condition, tried bool) bool {
	return cur == nil || cur.Reason == cdv1.ReauthorizationRequestedReason || (tried && cur.Reason == cdv1.RefreshTokenMissingReason)
}

// reauthorizationRequested words a pending reauthorization request. The grant stays
// Ready on its current token meanwhile, so a login that failed since the request (the
// customer declined, no refresh token came) would show nowhere but in
// status.lastAuthorization: it is named here. cur is the condition before this pass.
func reauthorizationRequested(cur *metav1.Condition, a *cdv1.AuthorizationResult) string {
	msg := "A new customer login was asked for (" + cdv1.ReauthorizeAnnotation + "); the grant keeps rotating its current refresh token until the customer logs in at status.authorizationURL"
	if a == nil || a.Reason == cdv1.CustomerAuthorizedReason || cur == nil || cur.Status != metav1.ConditionTrue ||
		cur.Reason != cdv1.ReauthorizationRequestedReason || a.Time.Time.Before(cur.LastTransitionTime.Truncate(time.Second)) {
		return msg // no login failed since this request was made
	}
	return msg + ". The last login failed (" + a.Reason + "): " + a.Message
}

// showLastAuthorization puts a failed customer login on Ready while the grant waits for
// one: the customer tried, and the identity server or the callback said why not.
func showLastAuthorization(c conditions, a *cdv1.AuthorizationResult) {
	if a == nil || a.Reason == cdv1.CustomerAuthorizedReason {
		return
	}
	if ready := c.find(cdv1.ReadyCondition); ready.LastTransitionTime.After(a.Time.Time) {
		return // older than the wait it would explain
	}
	c.waiting(a.Reason, a.Message)
}
