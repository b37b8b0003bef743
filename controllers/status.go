package controllers

import (
	"errors"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// conditions sets conditions on one object's status during one reconcile pass. Every
// condition carries the same observedGeneration and transition time (from the injected
// clock), so a pass that changes nothing leaves the status byte-for-byte equal and no
// status patch is sent.
type conditions struct {
	list       *[]metav1.Condition
	before     []metav1.Condition
	generation int64
	now        time.Time
}

func newConditions(list *[]metav1.Condition, generation int64, now time.Time) conditions {
	before := make([]metav1.Condition, len(*list))
	copy(before, *list)
	return conditions{list: list, before: before, generation: generation, now: now}
}

// set sets a condition. The transition time is the one the object had at the start of
// the pass when the status is the same, so a step that sets a condition twice in a pass
// (a default, then the outcome) does not move it.
func (c conditions) set(typ string, status bool, reason, message string) {
	s := metav1.ConditionFalse
	if status {
		s = metav1.ConditionTrue
	}
	transition := metav1.NewTime(c.now)
	if old := meta.FindStatusCondition(c.before, typ); old != nil && old.Status == s {
		transition = old.LastTransitionTime
	}
	cond := metav1.Condition{
		Type:               typ,
		Status:             s,
		ObservedGeneration: c.generation,
		LastTransitionTime: transition,
		Reason:             reason,
		Message:            message,
	}
	if cur := meta.FindStatusCondition(*c.list, typ); cur != nil {
		*cur = cond
		return
	}
	*c.list = append(*c.list, cond)
}

// ensure sets a condition only if the object has none of that type yet, so the
// conditions the API promises are present from the first status write on.
func (c conditions) ensure(typ string, status bool, reason, message string) {
	if meta.FindStatusCondition(*c.list, typ) == nil {
		c.set(typ, status, reason, message)
	}
}

// onset reports whether condition typ became True during this pass.
func (c conditions) onset(typ string) bool {
	return meta.IsStatusConditionTrue(*c.list, typ) && !meta.IsStatusConditionTrue(c.before, typ)
}

func (c conditions) isTrue(typ string) bool {
	return meta.IsStatusConditionTrue(*c.list, typ)
}

// ready marks the object Ready and clears Stalled.
func (c conditions) ready(reason, message string) {
	c.set(cdv1.ReadyCondition, true, reason, message)
	meta.RemoveStatusCondition(c.list, cdv1.StalledCondition)
}

// notReady marks the object not Ready for a reason that may resolve by itself (waiting
// or transient). Stalled is cleared: the operator is still trying.
func (c conditions) notReady(reason, message string) {
	c.set(cdv1.ReadyCondition, false, reason, message)
	meta.RemoveStatusCondition(c.list, cdv1.StalledCondition)
}

// stalled marks the object not Ready and Stalled: the operator will not retry until the
// spec or a referenced object changes.
func (c conditions) stalled(reason, message string) {
	c.set(cdv1.ReadyCondition, false, reason, message)
	c.set(cdv1.StalledCondition, true, reason, message)
}

// stalledError is returned by a step that stalled the object: the message is already in
// the conditions, and controller-runtime must not retry.
func stalledError(message string) error {
	return reconcile.TerminalError(errors.New(message))
}

// timePtr returns t as an API time, or nil for the zero time.
func timePtr(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	mt := metav1.NewTime(t)
	return &mt
}
