package controllers

import (
	"context"
	"errors"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/eventnote"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
	"github.com/credops/cd-credentials-operator/internal/statuspatch"
)

// conditions edits one object's conditions during one report. Every condition carries
// the object's generation and a transition time from the injected clock; a condition
// whose status does not change keeps its transition time, so a pass that changes nothing
// leaves the status byte-for-byte equal and no status patch is sent. Only the report
// functions use it.
type conditions struct {
	list       *[]metav1.Condition
	before     []metav1.Condition
	generation int64
	now        time.Time
	// note is the note of the Event a Ready=False records, when it is not Ready's
	// message: a retried failure's message says the attempt and the next try's time,
	// which an Event must not carry (see retryingNoted).
	note *readyState
	// readyFor, when not 0, is the generation a Ready=True reports in this pass: that of
	// the token it stands on, older than the object's (see pending).
	readyFor *int64
}

// maxConditionMessage is metav1.Condition's limit on a message, in characters.
const maxConditionMessage = 32768

func newConditions(list *[]metav1.Condition, generation int64, now time.Time) conditions {
	return conditions{list: list, before: append([]metav1.Condition(nil), *list...), generation: generation, now: now, note: &readyState{}, readyFor: new(int64)}
}

func (c conditions) set(typ string, status bool, reason, message string) {
	s := metav1.ConditionFalse
	if status {
		s = metav1.ConditionTrue
	}
	transition := metav1.NewTime(c.now)
	if old := meta.FindStatusCondition(c.before, typ); old != nil && old.Status == s {
		transition = old.LastTransitionTime
	}
	// Cut, not refused: a message over the limit would have the API server refuse the
	// whole status patch, on every pass.
	if len(message) > maxConditionMessage { // bytes: no rune count on every pass
		message = truncate(message, maxConditionMessage-1)
	}
	cond := metav1.Condition{Type: typ, Status: s, ObservedGeneration: c.generationOf(typ, s), LastTransitionTime: transition, Reason: reason, Message: message}
	if cur := meta.FindStatusCondition(*c.list, typ); cur != nil {
		*cur = cond
		return
	}
	*c.list = append(*c.list, cond)
}

// keep re-stamps a condition as it is with the current generation (a pass that
// confirmed it; a Ready=True while pending, with the generation of its token), or sets
// the given default when there is none yet.
func (c conditions) keep(typ string, status bool, reason, message string) {
	cur := meta.FindStatusCondition(*c.list, typ)
	if cur == nil {
		c.set(typ, status, reason, message)
		return
	}
	cur.ObservedGeneration = c.generationOf(typ, cur.Status)
}

// pending says that the token in the output Secret was issued for an earlier generation
// and the current one's waits (the request budget, another process's rotation): a
// Ready=True set or kept in this pass goes on reporting the generation it reported
// before the pass. `kubectl wait --for=condition=Ready` skips a condition whose
// observedGeneration is below metadata.generation, so it waits for the edit's token
// instead of returning on the old one. The caller sets Reconciling=True, which carries
// the current generation and says what is pending (kstatus: InProgress);
// status.observedGeneration is the current generation all the same: the spec was seen.
func (c conditions) pending() {
	if r := meta.FindStatusCondition(c.before, cdv1.ReadyCondition); r != nil && r.Status == metav1.ConditionTrue {
		*c.readyFor = r.ObservedGeneration
	}
}

// generationOf is the observedGeneration condition typ gets with status s: the
// object's, except for a Ready=True that stands on an earlier generation's token
// (pending).
func (c conditions) generationOf(typ string, s metav1.ConditionStatus) int64 {
	if typ == cdv1.ReadyCondition && s == metav1.ConditionTrue && *c.readyFor != 0 {
		return *c.readyFor
	}
	return c.generation
}

func (c conditions) find(typ string) *metav1.Condition { return meta.FindStatusCondition(*c.list, typ) }

func (c conditions) remove(typ string) { meta.RemoveStatusCondition(c.list, typ) }

// The kstatus states an object can be in after a pass.

// ready: Ready=True; neither Reconciling nor Stalled.
func (c conditions) ready(reason, message string) {
	c.set(cdv1.ReadyCondition, true, reason, message)
	c.remove(cdv1.ReconcilingCondition)
	c.remove(cdv1.StalledCondition)
}

// waiting: Ready=False on something outside the operator (a customer, a Secret to be
// created); not Reconciling (nothing to retry) and not Stalled (it resolves by itself).
func (c conditions) waiting(reason, message string) {
	c.set(cdv1.ReadyCondition, false, reason, message)
	c.remove(cdv1.ReconcilingCondition)
	c.remove(cdv1.StalledCondition)
}

// retrying: Ready=False and Reconciling=True: the operator tries again by itself.
func (c conditions) retrying(reason, message string) {
	c.set(cdv1.ReadyCondition, false, reason, message)
	c.set(cdv1.ReconcilingCondition, true, reason, message)
	c.remove(cdv1.StalledCondition)
}

// retryingNoted is retrying, with note in place of message in the Event it may record.
// The events library folds repeats into a series by reason and keeps the first note: a
// note that said "attempt 1, next at 10:17:08" would go on saying it for a whole outage.
func (c conditions) retryingNoted(reason, message, note string) {
	c.retrying(reason, message)
	*c.note = readyState{reason, note}
}

// stalled: Ready=False and Stalled=True: nothing happens until the spec or a referenced
// object changes.
func (c conditions) stalled(reason, message string) {
	c.set(cdv1.ReadyCondition, false, reason, message)
	c.set(cdv1.StalledCondition, true, reason, message)
	c.remove(cdv1.ReconcilingCondition)
}

// terminal is the error a reconcile returns when the object is Stalled and nothing is
// scheduled: a terminal error, which controller-runtime counts and logs but does not
// retry (a change to the object or to what it references brings it back). nil
// otherwise: a refusal rechecked later (rotation.Failure.Recheck) is requeued instead.
func (c conditions) terminal(res ctrl.Result) error {
	if res.RequeueAfter > 0 {
		return nil
	}
	if s := c.find(cdv1.StalledCondition); s != nil && s.Status == metav1.ConditionTrue {
		return reconcile.TerminalError(errors.New(s.Message))
	}
	return nil
}

// becameTrue reports whether condition typ turned True in this pass.
func (c conditions) becameTrue(typ string) bool {
	return meta.IsStatusConditionTrue(*c.list, typ) && !meta.IsStatusConditionTrue(c.before, typ)
}

// recordChanges records one event per change of state in this pass and none when
// nothing changed: Ready turning True (a first token, or the first after a failure),
// Ready turning False or failing in a new way (newFailure), and the onset of FlowMisuse
// or ReauthorizationRequired. A routine renewal changes nothing here and records nothing
// (DESIGN §9), and neither does a retry of the same failure. Condition messages never
// hold a secret, so events built from them do not either. Every note is cut to what the
// API server takes (eventnote): a refused Event is lost.
func (c conditions) recordChanges(rec events.EventRecorder, obj runtime.Object) {
	target := eventTarget(obj)
	now, was := c.find(cdv1.ReadyCondition), meta.FindStatusCondition(c.before, cdv1.ReadyCondition)
	switch {
	case now == nil:
	case c.becameTrue(cdv1.ReadyCondition):
		rec.Eventf(target, nil, corev1.EventTypeNormal, now.Reason, "Reconcile", "%s", eventnote.Cut(now.Message))
	case newFailure(was, now):
		note := now.Message
		if c.note.reason == now.Reason && c.note.message != "" {
			note = c.note.message
		}
		rec.Eventf(target, nil, corev1.EventTypeWarning, now.Reason, "Reconcile", "%s", eventnote.Cut(note))
	}
	if c.becameTrue(cdv1.FlowMisuseCondition) {
		m := c.find(cdv1.FlowMisuseCondition)
		rec.Eventf(target, nil, corev1.EventTypeWarning, cdv1.FlowMisuseDetectedReason, "Reconcile", "%s", eventnote.Of("%s: %s", m.Reason, m.Message))
	}
	if c.becameTrue(cdv1.ReauthorizationRequiredCondition) {
		m := c.find(cdv1.ReauthorizationRequiredCondition)
		rec.Eventf(target, nil, corev1.EventTypeWarning, cdv1.ReauthorizationRequiredReason, "Reconcile", "%s", eventnote.Of("%s: %s", m.Reason, m.Message))
	}
}

// newFailure reports whether Ready (was before the pass, now after it) turned False, or
// stayed False for a failure of another kind. A flip between reasons of one kind is no
// news: each would be an Event write per CR per retry for the whole of an outage.
func newFailure(was, now *metav1.Condition) bool {
	if now.Status != metav1.ConditionFalse || now.Reason == cdv1.ReconcilingReason {
		return false
	}
	return was == nil || was.Status != metav1.ConditionFalse || failureKind(was.Reason) != failureKind(now.Reason)
}

// failureKind is the kind of failure a Ready reason says. An identity server in an
// outage answers 502 from a gateway with no backend and 503 with Retry-After from
// backends shedding load, in turn: TokenRequestFailed and RateLimited alternate from
// retry to retry, and are one outage.
func failureKind(reason string) string {
	if reason == cdv1.RateLimitedReason {
		return cdv1.TokenRequestFailedReason
	}
	return reason
}

// eventTarget is obj without its resourceVersion. The events recorder groups repeated
// events into one series by the object reference they regard; a reference carrying the
// resourceVersion differs after every status write.
func eventTarget(obj runtime.Object) runtime.Object {
	cp := obj.DeepCopyObject()
	if m, ok := cp.(metav1.Object); ok {
		m.SetResourceVersion("")
	}
	return cp
}

// failureStatus and fromFailureStatus convert the failure memory to and from status.
func failureStatus(f rotation.Failure) *cdv1.FailureStatus {
	s := &cdv1.FailureStatus{Request: f.Request, Reason: f.Reason, LastFailureTime: metav1.NewTime(f.Time), FailedAttempts: int32(min(f.Attempts, 1<<30))}
	if !f.Retry.IsZero() {
		s.RetryTime = timePtr(f.Retry)
	}
	s.RecheckTime = timePtr(f.Recheck)
	return s
}

// withLifetime bounds retry's backoff by the lifetime of the token the CR last stored
// (issued to expires, from its status), so a short-lived token is retried within its
// renewal window (unknown when either time is missing), and by that token's expiry, so
// no backoff runs past the last safe point before it (rotation.Retry.Expires). The
// expiry is counted as rotation counts a stored schedule at now (Schedule.AsOf, with
// activeSince): taken at its word, a token stamped by a clock ahead would hold a lost
// answer's resend that much past its real expiry. Issued more than
// rotation.SkewTolerance after now, the token may have expired already, and its expiry
// is taken to be now.
func withLifetime(retry rotation.Retry, issued, expires *metav1.Time, now, activeSince time.Time) rotation.Retry {
	retry.Lifetime = lifetimeOf(issued, expires)
	if expires != nil {
		s := rotation.Schedule{ExpiresAt: expires.Time}
		if issued != nil {
			s.Issued = issued.Time
		}
		retry.Expires = s.AsOf(now, activeSince).ExpiresAt
	}
	return retry
}

// lifetimeOf is the lifetime of the token a CR last stored, from its status; 0 when
// either time is missing.
func lifetimeOf(issued, expires *metav1.Time) time.Duration {
	if issued == nil || expires == nil {
		return 0
	}
	return max(expires.Sub(issued.Time), 0)
}

// clampOf is what a clamped renewBefore (spec) does to the token in an output Secret
// (sched), worded as the pass that stored it worded it: rotation.SessionClamp
// (RefreshClamp, or the session's end when the renewal comes after it) over the token's
// lifetime from status (issued to expires) and that of the refresh token that renews it (refresh, a grant's stored life; zero when unknown or none, and for a
// CDCredential). A refresh token stored since that access token came (a login through
// the callback) is the one the renewal now waits for (rotation's stillFresh): it is
// worded as rotation.LaterRefreshClamp words it, not left out until the next rotation.
// "" when status does not describe the access token (its expiry differs) or lacks its
// issuance: then its lifetime is unknown.
func clampOf(spec *metav1.Duration, issued, expires *metav1.Time, sched, refresh rotation.Schedule) string {
	if expires == nil || !expires.Time.Equal(sched.ExpiresAt) {
		return ""
	}
	lifetime := lifetimeOf(issued, expires)
	if lifetime <= 0 {
		return ""
	}
	refreshLifetime := refreshLifetimeOf(refresh)
	if refreshLifetime > 0 && !refresh.Issued.Equal(issued.Time) {
		return rotation.LaterRefreshClamp(lifetime, refreshLifetime, renewBefore(spec))
	}
	return rotation.SessionClamp(rotation.Schedule{Issued: issued.Time, RenewAt: sched.RenewAt}, lifetime, refreshLifetime, renewBefore(spec))
}

// plannedWith reports whether a stored refresh life came with the access token status
// describes (issued, status.lastRotationTime: the same rotation stamped both), so that
// rotation.PlanRefresh already counted it when it planned the renewal; a login's token,
// stored apart, did not.
func plannedWith(life rotation.Schedule, issued *metav1.Time) bool {
	return issued != nil && refreshLifetimeOf(life) > 0 && life.Issued.Equal(issued.Time)
}

// refreshLifetimeOf is the lifetime of a refresh token with the stored life
// (secrets.RefreshLife, recorded for that very token); 0 when it has no known limit.
func refreshLifetimeOf(life rotation.Schedule) time.Duration {
	if life.Issued.IsZero() || life.ExpiresAt.IsZero() {
		return 0
	}
	return life.ExpiresAt.Sub(life.Issued)
}

// refreshExpiry is when a refresh token with the stored life dies, counted as rotation
// counts a stored schedule at now (Schedule.AsOf, with activeSince), as withLifetime
// counts the access token's expiry; zero when it has no known limit.
func refreshExpiry(life rotation.Schedule, now, activeSince time.Time) time.Time {
	if life.ExpiresAt.IsZero() {
		return time.Time{}
	}
	return life.AsOf(now, activeSince).ExpiresAt
}

// lastToken is the schedule of the token in an output Secret s whatever it was requested
// for (rotation.Input.Last), with its issuance taken from status when status describes
// that very token: the Secret does not record it. nil when s holds no readable token
// (a hand edit): it is repaired at once.
func lastToken(s *corev1.Secret, issued, expires *metav1.Time) *rotation.Schedule {
	sched, ok := secrets.Consistent(s)
	if !ok {
		return nil
	}
	sched.Issued = issuanceOf(sched, issued, expires)
	return &sched
}

// issuanceOf is when the token on schedule s (read from its output Secret, which does
// not record it) was issued, from status (issued) when status describes that very token
// (expires); zero when unknown.
func issuanceOf(s rotation.Schedule, issued, expires *metav1.Time) time.Time {
	if issued != nil && expires != nil && expires.Time.Equal(s.ExpiresAt) {
		return issued.Time
	}
	return time.Time{}
}

// renamedToken is the token a CR's status describes, when spec.secretName was changed
// since status named the Secret that holds it (previous) and the new Secret holds no
// token yet: for the request budget it counts as the output's, or renaming the output
// over and over would send a request per edit. nil when the output was not renamed.
func renamedToken(previous, name string, issued, expires, renewal *metav1.Time) *rotation.Schedule {
	if previous == "" || previous == name || issued == nil || expires == nil {
		return nil
	}
	s := rotation.Schedule{Issued: issued.Time, ExpiresAt: expires.Time}
	if renewal != nil {
		s.RenewAt = renewal.Time
	}
	return &s
}

func fromFailureStatus(s *cdv1.FailureStatus) *rotation.Failure {
	if s == nil {
		return nil
	}
	f := &rotation.Failure{Request: s.Request, Reason: s.Reason, Time: s.LastFailureTime.Time, Attempts: int(s.FailedAttempts)}
	if s.RetryTime != nil {
		f.Retry = s.RetryTime.Time
	}
	if s.RecheckTime != nil {
		f.Recheck = s.RecheckTime.Time
	}
	return f
}

// timePtr returns t as an API time, or nil for the zero time.
func timePtr(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	mt := metav1.NewTime(t)
	return &mt
}

// writeStatus writes obj's status from before to after (statuspatch.Patch) and returns the
// patch's target, its answer. gone reports that obj was deleted, or replaced by another
// object of its name, since the pass read it: nothing was written, and nothing is left
// to report on. A patch refused for another reason than the API server being
// unavailable (a failed test is refused as Invalid) costs one read, which says whether
// the object is gone or its status is not as the pass read it (written meanwhile where there was none, or
// the other way round): the patch then goes once more, in the form that fits.
func writeStatus[S any](ctx context.Context, c client.Client, api client.Reader, gvk schema.GroupVersionKind, obj client.Object, before, after *S) (target *metav1.PartialObjectMetadata, gone bool, err error) {
	target = metadataTarget(gvk, client.ObjectKeyFromObject(obj))
	p := statuspatch.For(obj, before, after)
	switch err = c.Status().Patch(ctx, target, p); {
	case err == nil:
		return target, false, nil
	case apierrors.IsNotFound(err):
		return target, true, nil
	case unavailable(err):
		// An outage, a timeout, throttling: a read would only add to the load, and
		// cannot say anything a failed test would.
		return target, false, err
	}
	cur := &unstructured.Unstructured{}
	cur.SetGroupVersionKind(gvk)
	switch rerr := api.Get(ctx, client.ObjectKeyFromObject(obj), cur); {
	case apierrors.IsNotFound(rerr):
		return target, true, nil
	case rerr != nil:
		return target, false, err
	case cur.GetUID() != obj.GetUID():
		return target, true, nil
	}
	again := p
	again.Over = ""
	if _, there := cur.Object["status"]; !there {
		again.Over = cur.GetResourceVersion()
	}
	if again.Over == p.Over {
		return target, false, err // the same patch would be refused the same way
	}
	return target, false, c.Status().Patch(ctx, target, again)
}

// unavailable reports whether err says the API server could not take a request now (an
// outage, a timeout, throttling), not whether it refused this one.
func unavailable(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsTooManyRequests(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err)
}

// metadataTarget is the object key as the target of a patch whose answer is read for its
// metadata only. The API server answers a write with the whole object, and for a CR (and
// for any server-side apply, which client.Apply reads back as JSON) that answer comes as
// JSON: decoding it was a third of a status write, and nothing reads it. The metadata
// client asks for the answer as PartialObjectMetadata in protobuf instead.
func metadataTarget(gvk schema.GroupVersionKind, key types.NamespacedName) *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(gvk)
	m.Namespace, m.Name = key.Namespace, key.Name
	return m
}
