package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

// gitOpsWriteBack sets acme's refresh-token Secret back to token the way a GitOps
// re-sync does (its data alone; the operator's annotations stay), and hands the update
// to the grant controller's Secret watch as the informer would: the object before and
// after. It returns the Secret as written.
func (w *world) gitOpsWriteBack(token string) *corev1.Secret {
	w.t.Helper()
	old := w.secret("acme-refresh")
	w.login(token)
	cur := w.secret("acme-refresh")
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	w.grants.refreshSecretEvents(w.client).Update(context.Background(), event.UpdateEvent{ObjectOld: old, ObjectNew: cur}, q)
	return cur
}

// passPutsLiveTokenBack runs acme's pass (named pass) after its refresh-token Secret was
// written back to refresh-0, and checks that it put the live successor refresh-1 back
// with the grant's refresh token still valid. It returns the grant.
func (w *world) passPutsLiveTokenBack(pass string) *cdv1.CDUserGrant {
	w.t.Helper()
	if _, err := w.reconcileGrant("acme"); err != nil {
		w.t.Fatalf("%s: %v", pass, err)
	}
	if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "refresh-1" {
		w.t.Errorf("after %s the refresh-token Secret holds %q, want the live successor refresh-1 put back", pass, got)
	}
	g := w.grant("acme")
	wantCondition(w.t, g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenValidReason)
	return g
}

// TestASpentRefreshTokenWrittenBackIsReplacedByTheLiveOne: a GitOps tool (Flux drift
// correction with force, an ExternalSecret's refresh) sets the customer's refresh-token
// Secret back to the seed the operator spent in its first rotation. The Secret held the
// live successor just before, as the operator wrote it: the operator puts it back, says
// so once (a Warning naming the cause and the cure, no token), and goes on as if nothing
// happened: no reauthorization, and the next rotation sends the successor.
func TestASpentRefreshTokenWrittenBackIsReplacedByTheLiveOne(t *testing.T) {
	w := newWorld(t)
	res, err := w.reconcileGrant("acme") // spends refresh-0, stores refresh-1
	if err != nil {
		t.Fatal(err)
	}
	w.recorded()
	w.clock.Step(time.Minute)
	w.gitOpsWriteBack("refresh-0")

	g := w.passPutsLiveTokenBack("the pass after the write-back")
	wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	restored := warningsWithReason(t, w, cdv1.RefreshTokenRestoredReason, "refresh-0", "refresh-1")
	if len(restored) != 1 {
		t.Fatalf("%s events %q, want one", cdv1.RefreshTokenRestoredReason, restored)
	}
	for _, want := range []string{"acme-refresh", "already spent", "GitOps", "put back", "create", "never re-sync"} {
		if !strings.Contains(restored[0], want) {
			t.Errorf("event %q does not say %q", restored[0], want)
		}
	}
	s := w.secret("acme-refresh")
	if diff := cmp.Diff([]string{rotation.Hash("refresh-0")}, spentList(w)); diff != "" {
		t.Errorf("spent hashes after the put-back (-want +got):\n%s", diff)
	}
	if s.Annotations[cdv1.BoundToAnnotation] != "acme/uid-acme" || s.Labels[cdv1.SecretTypeLabel] != cdv1.SecretTypeRefreshToken {
		t.Errorf("binding or opt-in changed by the put-back: %v %v", s.Annotations, s.Labels)
	}

	w.clock.Step(res.RequeueAfter)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"refresh-0", "refresh-1"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("refresh tokens sent (-want +got):\n%s", diff)
	}
	if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "refresh-2" {
		t.Errorf("after the next rotation the Secret holds %q, want refresh-2", got)
	}
}

// TestASpentRefreshTokenWrittenBackBeforeARestartStillStops: what a Secret held before a
// write-back is only remembered by the process that saw the update. A restart forgets
// it, and the spent token is then refused as before (RefreshTokenSpent), never sent.
func TestASpentRefreshTokenWrittenBackBeforeARestartStillStops(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	w.gitOpsWriteBack("refresh-0")
	w.grants = &CDUserGrantReconciler{Client: w.client, APIReader: w.client, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Holder: "me"}

	_, _ = w.reconcileGrant("acme")
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenSpentReason)
	if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "refresh-0" {
		t.Errorf("refresh-token Secret holds %q, want it left as written back", got)
	}
	if diff := cmp.Diff([]string{"refresh-0"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("refresh tokens sent (-want +got):\n%s", diff)
	}
}

// TestAHandEditedSpentRefreshTokenIsNotPutRight: the operator puts back only what it
// wrote itself. A Secret someone else had written (a token put in by hand) and that is
// then set to a spent token holds nothing the operator knows to be live: it stops.
func TestAHandEditedSpentRefreshTokenIsNotPutRight(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	w.login("by-hand")
	w.gitOpsWriteBack("refresh-0")

	_, _ = w.reconcileGrant("acme")
	wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenSpentReason)
	if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "refresh-0" {
		t.Errorf("refresh-token Secret holds %q, want it left as written back", got)
	}
}

// TestAPutBackThatConflictsDecidesAgain: the cache still shows the written-back seed, but
// the customer has logged in since. The put-back's guarded write conflicts; the Secret is
// read again and holds a new login, which wins: it is what the next renewal sends, and
// the successor is not written over it.
func TestAPutBackThatConflictsDecidesAgain(t *testing.T) {
	w := newWorld(t)
	res, err := w.reconcileGrant("acme")
	if err != nil {
		t.Fatal(err)
	}
	stale := w.gitOpsWriteBack("refresh-0")
	w.login("new-login")
	w.grants.Client = laggingCache{Client: w.client, snapshot: stale}

	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatalf("the pass after the conflict: %v", err)
	}
	w.grants.Client = w.client
	if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "new-login" {
		t.Errorf("refresh-token Secret holds %q, want the new login", got)
	}
	w.clock.Step(res.RequeueAfter)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"refresh-0", "new-login"}, w.tokens.refreshes()); diff != "" {
		t.Errorf("refresh tokens sent (-want +got):\n%s", diff)
	}
}

// TestWriteBacksAreRememberedBrieflyAndBoundedInNumber: a live token seen replaced is
// held in memory (DESIGN §9 budgets it), so no more than successorsKept Secrets' worth at
// once, and none past successorTTL: the oldest go first.
func TestWriteBacksAreRememberedBrieflyAndBoundedInNumber(t *testing.T) {
	var s successors
	writeBack := func(name string, now time.Time) *corev1.Secret {
		old, cur := writeBackEvent("ns", name)
		s.note(old, cur, now)
		return cur
	}
	first := writeBack("s-0", epoch)
	for i := 1; i <= successorsKept; i++ {
		writeBack(fmt.Sprintf("s-%d", i), epoch.Add(time.Duration(i)*time.Millisecond))
	}
	if n := len(s.m); n != successorsKept {
		t.Errorf("%d remembered, want at most %d", n, successorsKept)
	}
	if _, ok := s.live(first, "refresh_token", rotation.Hash("seed"), epoch.Add(time.Minute)); ok {
		t.Error("the oldest is still remembered beyond the bound")
	}
	last := writeBack("s-last", epoch.Add(2*time.Minute))
	if tok, ok := s.live(last, "refresh_token", rotation.Hash("seed"), epoch.Add(2*time.Minute+successorTTL)); !ok || tok != "live" {
		t.Errorf("live() = %q, %v within the TTL, want the live token", tok, ok)
	}
	if _, ok := s.live(last, "refresh_token", rotation.Hash("seed"), epoch.Add(2*time.Minute+successorTTL+time.Second)); ok {
		t.Error("remembered past the TTL")
	}
	if len(s.m) != 0 {
		t.Errorf("%d still remembered after the TTL, want none", len(s.m))
	}
}

// writeBackEvent is the update event of a GitOps write-back of Secret ns/name: the old
// object as the operator stored "live" over the spent "seed", the new one set back to
// "seed". Anyone who can write the Secret can make such an event without the operator
// (its annotations are plain hashes of what the Secret holds), so it is a forged
// write-back as much as a real one.
func writeBackEvent(ns, name string) (old, cur *corev1.Secret) {
	old = optedIn(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "-" + name)}}, cdv1.SecretTypeRefreshToken)
	secrets.StoreSuccessor(old, "refresh_token", "seed", "live")
	cur = old.DeepCopy()
	cur.Data["refresh_token"] = []byte("seed")
	return old, cur
}

// TestATenantForgingWriteBacksCannotEvictAnotherNamespacesLiveToken: the attacker is a
// tenant who can write Secrets in its own namespace only. Right after a GitOps tool set
// the victim's refresh-token Secret back to a spent token, it forges write-backs of its
// own Secrets, twice as many as the operator remembers. The victim's live token must
// still be put back: with the bound shared by age alone, the flood evicted it, the
// spent token was refused, and the customer had to log in again.
func TestATenantForgingWriteBacksCannotEvictAnotherNamespacesLiveToken(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileGrant("acme"); err != nil { // spends refresh-0, stores refresh-1
		t.Fatal(err)
	}
	w.clock.Step(time.Minute)
	w.gitOpsWriteBack("refresh-0")

	watch := w.grants.refreshSecretEvents(w.client)
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	for i := range 2 * successorsKept {
		w.clock.Step(time.Millisecond)
		old, cur := writeBackEvent("tenant", fmt.Sprintf("junk-%d", i))
		watch.Update(context.Background(), event.UpdateEvent{ObjectOld: old, ObjectNew: cur}, q)
	}

	w.passPutsLiveTokenBack("the victim's pass after the flood")
	if n := len(w.grants.successors.m); n > successorsKept {
		t.Errorf("%d write-backs remembered, want at most %d", n, successorsKept)
	}
}

// TestAWriteBackOfAWholeNamespaceIsRememberedForEverySecret: a GitOps tool re-syncing a
// namespace sets all its refresh-token Secrets back at once, and the watch notes every
// update before most of their grants' passes run. Each live token must still be there
// for its pass to put back; a bound of 64 forgot all but the last 64, and those
// customers had to log in again.
func TestAWriteBackOfAWholeNamespaceIsRememberedForEverySecret(t *testing.T) {
	var s successors
	const secretsWrittenBack = 500
	var written []*corev1.Secret
	for i := range secretsWrittenBack {
		old, cur := writeBackEvent("ns", fmt.Sprintf("s-%d", i))
		s.note(old, cur, epoch.Add(time.Duration(i)*time.Millisecond))
		written = append(written, cur)
	}
	lost := 0
	for _, cur := range written {
		if tok, ok := s.live(cur, "refresh_token", rotation.Hash("seed"), epoch.Add(time.Minute)); !ok || tok != "live" {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d live tokens written back at once were forgotten before their pass", lost, secretsWrittenBack)
	}
}

// TestATokenTooLongToSendIsNotRemembered: what a write-back replaced is remembered only
// if the operator could have sent it (at most secrets.MaxValue bytes); anything longer
// is a forged write-back's way to take memory.
func TestATokenTooLongToSendIsNotRemembered(t *testing.T) {
	var s successors
	old, cur := writeBackEvent("ns", "s")
	long := strings.Repeat("x", secrets.MaxValue+1)
	secrets.StoreSuccessor(old, "refresh_token", "seed", long)
	s.note(old, cur, epoch)
	if len(s.m) != 0 {
		t.Errorf("a %d-byte token was remembered", len(long))
	}
	old, cur = writeBackEvent("ns", "s")
	s.note(old, cur, epoch)
	if _, ok := s.live(cur, "refresh_token", rotation.Hash("seed"), epoch); !ok {
		t.Error("a token of a sendable length was not remembered")
	}
}
