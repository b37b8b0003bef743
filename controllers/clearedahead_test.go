package controllers

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// A failure memory recorded by a process whose clock ran an hour ahead lies in the
// future of the next process. That one retries and succeeds, and its status write clears
// the memory. A later pass on a cache that has not seen that write yet reads the memory
// again, dated after the clearing write: the write must win all the same. Taken for
// current, the cleared memory counted on: the first refusal after the success made
// the third of an unclassified refusal, which is terminal (DESIGN §5: at most two
// retries), and the credential stalled for good on one refusal.
func TestAFailureStampedAheadStaysClearedWhileTheCacheLags(t *testing.T) {
	odd := &tokenclient.Error{Kind: tokenclient.KindRefused, StatusCode: 418, Description: "I'm a teapot"}
	w := newWorld(t)
	w.clock.SetTime(epoch.Add(time.Hour)) // the first process's clock
	w.tokens.failNext(odd, odd)
	for range 2 {
		res, err := w.reconcileCred("pricing")
		if err != nil {
			t.Fatal(err)
		}
		w.clock.Step(res.RequeueAfter)
	}
	ahead := w.cred("pricing")
	if f := ahead.Status.LastFailure; f == nil || f.FailedAttempts != 2 {
		t.Fatalf("lastFailure %+v, want 2 refusals", f)
	}

	w.clock.SetTime(epoch.Add(time.Minute)) // the right clock
	w.restart("me-2")
	w.clock.Step(time.Minute) // past the retry, counted from when this process began
	res, err := w.reconcileCred("pricing")
	if err != nil {
		t.Fatal(err)
	}
	if f := w.cred("pricing").Status.LastFailure; f != nil {
		t.Fatalf("the retry that succeeded left lastFailure %+v", f)
	}

	// At the renewal, the cache still shows the refusals, and the identity server
	// refuses once.
	w.clock.Step(res.RequeueAfter)
	w.lag(ahead)
	w.tokens.failNext(odd)
	if _, err := w.reconcileCred("pricing"); err != nil && !errors.Is(err, reconcile.TerminalError(nil)) {
		t.Fatal(err)
	}
	f := w.cred("pricing").Status.LastFailure
	if f == nil || f.FailedAttempts != 1 || f.RetryTime == nil {
		t.Errorf("lastFailure after one refusal since the success: %+v, want 1 attempt, retried", f)
	}
}

// What a pass on a cache behind this process's status writes takes for the failure
// memory: the written one, whatever the time of the cached one it replaced, and the
// cached one only when it is newer than anything this process replaced.
func TestTheWrittenFailureMemoryWinsOverOneItReplacedStampedAhead(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	failure := func(at time.Time, attempts int32) *cdv1.FailureStatus {
		return &cdv1.FailureStatus{Reason: cdv1.TokenRequestFailedReason, Request: "r1", LastFailureTime: metav1.NewTime(at), FailedAttempts: attempts, RetryTime: &metav1.Time{Time: at.Add(5 * time.Second)}}
	}
	ahead := failure(now.Add(time.Hour), 1) // stamped by a clock an hour ahead
	counted := failure(now, 2)              // the next attempt, counted from it
	type write struct{ before, after *cdv1.FailureStatus }
	cases := map[string]struct {
		writes []write
		cached *cdv1.FailureStatus
		want   *cdv1.FailureStatus
	}{
		"a failure stamped ahead, cleared": {
			writes: []write{{ahead, nil}}, cached: ahead, want: nil,
		},
		"a failure stamped ahead, counted on": {
			writes: []write{{ahead, counted}}, cached: ahead, want: counted,
		},
		"a failure this process stamped ahead, cleared by a pass on a cache that had not shown it": {
			writes: []write{{nil, ahead}, {nil, nil}}, cached: ahead, want: nil,
		},
		"a failure recorded after the clearing write, by another process": {
			writes: []write{{failure(now.Add(-time.Minute), 1), nil}}, cached: failure(now.Add(time.Second), 1), want: failure(now.Add(time.Second), 1),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var w writtenFailures
			g := &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "acme", UID: "u1"}}
			for i, wr := range tc.writes {
				w.note(g, &metav1.ObjectMeta{ResourceVersion: string(rune('5' + i))}, wr.before, wr.after, nil, now)
			}
			g.ResourceVersion = "4" // the cache is behind every write
			got := w.current(g, tc.cached)
			if diff := cmp.Diff(fromFailureStatus(tc.want), got); diff != "" {
				t.Errorf("current (-want +got):\n%s", diff)
			}
		})
	}
}
