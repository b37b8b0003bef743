package manager

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/credops/cd-credentials-operator/internal/onboarding"
)

// limited is the callback's handler as setupCallback wires it, around next, with a
// signer and the target of a genuine link's redirect back.
func limited(t *testing.T, next http.Handler, clk *clocktesting.FakeClock) (h http.Handler, signer *onboarding.Signer, genuine string) {
	t.Helper()
	signer, err := onboarding.SignerFromKey([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	state := signer.Sign(onboarding.NewState("ns", "acme", "uid-acme", clk.Now(), 15*time.Minute))
	return serveCallbackAt("/callback", limitCallback(next, signer, clk)), signer, "/callback?" + url.Values{"state": {state}, "code": {"c"}}.Encode()
}

// linkOf is the target of the redirect back of a fresh link of a grant in namespace ns.
func linkOf(signer *onboarding.Signer, ns string, clk *clocktesting.FakeClock) string {
	state := signer.Sign(onboarding.NewState(ns, "acme", "uid-acme", clk.Now(), 15*time.Minute))
	return "/callback?" + url.Values{"state": {state}, "code": {"c"}}.Encode()
}

// holding serves targets in handlers of next that hold them until the returned release
// is called, and returns once all of them are inside.
func holding(h http.Handler, entered <-chan struct{}, targets ...string) (release func()) {
	var wg sync.WaitGroup
	for _, target := range targets {
		wg.Go(func() { h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, target, nil)) })
		<-entered
	}
	return wg.Wait
}

// The callback is public and a genuine link is easy to replay: beyond its rate it
// answers 429, and beyond the requests it serves at once 503, both with Retry-After,
// before a request costs an API read. All namespaces' links together have an outer
// bound (what the manager's API share can spare), and a second later requests get
// through again.
func TestTheCallbackAnswers429BeyondItsRateAnd503BeyondItsConcurrency(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC))
	var served int
	h, signer, _ := limited(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { served++ }), clk)
	get := func(target string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
		return rec
	}
	for i := range callbackBurst {
		if rec := get(linkOf(signer, fmt.Sprintf("ns-%d", i), clk)); rec.Code != http.StatusOK {
			t.Fatalf("request %d within the burst: HTTP %d", i, rec.Code)
		}
	}
	rec := get(linkOf(signer, "ns-next", clk))
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Errorf("a request beyond the burst: HTTP %d, Retry-After %q; want 429 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	if served != callbackBurst {
		t.Errorf("%d requests reached the callback, want %d", served, callbackBurst)
	}
	clk.Step(time.Second)
	if rec := get(linkOf(signer, "ns-next", clk)); rec.Code != http.StatusOK {
		t.Errorf("a request a second later: HTTP %d, want 200", rec.Code)
	}

	// callbackInFlight requests of as many namespaces held inside the callback: the next
	// one is turned away.
	clk.Step(time.Minute)
	release, entered := make(chan struct{}), make(chan struct{})
	held, signer, _ := limited(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { entered <- struct{}{}; <-release }), clk)
	var targets []string
	for i := range callbackInFlight {
		targets = append(targets, linkOf(signer, fmt.Sprintf("ns-%d", i), clk))
	}
	wait := holding(held, entered, targets...)
	rec = httptest.NewRecorder()
	held.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, linkOf(signer, "ns-next", clk), nil))
	close(release)
	wait()
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("a request beyond %d in flight: HTTP %d, Retry-After %q; want 503 with Retry-After", callbackInFlight, rec.Code, rec.Header().Get("Retry-After"))
	}
}

// One namespace's flood of its own link is still bounded, on its namespace's budget: 429
// beyond namespaceBurst, 503 beyond namespaceInFlight held at once, while another
// namespace's customer gets in.
func TestOneNamespacesFloodIsBoundedByItsOwnBudget(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC))
	var served int
	h, signer, _ := limited(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { served++ }), clk)
	mine := linkOf(signer, "team-evil", clk)
	limitedAt := -1
	for i := range 3 * callbackBurst {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, mine, nil))
		if rec.Code == http.StatusTooManyRequests && limitedAt < 0 {
			limitedAt = i
			if rec.Header().Get("Retry-After") == "" {
				t.Errorf("429 without Retry-After")
			}
		}
	}
	if limitedAt != namespaceBurst || served != namespaceBurst {
		t.Errorf("one namespace's flood was first refused at request %d with %d served, want %d (its namespace's burst)", limitedAt, served, namespaceBurst)
	}

	// namespaceInFlight of its requests held inside the callback.
	clk.Step(time.Minute)
	release, entered := make(chan struct{}), make(chan struct{})
	held, signer, _ := limited(t, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("hold") != "" {
			entered <- struct{}{}
			<-release
		}
	}), clk)
	var targets []string
	for range namespaceInFlight {
		targets = append(targets, linkOf(signer, "team-evil", clk)+"&hold=1")
	}
	wait := holding(held, entered, targets...)
	get := func(target string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		held.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
		return rec
	}
	rec := get(linkOf(signer, "team-evil", clk))
	victim := get(linkOf(signer, "team-victim", clk))
	close(release)
	wait()
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("the namespace's request beyond %d of its own in flight: HTTP %d, Retry-After %q; want 503 with Retry-After", namespaceInFlight, rec.Code, rec.Header().Get("Retry-After"))
	}
	if victim.Code != http.StatusOK {
		t.Errorf("another namespace's login while one holds %d in flight: HTTP %d, want 200", namespaceInFlight, victim.Code)
	}
}

// Only a state the operator signed makes a namespace's budget, and a budget quiet for
// namespaceIdle is dropped once maxNamespaces are kept: the callback's memory is bounded.
func TestTheCallbackKeepsTheBudgetsOfBoundedlyManyNamespaces(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC))
	signer, err := onboarding.SignerFromKey([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	l := limitCallback(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), signer, clk)
	get := func(target string) {
		l.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, target, nil))
	}
	forged := signer.Sign(onboarding.NewState("forged", "acme", "uid-acme", clk.Now(), 15*time.Minute))
	get("/callback?state=" + forged[:len(forged)-2] + "AA")
	if n := len(l.namespaces.entries); n != 0 {
		t.Errorf("a forged state made %d budgets, want none", n)
	}
	for i := range maxNamespaces + 10 {
		get(linkOf(signer, fmt.Sprintf("ns-%d", i), clk))
	}
	if n := len(l.namespaces.entries); n > maxNamespaces {
		t.Errorf("%d budgets kept, want at most %d", n, maxNamespaces)
	}
	clk.Step(namespaceIdle)
	get(linkOf(signer, "ns-late", clk))
	if n := len(l.namespaces.entries); n != 1 {
		t.Errorf("%d budgets kept after all but one fell quiet, want 1", n)
	}
}

// The callback's bounds know no client, so they count only requests with a genuine state,
// the ones that cost API reads. Requests anyone can send without a link (a browser's
// /favicon.ico, a made-up or altered state, no state) cost an HMAC check at most; when
// they were counted, 30 of them and then 10 a second turned every customer's genuine
// login away with 429. Nor do they take a place among the requests served at once.
func TestRequestsThatAreNoLoginDoNotTurnAGenuineLoginAway(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC))
	var (
		served  int
		signer  *onboarding.Signer
		release = make(chan struct{})
		entered = make(chan struct{})
	)
	h, signer, genuine := limited(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !signer.Genuine(r.URL.Query().Get("state")) {
			if r.URL.Query().Get("hold") != "" {
				entered <- struct{}{}
				<-release
			}
			http.Error(w, "forged", http.StatusBadRequest)
			return
		}
		served++
	}), clk)
	forged := signer.Sign(onboarding.NewState("ns", "acme", "uid-acme", clk.Now(), 15*time.Minute))
	forged = forged[:len(forged)-2] + "AA"
	for _, target := range []string{"/favicon.ico", "/callback", "/callback?state=forged", "/callback?state=" + forged} {
		for range 2 * callbackBurst {
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, target, nil))
		}
	}
	var wg sync.WaitGroup
	for range callbackInFlight {
		wg.Go(func() {
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/callback?hold=1&state=forged", nil))
		})
		<-entered
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, genuine, nil))
	close(release)
	wg.Wait()
	if rec.Code != http.StatusOK || served != 1 {
		t.Errorf("a genuine login after %d requests that were no login, with %d more held: HTTP %d (served %d)", 8*callbackBurst, callbackInFlight, rec.Code, served)
	}
}

// One link that expired long ago (an old onboarding e-mail, a browser's history) is
// anyone's to replay: its state is genuine, but a flood of it must not turn another
// customer's fresh login away. Expired states are bounded on a budget of their own.
func TestAnExpiredLinkDoesNotTurnAFreshLoginAway(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC))
	h, signer, _ := limited(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), clk)
	old := signer.Sign(onboarding.NewState("ns", "old", "uid-old", clk.Now().Add(-365*24*time.Hour), 15*time.Minute))
	limitedAt := -1
	for i := range 2 * callbackBurst {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/callback?"+url.Values{"state": {old}, "error": {"access_denied"}}.Encode(), nil))
		if rec.Code == http.StatusTooManyRequests && limitedAt < 0 {
			limitedAt = i
		}
	}
	if limitedAt != expiredBurst {
		t.Errorf("the flood of one expired link was first refused at request %d, want %d (its own burst)", limitedAt, expiredBurst)
	}
	fresh := signer.Sign(onboarding.NewState("ns", "beta", "uid-beta", clk.Now(), 15*time.Minute))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/callback?"+url.Values{"state": {fresh}, "code": {"c"}}.Encode(), nil))
	if rec.Code != http.StatusOK {
		t.Errorf("a fresh login of another customer after a flood of one year-old link: HTTP %d, want 200", rec.Code)
	}
}

// A namespace user holds a genuine, unexpired link of a grant of their own
// (status.authorizationURL), and a customer's used link stays unexpired in a browser's
// history for up to 15 minutes. Replaying one such link must not turn another
// namespace's customer's login away: each namespace's links draw on a budget of their own.
func TestOneNamespacesLinkDoesNotTurnAnotherNamespacesLoginAway(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC))
	h, signer, _ := limited(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), clk)
	mine := signer.Sign(onboarding.NewState("team-evil", "mine", "uid-mine", clk.Now().Add(-time.Minute), 15*time.Minute))
	for range 3 * callbackBurst {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/callback?"+url.Values{"state": {mine}}.Encode(), nil))
	}
	victim := signer.Sign(onboarding.NewState("team-victim", "acme", "uid-acme", clk.Now(), 15*time.Minute))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/callback?"+url.Values{"state": {victim}, "code": {"c"}}.Encode(), nil))
	if rec.Code != http.StatusOK {
		t.Errorf("another namespace's customer's fresh login after a flood of one namespace's link: HTTP %d, want 200", rec.Code)
	}
}
