package controllers

import (
	"strings"
	"testing"
	"time"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// An outage whose answers alternate between a 502 (a gateway with no backend) and a 503
// with Retry-After (the backends shedding load) records one Warning Event when it begins,
// not one per retry: Ready's reason flips between TokenRequestFailed and RateLimited on
// every retry, and at 10,000 grants an Event per flip is an Event write to the API server
// per token request. The note says no attempt or retry time, which would stand unchanged
// on a series the events library folds repeats into.
func TestAnOutageRecordsOneEventNotOnePerRetry(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	w.recorded()
	w.clock.SetTime(w.grant("acme").Status.RenewalTime.Time)
	const retries = 8
	for i := range retries {
		if i%2 == 0 {
			w.tokens.failNext(badGateway)
		} else {
			w.tokens.failNext(&tokenclient.Error{Kind: tokenclient.KindRateLimited, StatusCode: 503, RetryAfter: 5 * time.Second})
		}
		res, err := w.reconcileGrant("acme")
		if err != nil {
			t.Fatal(err)
		}
		w.clock.Step(res.RequeueAfter)
	}
	ev := w.recorded()
	if len(ev) != 1 || !strings.HasPrefix(ev[0], "Warning "+cdv1.TokenRequestFailedReason+" ") {
		t.Fatalf("%d events for %d failed retries of one outage, want one TokenRequestFailed warning:\n%s", len(ev), retries, strings.Join(ev, "\n"))
	}
	if strings.Contains(ev[0], "attempt") || strings.Contains(ev[0], "next at") {
		t.Errorf("the event's note says the attempt or the retry time: %s", ev[0])
	}
	if _, err := w.reconcileGrant("acme"); err != nil { // the identity server is back
		t.Fatal(err)
	}
	if ev := w.recorded(); len(ev) != 1 || !strings.HasPrefix(ev[0], "Normal "+cdv1.TokenIssuedReason+" ") {
		t.Errorf("events after the outage %q, want one TokenIssued", ev)
	}
}

// A server error the identity server answered with spent nothing, as rotation.Judge
// takes it (the mark goes back, the token is sent again): its report does not say the
// server may have processed the request. An attempt with no answer at all still does.
func TestAnAnsweredServerErrorIsNotSaidToHaveBeenProcessed(t *testing.T) {
	cases := map[string]struct {
		err       error
		processed bool
	}{
		"a 502 from a gateway":         {err: badGateway},
		"no answer within the timeout": {err: lostAnswer, processed: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			for _, grant := range []bool{true, false} {
				_, msg := refusalOf(answered{outcome: rotation.Judge(nil, tc.err, false)}, grant)
				if says := strings.Contains(msg, "may have processed"); says != tc.processed {
					t.Errorf("grant=%v: %q says the server may have processed the request: %v, want %v", grant, msg, says, tc.processed)
				}
			}
		})
	}
}
