package kubectlcd

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

func cond(typ string, status metav1.ConditionStatus, reason string, ltt time.Duration) *metav1.Condition {
	return &metav1.Condition{Type: typ, Status: status, Reason: reason, Message: reason + " message", LastTransitionTime: *at(ltt)}
}

// States a grant goes through, as the operator writes them.
var (
	awaitingLogin = grantState{
		ready:  cond("Ready", "False", "AwaitingAuthorization", -time.Hour),
		reauth: cond("ReauthorizationRequired", "True", "RefreshTokenMissing", -time.Hour),
		url:    "https://idp/authorize?state=S1",
	}
	awaitingNoLink = grantState{
		ready:  cond("Ready", "False", "AwaitingAuthorization", -time.Hour),
		reauth: cond("ReauthorizationRequired", "True", "RefreshTokenMissing", -time.Hour),
	}
	// The manager runs without its callback server: no link will ever come.
	awaitingNoCallback = grantState{
		ready:  &metav1.Condition{Type: "Ready", Status: "False", Reason: "AwaitingAuthorization", Message: "No refresh token in Secret acme-refresh, and " + cdv1.NoLoginLinkMessage + " (its callback server is off): put a refresh token …, or enable the callback …", LastTransitionTime: *at(-time.Hour)},
		reauth: cond("ReauthorizationRequired", "True", "RefreshTokenMissing", -time.Hour),
	}
	// A reauthorization asked of a manager without its callback server.
	reauthNoCallback = grantState{
		ready:       cond("Ready", "True", "TokenIssued", -time.Hour),
		reauth:      &metav1.Condition{Type: "ReauthorizationRequired", Status: "True", Reason: "ReauthorizationRequested", Message: "A new customer login was asked for (cd.credops.io/reauthorize), but " + cdv1.NoLoginLinkMessage + " (its callback server is off): enable the callback …", LastTransitionTime: *at(0)},
		reauthorize: "2026-11-30T22:30:00Z",
	}
	rejectedAwaiting = grantState{
		ready:   cond("Ready", "False", "RefreshTokenRejected", -time.Hour),
		reauth:  cond("ReauthorizationRequired", "True", "RefreshTokenRejected", -time.Hour),
		stalled: cond("Stalled", "True", "RefreshTokenRejected", -time.Hour),
		url:     "https://idp/authorize?state=S1",
	}
	tokenStored = grantState{
		ready:  cond("Ready", "False", "AwaitingAuthorization", -time.Hour),
		reauth: cond("ReauthorizationRequired", "False", "RefreshTokenValid", 0),
	}
	readyNow = grantState{
		ready:  cond("Ready", "True", "TokenIssued", 0),
		reauth: cond("ReauthorizationRequired", "False", "RefreshTokenValid", 0),
	}
	deniedNow = grantState{
		ready:  cond("Ready", "False", "AuthorizationDenied", -time.Hour),
		reauth: cond("ReauthorizationRequired", "True", "RefreshTokenMissing", -time.Hour),
		url:    "https://idp/authorize?state=S1",
	}
	rejectedAfterLogin = grantState{
		ready:   cond("Ready", "False", "RefreshTokenRejected", time.Second),
		reauth:  cond("ReauthorizationRequired", "True", "RefreshTokenRejected", time.Second),
		stalled: cond("Stalled", "True", "RefreshTokenRejected", time.Second),
	}
	conflictNow = grantState{
		ready:   cond("Ready", "False", "RefreshTokenSecretConflict", 0),
		reauth:  cond("ReauthorizationRequired", "False", "RefreshTokenNotChecked", 0),
		stalled: cond("Stalled", "True", "RefreshTokenSecretConflict", 0),
	}
	// Reauthorization: the grant stays Ready while the annotation is set.
	readyRequested            = with(readyNow, func(s *grantState) { s.reauthorize = "2026-11-23T19:00:00Z" })
	readyRequestedWithLink    = with(readyRequested, func(s *grantState) { s.url = "https://idp/authorize?state=S2" })
	oldTokenRejectedMeanwhile = with(rejectedAfterLogin, func(s *grantState) {
		s.reauthorize = "2026-11-23T19:00:00Z"
		s.url = "https://idp/authorize?state=S2"
	})
	readyAgainAfterNewLogin = with(readyNow, func(s *grantState) { s.ready.LastTransitionTime = *at(time.Minute) })
	// A declined reauthorization changes only status.lastAuthorization: the grant stays
	// Ready on its old token and the request stands.
	readyRequestedDeclined = with(readyRequestedWithLink, func(s *grantState) { s.lastAuth = login(cdv1.AuthorizationDeniedReason, time.Minute) })
	readyRequestedLoggedIn = with(readyRequestedWithLink, func(s *grantState) { s.lastAuth = login(cdv1.CustomerAuthorizedReason, time.Minute) })
	// A second identical denial rewrites the same Ready condition (same lastTransitionTime
	// and message); only status.lastAuthorization.time moves.
	deniedBefore = with(deniedNow, func(s *grantState) { s.lastAuth = login(cdv1.AuthorizationDeniedReason, -time.Hour) })
	deniedAgain  = with(deniedNow, func(s *grantState) { s.lastAuth = login(cdv1.AuthorizationDeniedReason, 5*time.Minute) })
)

func login(reason string, when time.Duration) *cdv1.AuthorizationResult {
	return &cdv1.AuthorizationResult{Time: *at(when), Reason: reason, Message: reason + " login"}
}

func with(s grantState, change func(*grantState)) grantState {
	c := s
	for _, p := range []**metav1.Condition{&c.ready, &c.reauth, &c.stalled} {
		if *p != nil {
			copied := **p
			*p = &copied
		}
	}
	change(&c)
	return c
}

func TestTrackerDecides(t *testing.T) {
	cases := map[string]struct {
		mode    waitMode
		initial grantState
		states  []grantState
		want    outcome
		wantWhy string
	}{
		"authorize: the customer logs in and the token is issued": {
			mode: authorizeMode, initial: awaitingLogin, states: []grantState{awaitingLogin, tokenStored, readyNow},
			want: succeeded, wantWhy: "TokenIssued",
		},
		"authorize: waits while the link is not yet published": {
			mode: authorizeMode, initial: awaitingNoLink, states: []grantState{awaitingNoLink},
			want: waiting, wantWhy: "publish an authorization link",
		},
		"authorize: a manager without a callback offers no link: said at once, not after the timeout": {
			mode: authorizeMode, initial: awaitingNoCallback, states: []grantState{awaitingNoCallback},
			want: failed, wantWhy: "AwaitingAuthorization: No refresh token in Secret acme-refresh, and this manager offers no login link",
		},
		"reauthorize: a manager without a callback offers no link: said at once, not after the timeout": {
			mode: reauthorizeMode, initial: readyNow, states: []grantState{reauthNoCallback},
			want: failed, wantWhy: "ReauthorizationRequested: A new customer login was asked for (cd.credops.io/reauthorize), but this manager offers no login link",
		},
		"authorize: waits for the customer while the link is there": {
			mode: authorizeMode, initial: awaitingLogin, states: []grantState{awaitingLogin},
			want: waiting, wantWhy: "waiting for the customer to log in (Ready: False AwaitingAuthorization)",
		},
		"authorize: a stored token is reported while the first token is minted": {
			mode: authorizeMode, initial: awaitingLogin, states: []grantState{tokenStored},
			want: waiting, wantWhy: "the customer logged in",
		},
		"authorize: the customer refuses": {
			mode: authorizeMode, initial: awaitingLogin, states: []grantState{deniedNow},
			want: failed, wantWhy: "AuthorizationDenied: AuthorizationDenied message",
		},
		"authorize: a denial already there when the wait began is not news": {
			mode: authorizeMode, initial: deniedNow, states: []grantState{deniedNow},
			want: waiting, wantWhy: "waiting for the customer to log in",
		},
		"authorize: a dead grant being re-authorized waits despite its Stalled rejection": {
			mode: authorizeMode, initial: rejectedAwaiting, states: []grantState{rejectedAwaiting},
			want: waiting, wantWhy: "waiting for the customer to log in (Ready: False RefreshTokenRejected)",
		},
		"authorize: the new token is rejected after the login": {
			mode: authorizeMode, initial: rejectedAwaiting, states: []grantState{tokenStored, rejectedAfterLogin},
			want: failed, wantWhy: "the customer must log in again: RefreshTokenRejected",
		},
		"authorize: the refresh-token Secret belongs to another grant": {
			mode: authorizeMode, initial: awaitingLogin, states: []grantState{conflictNow},
			want: failed, wantWhy: "RefreshTokenSecretConflict: RefreshTokenSecretConflict message",
		},
		"authorize: the grant is deleted": {
			mode: authorizeMode, initial: awaitingLogin, states: []grantState{{deleted: true}},
			want: failed, wantWhy: "deleted",
		},
		"reauthorize: a Ready grant is not done while the annotation is there": {
			mode: reauthorizeMode, initial: readyRequested, states: []grantState{readyRequested, readyRequestedWithLink},
			want: waiting, wantWhy: "waiting for the customer to log in (Ready: True TokenIssued)",
		},
		"reauthorize: done when the operator removes the annotation": {
			mode: reauthorizeMode, initial: readyRequested, states: []grantState{readyRequestedWithLink, readyAgainAfterNewLogin},
			want: succeeded, wantWhy: "TokenIssued",
		},
		"reauthorize: the old token rejected meanwhile does not end the wait, the link still works": {
			mode: reauthorizeMode, initial: readyRequested, states: []grantState{readyRequestedWithLink, oldTokenRejectedMeanwhile},
			want: waiting, wantWhy: "waiting for the customer to log in",
		},
		"reauthorize: the customer declines the new login while the grant stays Ready": {
			mode: reauthorizeMode, initial: readyRequested, states: []grantState{readyRequestedWithLink, readyRequestedDeclined},
			want: failed, wantWhy: "AuthorizationDenied: AuthorizationDenied login",
		},
		"reauthorize: a successful login is not a failure": {
			mode: reauthorizeMode, initial: readyRequested, states: []grantState{readyRequestedWithLink, readyRequestedLoggedIn},
			want: waiting, wantWhy: "waiting for the customer to log in",
		},
		"authorize: the customer declines a second time and only lastAuthorization moves": {
			mode: authorizeMode, initial: deniedBefore, states: []grantState{deniedBefore, deniedAgain},
			want: failed, wantWhy: "AuthorizationDenied: AuthorizationDenied login",
		},
		"authorize: a failed login from before the wait is not news": {
			mode: authorizeMode, initial: deniedBefore, states: []grantState{deniedBefore},
			want: waiting, wantWhy: "waiting for the customer to log in",
		},
		"reauthorize: the new token rejected after the login fails": {
			mode: reauthorizeMode, initial: readyRequested, states: []grantState{readyRequestedWithLink, rejectedAfterLogin},
			want: failed, wantWhy: "the customer must log in again: RefreshTokenRejected",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			tr := newTracker(tc.mode, tc.initial)
			var v verdict
			for i, s := range tc.states {
				v = tr.observe(s)
				if v.outcome != waiting && i < len(tc.states)-1 {
					t.Fatalf("state %d already decided %v: %s", i, v.outcome, v.why)
				}
			}
			if v.outcome != tc.want || !strings.Contains(v.why, tc.wantWhy) {
				t.Errorf("verdict %v %q, want %v containing %q", v.outcome, v.why, tc.want, tc.wantWhy)
			}
		})
	}
}

// The wait reads the grant as the operator writes it: during a reauthorization a
// declined login changes only status.lastAuthorization (Ready stays True on the old
// token), and `kubectl cd reauthorize` must end there rather than wait out --timeout.
func TestAReauthorizeWaitEndsWhenTheCustomerDeclines(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 11, 30, 18, 32, 6, 0, time.UTC))
	g := &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Name: "acme", Namespace: "ns", Annotations: map[string]string{cdv1.ReauthorizeAnnotation: "2026-11-30T18:32:06Z"}}}
	g.Status.AuthorizationURL = "https://idp/connect/authorize?state=S2"
	g.Status.Conditions = []metav1.Condition{
		{Type: cdv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: cdv1.TokenIssuedReason, Message: "Access token is in Secret acme-token", LastTransitionTime: t0},
		{Type: cdv1.ReauthorizationRequiredCondition, Status: metav1.ConditionTrue, Reason: cdv1.ReauthorizationRequestedReason, Message: "A new customer login was asked for", LastTransitionTime: t0},
	}
	initial := stateOf(asUnstructured(t, g.DeepCopy()))
	g.Status.LastAuthorization = &cdv1.AuthorizationResult{Time: metav1.NewTime(t0.Add(time.Minute)), Reason: cdv1.AuthorizationDeniedReason, Error: "access_denied", Message: "The identity server answered access_denied. The customer declined."}
	tr := newTracker(reauthorizeMode, initial)
	tr.observe(initial)
	if v := tr.observe(stateOf(asUnstructured(t, g))); v.outcome != failed || !strings.Contains(v.why, "AuthorizationDenied") {
		t.Errorf("after the customer declined, the wait says %v %q; want it to fail saying AuthorizationDenied", v.outcome, v.why)
	}
}

func asUnstructured(t *testing.T, g *cdv1.CDUserGrant) *unstructured.Unstructured {
	t.Helper()
	g.APIVersion, g.Kind = cdv1.GroupVersion.String(), grantKind
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(g)
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: obj}
}
