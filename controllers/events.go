package controllers

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// eventTarget is obj without its resourceVersion. The events recorder groups repeated
// events into one series by the object reference they regard; a reference carrying the
// resourceVersion differs after every status write, so each routine renewal would create
// a new Event, one more API write per rotation than DESIGN §9 allows.
func eventTarget(obj runtime.Object) runtime.Object {
	cp := obj.DeepCopyObject()
	if m, ok := cp.(metav1.Object); ok {
		m.SetResourceVersion("")
	}
	return cp
}

// recordTransitions records one event per change of state in this pass, and none when
// nothing changed: a failure reason appearing on Ready, and the onset of FlowMisuse or
// ReauthorizationRequired. Condition messages never hold a secret, so events built from
// them do not either.
func recordTransitions(rec events.EventRecorder, obj runtime.Object, conds conditions) {
	now := meta.FindStatusCondition(*conds.list, cdv1.ReadyCondition)
	was := meta.FindStatusCondition(conds.before, cdv1.ReadyCondition)
	if now != nil && now.Status == "False" && now.Reason != cdv1.ReconcilingReason && (was == nil || was.Reason != now.Reason) {
		rec.Eventf(eventTarget(obj), nil, corev1.EventTypeWarning, now.Reason, "Reconcile", "%s", now.Message)
	}
	if conds.onset(cdv1.FlowMisuseCondition) {
		c := meta.FindStatusCondition(*conds.list, cdv1.FlowMisuseCondition)
		rec.Eventf(eventTarget(obj), nil, corev1.EventTypeWarning, cdv1.FlowMisuseDetectedReason, "Reconcile", "%s: %s", c.Reason, c.Message)
	}
	if conds.onset(cdv1.ReauthorizationRequiredCondition) {
		c := meta.FindStatusCondition(*conds.list, cdv1.ReauthorizationRequiredCondition)
		rec.Eventf(eventTarget(obj), nil, corev1.EventTypeWarning, cdv1.ReauthorizationRequiredReason, "Reconcile", "%s: %s", c.Reason, c.Message)
	}
}

// EventTarget is eventTarget for other packages that record events on the CRs.
func EventTarget(obj runtime.Object) runtime.Object { return eventTarget(obj) }
