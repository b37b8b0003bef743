package controllers

import (
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/eventnote"
	"github.com/credops/cd-credentials-operator/internal/rotation"
)

// activeSince is when this process could first act: it won the leader election, or
// started without one (rotation.Input.ActiveSince). Another process's in-flight mark is
// waited for a full HolderTimeout after it, and a time read from storage that lies in
// this process's future (stamped by a clock running ahead) counts from it; a token
// stamped as issued more than rotation.SkewTolerance ahead is renewed at once instead.
type activeSince struct {
	at atomic.Int64 // Unix nanoseconds; 0 until elected
}

// elected records the moment; the manager calls the reconcilers' Elected from a
// leader-election runnable.
func (a *activeSince) elected(at time.Time) { a.at.Store(at.UnixNano()) }

// since is the moment as a pass at now takes it: zero when unknown, and never after now.
// A clock stepped back below it moves it to now, once: left after now it would be no
// anchor (rotation counts from now then, which moves with every pass), and this process
// can first act, in the clock it has now, no later than now.
func (a *activeSince) since(now time.Time) time.Time {
	for {
		at := a.at.Load()
		switch {
		case at == 0:
			return time.Time{}
		case at <= now.UnixNano():
			return time.Unix(0, at)
		case a.at.CompareAndSwap(at, now.UnixNano()):
			return now
		}
	}
}

// noteRenewedAhead records why a token was renewed at once when the one it replaced was
// issued, by status (issued), more than rotation.SkewTolerance after now: stamped by a
// clock running ahead, its real expiry unknown (rotation.Schedule.AsOf). Such a renewal
// changes no condition (Ready stays TokenIssued, and a pass that words it anew must word
// it the same), so the Event is the only trace of it. Called before status takes the new
// token's times.
func noteRenewedAhead(rec events.EventRecorder, obj runtime.Object, issued *metav1.Time, now time.Time) {
	if issued == nil || !(rotation.Schedule{Issued: issued.Time}).IssuedAhead(now) {
		return
	}
	rec.Eventf(eventTarget(obj), nil, corev1.EventTypeNormal, cdv1.TokenIssuedReason, "Reconcile", "%s", eventnote.Of(
		"Renewed the token at once: the token it replaces was stamped as issued %s after this manager's clock, by a clock running ahead (a previous leader's node without NTP, or this node's clock stepped back since), so it may have expired already",
		issued.Sub(now).Truncate(time.Second)))
}
