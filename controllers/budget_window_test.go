package controllers

import (
	"fmt"
	"testing"
	"time"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// DESIGN §8, a namespace user "cannot make it send more than 3 token requests per
// lifetime for any CR". A scope the client may never have is rechecked for ever (the
// identity server may grant it): a third of the lifetime apart, never more often.
func TestARefusalRecheckedForEverStaysWithinTheRequestBudget(t *testing.T) {
	w := newWorld(t)
	c := w.cred("pricing")
	w.update(c, func() { c.Spec.Scopes = []string{"marketplace", "pricing:write"}; c.Generation++ })
	for range 20 {
		w.tokens.failNext(&tokenclient.Error{Kind: tokenclient.KindInvalidScope, Code: "invalid_scope", StatusCode: 400, Scopes: []string{"pricing:write"}})
	}
	start := w.clock.Now()
	var sentAt []string
	for w.clock.Now().Before(start.Add(30 * time.Minute)) {
		before := w.tokens.ccCount()
		res, _ := w.reconcileCred("pricing")
		if w.tokens.ccCount() > before {
			sentAt = append(sentAt, w.clock.Now().Sub(start).String())
		}
		step := res.RequeueAfter
		if step <= 0 || step > time.Minute {
			step = time.Minute
		}
		w.clock.Step(step)
	}
	if n := len(sentAt); n > 3 {
		t.Errorf("%d token requests within one 30-minute window (no lifetime known) for a scope that stays refused, at %v; want at most 3 (DESIGN §8). Ready: %+v",
			n, sentAt, condition(t, w.cred("pricing").Status.Conditions, cdv1.ReadyCondition))
	}
}

// tooSoonAfterFailure caps the budget's wait at the expiry of the token in
// the output Secret ("never past the token pods still have"). Once that token is within
// MinRenewMargin of its expiry, or expired, and the requests since keep failing (so no
// token lands and Last never moves on), the cap is in the past: every edit of the spec
// goes out at once, however many there are. A CR-only user flips spec.scopes between two
// values the identity server refuses.
func TestEditsAfterTheStoredTokenExpiredStayWithinTheRequestBudget(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileCred("pricing"); err != nil { // token at 10:00, expires 10:30
		t.Fatal(err)
	}
	expires := w.cred("pricing").Status.ExpiresAt.Time
	refuse := func() {
		w.tokens.failNext(&tokenclient.Error{Kind: tokenclient.KindRefused, Code: "invalid_request", StatusCode: 400})
	}
	w.clock.SetTime(expires.Add(time.Minute)) // 10:31, the token in pricing-token has expired
	start, sent := w.clock.Now(), w.tokens.ccCount()
	for i := 0; w.clock.Now().Before(start.Add(10 * time.Minute)); i++ {
		c := w.cred("pricing")
		w.update(c, func() { c.Spec.Scopes = []string{fmt.Sprintf("s%d", i%2)}; c.Generation++ })
		refuse()
		_, _ = w.reconcileCred("pricing")
		w.clock.Step(20 * time.Second)
	}
	if n := w.tokens.ccCount() - sent; n > 3 {
		c := w.cred("pricing")
		t.Errorf("%d token requests in 10 minutes of edits every 20 s after the token expired, want at most 3 per 30-minute lifetime (DESIGN §8); lastFailure %+v",
			n, c.Status.LastFailure)
	}
}

// budgetFreed counts the failed requests since the last success and that
// one success, not the earlier successes still inside the window. Edits every 20 s, the
// first three tokens issued (10:00, 10:10, 10:20), then the identity server refuses:
// the fourth and fifth requests go at 10:30:00 and 10:30:20, four requests within
// 10:10-10:40, one lifetime. (Before this change an edit after a failure waited a third
// of the lifetime after it.) The run stops at 10:45, before the expiry cap of the
// 10:20 token (10:48) adds its own documented request.
func TestEditsNeverSendMoreThanThreeRequestsInAnyLifetimeWindow(t *testing.T) {
	w := newWorld(t)
	var at []time.Time
	pass := func() {
		before := w.tokens.ccCount()
		_, _ = w.reconcileCred("pricing")
		if w.tokens.ccCount() > before {
			at = append(at, w.clock.Now())
			c := w.cred("pricing")
			t.Logf("%s sent %v; lastFailure %+v", w.clock.Now().Format("15:04:05"), c.Spec.Scopes, c.Status.LastFailure)
		}
	}
	pass()
	for i := 0; w.clock.Now().Before(epoch.Add(45 * time.Minute)); i++ {
		w.clock.Step(20 * time.Second)
		c := w.cred("pricing")
		w.update(c, func() { c.Spec.Scopes = []string{fmt.Sprintf("s%d", i)}; c.Generation++ })
		if len(at) >= 3 && len(w.tokens.fail) == 0 {
			w.tokens.failNext(invalidGrant) // terminal, never rechecked: only edits send
		}
		pass()
	}
	for i := range at {
		n := 0
		for _, t2 := range at[i:] {
			if t2.Before(at[i].Add(30 * time.Minute)) {
				n++
			}
		}
		if n > 3 {
			var s []string
			for _, t2 := range at {
				s = append(s, t2.Format("15:04:05"))
			}
			t.Errorf("%d token requests within the 30-minute lifetime from %s; all requests: %v", n, at[i].Format("15:04:05"), s)
			break
		}
	}
}

// a CDCredential switched to AuthorizationCode and back loses
// status.lastIssuedTime and expiresAt (authorizationCode clears them), and a pass that
// finds the kept token fresh restores expiresAt but never lastIssuedTime: the token
// lifetime is unknown until the next token lands, and the request budget counts in a
// 30-minute window instead of the token's (here 24 h) lifetime.
func TestAFlowSwitchBackAndForthKeepsTheBudgetWindow(t *testing.T) {
	for _, flip := range []bool{false, true} {
		t.Run(fmt.Sprintf("flip=%v", flip), func(t *testing.T) {
			w := newWorld(t)
			w.tokens.lifetime = 24 * time.Hour
			if _, err := w.reconcileCred("pricing"); err != nil {
				t.Fatal(err)
			}
			if flip {
				w.clock.Step(time.Minute)
				for _, f := range []cdv1.Flow{cdv1.FlowAuthorizationCode, cdv1.FlowClientCredentials} {
					c := w.cred("pricing")
					w.update(c, func() { c.Spec.Flow = f; c.Generation++ })
					_, _ = w.reconcileCred("pricing")
				}
				t.Logf("after the switch back: lastIssuedTime %v expiresAt %v", w.cred("pricing").Status.LastIssuedTime, w.cred("pricing").Status.ExpiresAt)
			}
			w.clock.SetTime(w.cred("pricing").Status.RenewalTime.Time)
			start, sent := w.clock.Now(), w.tokens.ccCount()
			for i := 0; w.clock.Now().Before(start.Add(2 * time.Hour)); i++ {
				c := w.cred("pricing")
				w.update(c, func() { c.Spec.Scopes = []string{fmt.Sprintf("s%d", i%2)}; c.Generation++ })
				w.tokens.failNext(&tokenclient.Error{Kind: tokenclient.KindRefused, Code: "invalid_request", StatusCode: 400})
				_, _ = w.reconcileCred("pricing")
				w.clock.Step(20 * time.Second)
			}
			if n := w.tokens.ccCount() - sent; n > 3 {
				t.Errorf("%d token requests in 2 hours of edits (token lifetime 24 h), want at most 3", n)
			}
		})
	}
}
