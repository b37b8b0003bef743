package onboarding

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// countStatusWrites counts the status patches of the grant.
func countStatusWrites(n *atomic.Int32) *interceptor.Funcs {
	return &interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			n.Add(1)
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	}
}

// deny serves the identity server's redirect back with an OAuth error for state.
func (o *onboarding) deny(state, description string) *httptest.ResponseRecorder {
	q := url.Values{"state": {state}, "error": {"access_denied"}, "error_description": {description}}
	rec := httptest.NewRecorder()
	o.cb.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/callback?"+q.Encode(), nil))
	return rec
}

// The callback is public, and a genuine link of a waiting grant is in its status (and in
// a customer's browser history; an expired one does as well). Replaying its redirect
// with an OAuth error used to cost a status write of the grant, an event and a wake of
// its controller per request, at the rate of plain GETs. The same refusal told again
// within seconds is no news: a failure is recorded once per grant per
// failureRecordWindow, and the customer's page still says what went wrong each time.
func TestReplayedErrorRedirectsWriteTheGrantOncePerWindow(t *testing.T) {
	now := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
	var writes atomic.Int32
	o := newOnboarding(t, now, &countingIssuer{}, countStatusWrites(&writes))
	recorder := events.NewFakeRecorder(1000)
	o.cb.Recorder = recorder
	state := o.link()
	for i := range 200 {
		if rec := o.deny(state, fmt.Sprintf("nope %d", i)); rec.Code != http.StatusForbidden {
			t.Fatalf("request %d: HTTP %d", i, rec.Code)
		}
	}
	if n := writes.Load(); n != 1 {
		t.Errorf("200 replays of one redirect made %d status writes of the grant, want 1", n)
	}
	if n := len(recorder.Events); n != 1 {
		t.Errorf("200 replays of one redirect made %d events, want 1", n)
	}
	if a := o.current(t).Status.LastAuthorization; a == nil || a.Reason != cdv1.AuthorizationDeniedReason || a.Error != "access_denied" {
		t.Errorf("lastAuthorization = %+v, want the refusal", a)
	}

	o.clock.Step(failureRecordWindow)
	o.deny(state, "nope again")
	if n := writes.Load(); n != 2 {
		t.Errorf("a refusal after the window made %d status writes in all, want 2: it is recorded again", n)
	}
}

// A flood of failed redirects cannot keep a login from being recorded, and no failure,
// however late, replaces the record of a login that came from a newer link: the
// replayed redirect of an old link right after a login used to overwrite
// status.lastAuthorization, answeredRequest included, so the grant's controller could no
// longer drop the reauthorization request the login answered.
func TestALoginIsRecordedAfterABurstOfFailuresAndNoReplayReplacesIt(t *testing.T) {
	now := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
	issuer := &countingIssuer{answer: func(string, int) (*tokenclient.Token, error) {
		return &tokenclient.Token{AccessToken: "at", TokenType: "Bearer", RefreshToken: "rt-login", Scopes: []string{"marketplace", "offline_access"}}, nil
	}}
	var writes atomic.Int32
	o := newOnboarding(t, now, issuer, countStatusWrites(&writes))
	o.cb.Recorder = events.NewFakeRecorder(1000)
	requested := now.Format(time.RFC3339)
	g := o.current(t)
	g.Annotations = map[string]string{cdv1.ReauthorizeAnnotation: requested}
	if err := o.client.Update(t.Context(), g); err != nil {
		t.Fatal(err)
	}
	old := o.link()
	for i := range 50 {
		o.deny(old, fmt.Sprintf("nope %d", i))
	}

	o.clock.Step(time.Second)
	if rec := o.login("code-A", o.link()); rec.Code != http.StatusOK {
		t.Fatalf("login after the burst: HTTP %d %s", rec.Code, rec.Body)
	}
	want := o.current(t).Status.LastAuthorization
	if want == nil || want.Reason != cdv1.CustomerAuthorizedReason || want.AnsweredRequest != requested {
		t.Fatalf("lastAuthorization = %+v, want the login answering %q", want, requested)
	}

	for _, step := range []time.Duration{0, failureRecordWindow, 20 * time.Minute} { // the old link expires after 15
		o.clock.Step(step)
		o.deny(old, "replayed")
		if got := o.current(t).Status.LastAuthorization; *got != *want {
			t.Errorf("%s after the login, a replayed redirect of an older link recorded %+v over the login %+v", step, got, want)
		}
	}
}

// A link made before states carried their issue time ("i" absent, Issued 0) may be
// newer than the last recorded login (a reauthorization link made after it, before the
// upgrade): a failure through it is recorded. Taking Issued 0 for older than any login
// used to leave the grant showing the login. Only a link that expired before the login
// was certainly made before it, and its failure does not replace the login.
func TestAFailureThroughALinkWithoutIssueTimeIsRecordedUnlessItExpiredBeforeTheLogin(t *testing.T) {
	now := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
	login := now.Add(-48 * time.Hour)
	cases := map[string]struct {
		made         time.Time
		wantRecorded bool
	}{
		"made after the login, still valid":   {made: now.Add(-time.Hour), wantRecorded: true},
		"made and expired before the login":   {made: login.Add(-3 * time.Hour), wantRecorded: false},
		"made after the login, expired since": {made: now.Add(-24 * time.Hour), wantRecorded: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			o := newOnboarding(t, now, &countingIssuer{}, nil)
			g := o.current(t)
			g.Status.LastAuthorization = &cdv1.AuthorizationResult{Time: metav1.NewTime(login), Reason: cdv1.CustomerAuthorizedReason, Message: "ok"}
			if err := o.client.Status().Update(t.Context(), g); err != nil {
				t.Fatal(err)
			}
			st := NewState("ns", "acme", "uid-acme", tc.made, 2*time.Hour)
			st.Issued = 0 // as links were before the change
			o.deny(o.signer.Sign(st), "the customer said no")
			a := o.current(t).Status.LastAuthorization
			if recorded := a.Reason != cdv1.CustomerAuthorizedReason; recorded != tc.wantRecorded {
				t.Errorf("a failure through a link without issue time, %s: recorded %v, want %v (lastAuthorization = %+v)", name, recorded, tc.wantRecorded, a)
			}
		})
	}
}

// The failure window throttles a replay of the same refusal, not the customer's next
// try: a retry 10 s later that fails differently (another reason or OAuth error) is
// recorded, where a window per grant used to drop it and leave the grant showing the
// first. Codes the callback does not know count as one, so a flood of made-up codes
// still writes the grant once per window.
func TestADifferentFailureWithinTheWindowIsRecorded(t *testing.T) {
	now := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
	var writes atomic.Int32
	o := newOnboarding(t, now, &countingIssuer{}, countStatusWrites(&writes))
	state := o.link()
	fail := func(code string) {
		q := url.Values{"state": {state}, "error": {code}, "error_description": {"no"}}
		o.cb.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/callback?"+q.Encode(), nil))
	}
	fail("access_denied")
	o.clock.Step(10 * time.Second)
	fail("invalid_scope")
	if a := o.current(t).Status.LastAuthorization; a == nil || a.Error != "invalid_scope" {
		t.Errorf("the customer's retry 10 s later failed differently, but lastAuthorization = %+v", a)
	}
	o.clock.Step(time.Second)
	fail("access_denied") // the first refusal again, within its window
	for i := range 50 {
		fail("made_up_" + strings.Repeat("x", i+1))
	}
	if n := writes.Load(); n != 3 {
		t.Errorf("two different failures, the first replayed and 50 made-up codes within the window made %d status writes, want 3", n)
	}
}

// The error code of a redirect is the redirect's to choose, and status keeps it in
// lastAuthorization.error, which holds at most 64 characters of RFC 6749's error syntax:
// a longer or malformed code must not make the status write fail (the API server refuses
// the whole patch, and the failure would go unrecorded). It is recorded without the code.
func TestARedirectsErrorCodeIsRecordedOnlyWhenItIsOne(t *testing.T) {
	for name, tc := range map[string]struct{ code, want string }{
		"a provider's own code": {"interaction_required", "interaction_required"},
		// RFC 6749's syntax allows more than the standard's codes use.
		"upper case":          {"OAUTH_APP_BLOCKED", "OAUTH_APP_BLOCKED"},
		"digits":              {"invalid_request_2fa", "invalid_request_2fa"},
		"a hyphen":            {"access-denied", "access-denied"},
		"65 characters":       {strings.Repeat("a", 65), ""},
		"a quote in it":       {`access"denied`, ""},
		"a control character": {"access\u0007denied", ""},
	} {
		t.Run(name, func(t *testing.T) {
			o := newOnboarding(t, time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC), &countingIssuer{}, nil)
			q := url.Values{"state": {o.link()}, "error": {tc.code}}
			rec := httptest.NewRecorder()
			o.cb.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/callback?"+q.Encode(), nil))
			a := o.current(t).Status.LastAuthorization
			if rec.Code != http.StatusForbidden || a == nil || a.Error != tc.want {
				t.Errorf("HTTP %d, lastAuthorization %+v: want the refusal recorded with error %q", rec.Code, a, tc.want)
			}
		})
	}
}
