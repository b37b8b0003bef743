package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
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
	remembered := func(w *writtenFailures) bool { return w.has(grant("", nil)) }

	var w writtenFailures
	// A routine write, no failure before or after: nothing to remember.
	w.note(grant("3", nil), &metav1.ObjectMeta{ResourceVersion: "4"}, nil, nil, nil, now)
	if remembered(&w) {
		t.Fatal("a write with no failure on either side left an entry")
	}
	w.note(grant("4", nil), &metav1.ObjectMeta{ResourceVersion: "5"}, nil, failure, nil, now)

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
	w.note(grant("5", failure), &metav1.ObjectMeta{ResourceVersion: "6"}, failure, nil, nil, now.Add(time.Minute))
	if got := w.current(grant("5", failure), failure); got != nil {
		t.Fatalf("cache behind a cleared memory: current = %+v, want nil", got)
	}
	if got := w.current(grant("6", nil), nil); got != nil || remembered(&w) {
		t.Errorf("cache at the success: current = %+v, remembered %v; want nil, false", got, remembered(&w))
	}
}

// The pass right after a refusal may read a cache that has not seen the refusal's status
// write (the in-flight mark's removal on the refresh-token Secret brings a grant back at
// once). Its status write must not replace the message that says what to do with "The
// last request failed (X)", which every later pass would then keep.
func TestAPassOnALaggingCacheKeepsTheRefusalsMessage(t *testing.T) {
	cases := map[string]struct {
		err  error
		want map[string]string // condition type -> words its message must keep
	}{
		"wrong credential set": {
			err: &tokenclient.Error{Kind: tokenclient.KindGrantTypeNotAllowed, Code: "unauthorized_client", StatusCode: 400},
			want: map[string]string{
				cdv1.ReadyCondition:      "refused this grant type",
				cdv1.StalledCondition:    "refused this grant type",
				cdv1.FlowMisuseCondition: "use the authorization-code credential set",
			},
		},
		"spent refresh token": {
			err: invalidGrant,
			want: map[string]string{
				cdv1.ReadyCondition:                   "log in again",
				cdv1.StalledCondition:                 "log in again",
				cdv1.ReauthorizationRequiredCondition: "log in again",
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			unrotated := w.grant("acme")
			w.tokens.failNext(tc.err)
			passes := []client.Object{nil, unrotated, &cdv1.CDUserGrant{}} // as read: fresh, lagging, caught up
			for i, cached := range passes {
				if cached != nil {
					w.lag(cached)
				}
				if _, err := w.reconcileGrant("acme"); err != nil && !errors.Is(err, reconcile.TerminalError(nil)) {
					t.Fatal(err)
				}
				g := w.grant("acme")
				for typ, words := range tc.want {
					if c := condition(t, g.Status.Conditions, typ); !strings.Contains(c.Message, words) {
						t.Errorf("pass %d: %s message %q lost %q", i+1, typ, c.Message, words)
					}
				}
			}
		})
	}
}

// The same for a CDCredential that uses the authorization-code client for a server
// flow.
func TestAPassOnALaggingCacheKeepsACredentialsRefusalMessage(t *testing.T) {
	w := newWorld(t)
	unsent := w.cred("pricing")
	w.tokens.failNext(&tokenclient.Error{Kind: tokenclient.KindGrantTypeNotAllowed, Code: "unauthorized_client", StatusCode: 400})
	for i, cached := range []client.Object{nil, unsent, &cdv1.CDCredential{}} {
		if cached != nil {
			w.lag(cached)
		}
		if _, err := w.reconcileCred("pricing"); err != nil {
			t.Fatal(err)
		}
		c := w.cred("pricing")
		for _, typ := range []string{cdv1.ReadyCondition, cdv1.StalledCondition, cdv1.FlowMisuseCondition} {
			if m := condition(t, c.Status.Conditions, typ).Message; !strings.Contains(m, "use the client-credentials credential set") {
				t.Errorf("pass %d: %s message %q lost the hint to use the client-credentials credential set", i+1, typ, m)
			}
		}
	}
}

// The words kept with a written failure are those of the pass that recorded it: a later
// pass that only carries the failure on (an edit deferred after it words Ready its own
// way) does not replace them, and once the cache holds the write none are recalled.
func TestTheWrittenFailureKeepsTheWordsOfThePassThatRecordedIt(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	failure := &cdv1.FailureStatus{Reason: cdv1.GrantTypeNotAllowedReason, Request: "r1", LastFailureTime: metav1.NewTime(now), FailedAttempts: 1}
	grant := func(rv string) *cdv1.CDUserGrant {
		return &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "acme", UID: "u1", ResourceVersion: rv}}
	}
	conds := func(ready string) []metav1.Condition {
		return []metav1.Condition{
			{Type: cdv1.ReadyCondition, Status: metav1.ConditionFalse, Reason: cdv1.GrantTypeNotAllowedReason, Message: ready},
			{Type: cdv1.FlowMisuseCondition, Status: metav1.ConditionTrue, Reason: cdv1.GrantTypeNotAllowedReason, Message: "refused; use the authorization-code credential set"},
		}
	}
	want := failureWords{ready: "refused this grant type", misuse: "refused; use the authorization-code credential set"}

	var w writtenFailures
	w.note(grant("4"), &metav1.ObjectMeta{ResourceVersion: "5"}, nil, failure, conds("refused this grant type"), now)
	w.note(grant("4"), &metav1.ObjectMeta{ResourceVersion: "6"}, nil, failure, conds("The last request failed (GrantTypeNotAllowed); the spec changed since"), now)
	f := fromFailureStatus(failure)
	if got := w.said(grant("4"), f); got != want {
		t.Errorf("said = %+v, want the refusal's words %+v", got, want)
	}
	if got := w.said(grant("4"), &rotation.Failure{Request: "r1", Reason: cdv1.GrantTypeNotAllowedReason, Time: now, Attempts: 2}); got != (failureWords{}) {
		t.Errorf("another attempt's words: %+v, want none", got)
	}
	if got := w.said(grant("6"), f); got != (failureWords{}) {
		t.Errorf("cache at the write: said = %+v, want none (the cache shows them)", got)
	}
}

// entries counts what a status-write memory holds, under any name and UID.
func entries[T comparable](w *writeMemory[T]) int {
	n := 0
	w.m.Range(func(any, any) bool { n++; return true })
	return n
}

// replaceCR deletes old and creates fresh under its name with uid, as kubectl replace
// --force and Argo CD's Replace=true do: no pass runs between the two, so none sees the
// old UID gone.
func (w *world) replaceCR(old, fresh client.Object, uid string) {
	w.t.Helper()
	w.update(old, func() { old.SetFinalizers(nil) })
	if err := w.client.Delete(context.Background(), old); err != nil {
		w.t.Fatal(err)
	}
	fresh.SetUID(types.UID(uid))
	if err := w.client.Create(context.Background(), fresh); err != nil {
		w.t.Fatal(err)
	}
}

// A CDCredential replaced under its name again and again is reconciled only under each
// new UID, never seen gone: what the status-write memory kept for an old UID goes with
// the new UID's first pass, so replacements do not add up to one entry each.
func TestAReplacedCDCredentialLeavesNoStatusWriteMemory(t *testing.T) {
	w := newWorld(t)
	refused := &tokenclient.Error{Kind: tokenclient.KindInvalidClient, Code: "invalid_client", StatusCode: 401}
	for i := range 20 {
		// A refused client leaves a failure memory to remember.
		w.tokens.failNext(refused)
		if _, err := w.reconcileCred("pricing"); err != nil {
			t.Fatalf("replacement %d: %v", i, err)
		}
		old := w.cred("pricing")
		if old.Status.LastFailure == nil {
			t.Fatalf("replacement %d: the refused client left no failure memory", i)
		}
		w.replaceCR(old, &cdv1.CDCredential{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pricing", Generation: 1}, Spec: old.Spec}, fmt.Sprintf("uid-pricing-%d", i))
		w.clock.Step(time.Minute)
	}
	// The last one is issued a token: nothing left to remember.
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	if n := entries(&w.creds.written.writeMemory); n != 0 {
		t.Errorf("after 20 replacements of a CDCredential whose client was refused, and a success, the written-failure memory holds %d entries, want 0", n)
	}
}

// The same for a grant whose refresh token was refused and that offers its customer a
// link: its failure memory and its link memory go with the new UID's first pass.
func TestAReplacedCDUserGrantLeavesNoStatusWriteMemory(t *testing.T) {
	w := newWorld(t)
	w.grants.Authorizer = &mintingAuthorizer{}
	for i := range 20 {
		w.tokens.failNext(invalidGrant)
		if _, err := w.reconcileGrant("acme"); err != nil {
			t.Fatalf("replacement %d: %v", i, err)
		}
		old := w.grant("acme")
		if old.Status.LastFailure == nil || old.Status.AuthorizationURL == "" {
			t.Fatalf("replacement %d: the refused grant shows no failure memory or no link", i)
		}
		w.replaceCR(old, grantObj("acme", "acme-refresh"), fmt.Sprintf("uid-acme-%d", i))
		// The customer logs in again for the new grant.
		w.login(fmt.Sprintf("refresh-login-%d", i))
		w.clock.Step(time.Minute)
	}
	// The last one rotates: nothing left to remember.
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if g := w.grant("acme"); g.Status.LastFailure != nil || g.Status.AuthorizationURL != "" {
		t.Fatalf("the last grant did not rotate: lastFailure %+v, authorizationURL %q", g.Status.LastFailure, g.Status.AuthorizationURL)
	}
	if n, links := entries(&w.grants.written.writeMemory), entries(&w.grants.links.writeMemory); n != 0 || links != 0 {
		t.Errorf("after 20 replacements of a CDUserGrant whose refresh token was refused, and a rotation, the written-failure memory holds %d entries and the link memory %d, want 0 and 0", n, links)
	}
}
