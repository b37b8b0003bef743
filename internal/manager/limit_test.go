package manager

import (
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

// The callback is public and a genuine link is easy to replay: beyond its rate it
// answers 429, and beyond the requests it serves at once 503, both with Retry-After,
// before a request costs an API read. The bounds are global (behind an Ingress every
// request has its address), and a second later requests get through again.
func TestTheCallbackAnswers429BeyondItsRateAnd503BeyondItsConcurrency(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC))
	var served int
	h, _, target := limited(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { served++ }), clk)
	get := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
		return rec
	}
	for i := range callbackBurst {
		if rec := get(); rec.Code != http.StatusOK {
			t.Fatalf("request %d within the burst: HTTP %d", i, rec.Code)
		}
	}
	rec := get()
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Errorf("a request beyond the burst: HTTP %d, Retry-After %q; want 429 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	if served != callbackBurst {
		t.Errorf("%d requests reached the callback, want %d", served, callbackBurst)
	}
	clk.Step(time.Second)
	if rec := get(); rec.Code != http.StatusOK {
		t.Errorf("a request a second later: HTTP %d, want 200", rec.Code)
	}

	// callbackInFlight requests held inside the callback: the next one is turned away.
	clk.Step(time.Minute)
	release, entered := make(chan struct{}), make(chan struct{})
	held, _, target := limited(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { entered <- struct{}{}; <-release }), clk)
	var wg sync.WaitGroup
	for range callbackInFlight {
		wg.Go(func() { held.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, target, nil)) })
		<-entered
	}
	rec = httptest.NewRecorder()
	held.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	close(release)
	wg.Wait()
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("a request beyond %d in flight: HTTP %d, Retry-After %q; want 503 with Retry-After", callbackInFlight, rec.Code, rec.Header().Get("Retry-After"))
	}
}

// The callback's bounds are global, so they count only requests with a genuine state,
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
