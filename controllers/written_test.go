package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// The memory of status writes covers only the window in which the cache has not seen
// them: an entry goes once the cache holds the write, so memory does not grow by one
// entry per CR, and an entry whose write the cache has not shown yet stays.
func TestTheWrittenFailureMemoryLastsUntilTheCacheHoldsTheWrite(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	failure := &cdv1.FailureStatus{Reason: cdv1.RefreshTokenRejectedReason, Request: "r1", LastFailureTime: metav1.NewTime(now), FailedAttempts: 1}
	grant := func(rv string, memory *cdv1.FailureStatus) *cdv1.CDUserGrant {
		g := &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "acme", UID: "u1", ResourceVersion: rv}}
		g.Status.LastFailure = memory
		return g
	}
	remembered := func(w *writtenFailures) bool { _, ok := w.m.Load(grant("", nil).UID); return ok }

	var w writtenFailures
	// A routine write, no failure before or after: nothing to remember.
	w.note(grant("3", nil), &metav1.ObjectMeta{ResourceVersion: "4"}, nil, nil, now)
	if remembered(&w) {
		t.Fatal("a write with no failure on either side left an entry")
	}
	w.note(grant("4", nil), &metav1.ObjectMeta{ResourceVersion: "5"}, nil, failure, now)

	// The cache still shows the version before the write: the written failure counts.
	if got := w.current(grant("4", nil), nil); got == nil || got.Request != "r1" {
		t.Fatalf("cache behind the write: current = %+v, want the written failure", got)
	}
	if !remembered(&w) {
		t.Fatal("the entry went before the cache held the write")
	}
	// The cache holds the write: the entry goes, and the cache's copy is the answer.
	if got := w.current(grant("5", failure), failure); got == nil || got.Request != "r1" {
		t.Fatalf("cache at the write: current = %+v, want the failure", got)
	}
	if remembered(&w) {
		t.Error("the entry stayed after the cache held the write: one entry per CR, forever")
	}

	// A success, once the cache holds it, leaves nothing either.
	w.note(grant("5", failure), &metav1.ObjectMeta{ResourceVersion: "6"}, failure, nil, now.Add(time.Minute))
	if got := w.current(grant("5", failure), failure); got != nil {
		t.Fatalf("cache behind a cleared memory: current = %+v, want nil", got)
	}
	if got := w.current(grant("6", nil), nil); got != nil || remembered(&w) {
		t.Errorf("cache at the success: current = %+v, remembered %v; want nil, false", got, remembered(&w))
	}
}
