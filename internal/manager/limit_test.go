package manager

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// The callback is public and a genuine link is easy to replay: beyond its rate it
// answers 429, and beyond the requests it serves at once 503, both with Retry-After,
// before a request costs an API read. The bounds are global (behind an Ingress every
// request has its address), and a second later requests get through again.
func TestTheCallbackAnswers429BeyondItsRateAnd503BeyondItsConcurrency(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC))
	var served int
	h := limitCallback(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { served++ }), clk)
	get := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/callback?state=x", nil))
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
	held := limitCallback(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { entered <- struct{}{}; <-release }), clk)
	var wg sync.WaitGroup
	for range callbackInFlight {
		wg.Go(func() { held.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/callback", nil)) })
		<-entered
	}
	rec = httptest.NewRecorder()
	held.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/callback", nil))
	close(release)
	wg.Wait()
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("a request beyond %d in flight: HTTP %d, Retry-After %q; want 503 with Retry-After", callbackInFlight, rec.Code, rec.Header().Get("Retry-After"))
	}
}
