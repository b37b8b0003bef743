package chaos

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
)

// world builds the records of a small run by hand: one grant "g", a manager (pid 100)
// that has led since long before the chaos, and a sandbox session per login.
type world struct {
	t0  time.Time
	r   *Record
	seq int64
	ex  int
}

const testTTL = 30 * time.Second

func newWorld() *world {
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	return &world{t0: t0, r: &Record{
		Grants: []string{"g"},
		Final:  map[string]FinalGrant{"g": {Ready: true, ReadyReason: cdv1.TokenIssuedReason}},
		Junk:   map[string]bool{},
		From:   t0, End: t0.Add(10 * time.Minute), Grace: 20 * time.Second, InFlight: 8 * time.Second,
		Timeline: Snapshot{Procs: []ProcRecord{
			{Replica: "a", PID: 100, Started: t0.Add(-time.Hour), LeaderAt: t0.Add(-time.Hour)},
			{Replica: "b", PID: 200, Started: t0.Add(-time.Hour)},
		}},
	}}
}

func (w *world) at(d time.Duration) time.Time { return w.t0.Add(d) }

func (w *world) entry(e cdsandbox.JournalEntry) cdsandbox.JournalEntry {
	w.seq++
	e.Seq = w.seq
	w.r.Journal = append(w.r.Journal, e)
	return e
}

// login starts session sess for the grant with refresh token tok, stored at once.
func (w *world) login(at time.Duration, sess, tok string) {
	w.entry(cdsandbox.JournalEntry{Time: w.at(at), GrantType: "authorization_code", Grant: sess, Status: 200, IssuedRefresh: h(tok), IssuedAccess: h("a-" + tok), AccessExpiresAt: w.at(at + testTTL), Delivered: true})
	w.r.Seeds = append(w.r.Seeds, Seed{Grant: "g", At: w.at(at), Token: h(tok)})
	w.see(at, RefreshSecret("g"), h(tok), "")
}

// rotate spends tok for next through the proxy; outcome says what became of the answer.
// The new tokens are stored (seen in the Secrets) only when the answer was delivered
// and store is true.
func (w *world) rotate(at time.Duration, sess, tok, next string, outcome Outcome, pid int, store bool) {
	w.ex++
	id := fmt.Sprintf("chaos-%d", w.ex)
	w.r.Ledger = append(w.r.Ledger, Exchange{ID: id, Start: w.at(at), End: w.at(at + 10*time.Millisecond), PID: pid, GrantType: "refresh_token", Presented: h(tok), Forwarded: true, Status: 200, Outcome: outcome})
	w.entry(cdsandbox.JournalEntry{Time: w.at(at), RequestID: id, GrantType: "refresh_token", Grant: sess, Presented: h(tok), Consumed: true, Status: 200,
		IssuedRefresh: h(next), IssuedAccess: h("a-" + next), AccessExpiresAt: w.at(at + testTTL), Delivered: true})
	if store {
		w.see(at+20*time.Millisecond, RefreshSecret("g"), h(next), "")
		w.see(at+30*time.Millisecond, OutputSecret("g"), "", h("a-"+next))
	}
}

// replay presents the spent tok again: the sandbox revokes the session.
func (w *world) replay(at time.Duration, sess, tok string) {
	w.ex++
	id := fmt.Sprintf("chaos-%d", w.ex)
	w.r.Ledger = append(w.r.Ledger, Exchange{ID: id, Start: w.at(at), End: w.at(at), PID: 100, GrantType: "refresh_token", Presented: h(tok), Forwarded: true, Status: 400, Outcome: OutcomeDelivered})
	w.entry(cdsandbox.JournalEntry{Time: w.at(at), RequestID: id, GrantType: "refresh_token", Grant: sess, Presented: h(tok), Reused: true, Revoked: true, Status: 400, Error: "invalid_grant", Delivered: true})
}

// attempt marks tok in flight for the attempts-th time and has the leader (pid 100) send
// it through the proxy, which never forwards it or holds its answer (outcome); an empty
// outcome is a send that never happened. As in a real run, the watch sees the mark 8 ms
// after it landed, when the send has already started.
func (w *world) attempt(at time.Duration, tok string, attempts int, outcome Outcome) {
	w.r.Observations = append(w.r.Observations, Observation{At: w.at(at + 8*time.Millisecond), Secret: RefreshSecret("g"), Refresh: h(tok), Attempts: attempts})
	if outcome == "" {
		return
	}
	w.ex++
	w.r.Ledger = append(w.r.Ledger, Exchange{ID: fmt.Sprintf("chaos-%d", w.ex), Start: w.at(at), End: w.at(at + 3*time.Second), PID: 100, GrantType: "refresh_token", Presented: h(tok), Outcome: outcome})
}

// deleteMid deletes the grant's refresh-token Secret from the hook of the exchange that
// started at at (rotate's), 5 ms in: after the sandbox answered, before the answer left
// the proxy.
func (w *world) deleteMid(at time.Duration) {
	for i, ex := range w.r.Ledger {
		if ex.Start.Equal(w.at(at)) {
			w.r.Ledger[i].Fault = string(DeleteRefreshMid)
		}
	}
	w.r.Observations = append(w.r.Observations, Observation{At: w.at(at + 5*time.Millisecond), Secret: RefreshSecret("g"), Deleted: true})
	w.r.Timeline.Disturbances = append(w.r.Timeline.Disturbances, Disturbance{Grant: "g", At: w.at(at + 5*time.Millisecond), What: RefreshDeletedMidRotation})
}

func (w *world) see(at time.Duration, secret, refresh, access string) {
	w.r.Observations = append(w.r.Observations, Observation{At: w.at(at), Secret: secret, Refresh: refresh, Access: access})
}

// lost makes the grant say RotationInterrupted from at to the end.
func (w *world) lost(at time.Duration, reason string) {
	w.r.Episodes = append(w.r.Episodes, Episode{Grant: "g", At: w.at(at), Reason: reason})
	w.r.Final["g"] = FinalGrant{Reauth: true, ReauthReason: reason}
}

// healthy is a grant rotated every 20 s through the whole run.
func healthy(w *world) (tok string) {
	w.login(-time.Minute, "s1", "r0")
	w.rotate(-40*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
	tok = "r1"
	for i := 2; w.at(time.Duration(i-3) * 20 * time.Second).Before(w.r.End); i++ {
		next := fmt.Sprintf("r%d", i)
		w.rotate(time.Duration(i-3)*20*time.Second, "s1", tok, next, OutcomeDelivered, 100, true)
		tok = next
	}
	return tok
}

func h(s string) string { return cdsandbox.TokenHash(s) }

func invariants(vs []Violation) []string {
	out := []string{}
	for _, v := range vs {
		out = append(out, v.Invariant)
	}
	return out
}

func TestCheckJudgesFromTheRecords(t *testing.T) {
	cases := map[string]struct {
		build      func(w *world)
		violations []string
		lost       []string // causes, excused or not
	}{
		"a grant rotated on time throughout breaks nothing": {
			build: func(w *world) { healthy(w) },
		},
		"an answer the proxy dropped after consumption, retried once and reported RotationInterrupted, is an excused loss": {
			build: func(w *world) {
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-40*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
				w.rotate(-20*time.Second, "s1", "r1", "r2", OutcomeDropped, 100, false)
				w.replay(-19*time.Second, "s1", "r1")
				w.lost(-18*time.Second, cdv1.RotationInterruptedReason)
			},
			lost: []string{CauseDropped},
		},
		"an answer delivered to a manager SIGKILLed before it stored the new token is an excused loss": {
			build: func(w *world) {
				w.r.Timeline.Procs[0].Cause, w.r.Timeline.Procs[0].Signaled, w.r.Timeline.Procs[0].Exited = ExitSIGKILL, w.at(-20*time.Second+15*time.Millisecond), w.at(-20*time.Second+16*time.Millisecond)
				w.r.Timeline.Procs[1].LeaderAt = w.at(-14 * time.Second)
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-20*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, false)
				w.replay(-13*time.Second, "s1", "r0")
				w.lost(-12*time.Second, cdv1.RotationInterruptedReason)
			},
			lost: []string{CauseKilled},
		},
		"an answer a manager held unstored for a minute, the API server up, then SIGKILLed, is a lost grant": {
			build: func(w *world) {
				w.r.Timeline.Procs[0].Cause, w.r.Timeline.Procs[0].Signaled, w.r.Timeline.Procs[0].Exited = ExitSIGKILL, w.at(-20*time.Second), w.at(-20*time.Second+time.Millisecond)
				w.r.Timeline.Procs[1].LeaderAt = w.at(-14 * time.Second)
				w.login(-2*time.Minute, "s1", "r0")
				w.rotate(-80*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, false)
				w.replay(-13*time.Second, "s1", "r0")
				w.lost(-12*time.Second, cdv1.RotationInterruptedReason)
			},
			violations: []string{InvLostGrant},
			lost:       []string{CauseKilledLate},
		},
		"an answer held unstored through an API-server outage until its holder was SIGKILLed is an excused loss": {
			build: func(w *world) {
				w.r.Timeline.Procs[0].Cause, w.r.Timeline.Procs[0].Signaled, w.r.Timeline.Procs[0].Exited = ExitSIGKILL, w.at(-20*time.Second), w.at(-20*time.Second+time.Millisecond)
				w.r.Timeline.Procs[1].LeaderAt = w.at(-14 * time.Second)
				w.r.Timeline.APIDown = []Interval{{From: w.at(-81 * time.Second), To: w.at(-15 * time.Second)}}
				w.login(-2*time.Minute, "s1", "r0")
				w.rotate(-80*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, false)
				w.replay(-13*time.Second, "s1", "r0")
				w.lost(-12*time.Second, cdv1.RotationInterruptedReason)
			},
			lost: []string{CauseKilled},
		},
		"an answer to an unidentified process, sent as the leader was being SIGKILLed, is an excused loss": {
			build: func(w *world) {
				w.r.Timeline.Procs[0].Cause, w.r.Timeline.Procs[0].Signaled, w.r.Timeline.Procs[0].Exited = ExitSIGKILL, w.at(-20*time.Second-time.Millisecond), w.at(-20*time.Second+16*time.Millisecond)
				w.r.Timeline.Procs[1].LeaderAt = w.at(-14 * time.Second)
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-20*time.Second, "s1", "r0", "r1", OutcomeDelivered, 0, false)
				w.replay(-13*time.Second, "s1", "r0")
				w.lost(-12*time.Second, cdv1.RotationInterruptedReason)
			},
			lost: []string{CauseKilled},
		},
		"an answer delivered to a running manager that never stored it is a lost grant": {
			build: func(w *world) {
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-20*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, false)
				w.replay(-13*time.Second, "s1", "r0")
				w.lost(-12*time.Second, cdv1.RotationInterruptedReason)
			},
			violations: []string{InvLostGrant},
			lost:       []string{CauseNeverStored},
		},
		"an answer held by a manager that then exited on its own is a lost grant": {
			build: func(w *world) {
				w.r.Timeline.Procs[0].Cause, w.r.Timeline.Procs[0].Exited = ExitSelf, w.at(-19*time.Second)
				w.r.Timeline.Procs[1].LeaderAt = w.at(-14 * time.Second)
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-20*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, false)
				w.replay(-13*time.Second, "s1", "r0")
				w.lost(-12*time.Second, cdv1.RotationInterruptedReason)
			},
			violations: []string{InvLostGrant},
			lost:       []string{CauseExited},
		},
		"an answer held by a manager that exited while the API server was down from the answer on is an excused loss": {
			build: func(w *world) {
				w.r.Timeline.Procs[0].Cause, w.r.Timeline.Procs[0].Exited = ExitSelf, w.at(-17*time.Second)
				w.r.Timeline.Procs[1].LeaderAt = w.at(-14 * time.Second)
				w.r.Timeline.APIDown = []Interval{{From: w.at(-21 * time.Second), To: w.at(-15 * time.Second)}}
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-20*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, false)
				w.replay(-13*time.Second, "s1", "r0")
				w.lost(-12*time.Second, cdv1.RotationInterruptedReason)
			},
			lost: []string{CauseHeldOutage},
		},
		"an answer held by a manager that exited after the API server came back is still a lost grant": {
			build: func(w *world) {
				w.r.Timeline.Procs[0].Cause, w.r.Timeline.Procs[0].Exited = ExitSelf, w.at(-17*time.Second)
				w.r.Timeline.Procs[1].LeaderAt = w.at(-14 * time.Second)
				w.r.Timeline.APIDown = []Interval{{From: w.at(-21 * time.Second), To: w.at(-19 * time.Second)}}
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-20*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, false)
				w.replay(-13*time.Second, "s1", "r0")
				w.lost(-12*time.Second, cdv1.RotationInterruptedReason)
			},
			violations: []string{InvLostGrant},
			lost:       []string{CauseExited},
		},
		"a spent token presented a third time breaks the one-retry rule": {
			build: func(w *world) {
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-20*time.Second, "s1", "r0", "r1", OutcomeDropped, 100, false)
				w.replay(-19*time.Second, "s1", "r0")
				w.replay(-18*time.Second, "s1", "r0")
				w.lost(-17*time.Second, cdv1.RotationInterruptedReason)
			},
			violations: []string{InvPresentedTwice},
			lost:       []string{CauseDropped},
		},
		"a spent token presented again although its successor was stored is not the allowed retry": {
			build: func(w *world) {
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-20*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
				w.replay(-19*time.Second, "s1", "r0")
				w.lost(-17*time.Second, cdv1.RotationInterruptedReason)
			},
			violations: []string{InvPresentedTwice, InvLostGrant},
			lost:       []string{CauseNeverStored},
		},
		"a revoked session the grant never reports is unreported": {
			build: func(w *world) {
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-20*time.Second, "s1", "r0", "r1", OutcomeDropped, 100, false)
				w.replay(-19*time.Second, "s1", "r0")
				w.r.Final["g"] = FinalGrant{Ready: false, ReadyReason: "TokenRequestFailed"}
			},
			violations: []string{InvUnreported, InvFinal},
			lost:       []string{CauseDropped},
		},
		"a lost session reported as RefreshTokenRejected is misreported": {
			build: func(w *world) {
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-20*time.Second, "s1", "r0", "r1", OutcomeDropped, 100, false)
				w.replay(-19*time.Second, "s1", "r0")
				w.lost(-18*time.Second, cdv1.RefreshTokenRejectedReason)
			},
			violations: []string{InvUnreported},
			lost:       []string{CauseDropped},
		},
		"a resend whose answer is lost too, after a first send that never reached the sandbox, is an excused loss without a replay": {
			build: func(w *world) {
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-40*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
				w.rotate(-20*time.Second, "s1", "r1", "r2", OutcomeDropped, 100, false)
				w.lost(-10*time.Second, cdv1.RotationInterruptedReason)
			},
			lost: []string{CauseDropped},
		},
		"a successor never stored by a manager that had its answer, and no replay, is a lost grant": {
			build: func(w *world) {
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-40*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
				w.rotate(-20*time.Second, "s1", "r1", "r2", OutcomeDelivered, 100, false)
				w.lost(-10*time.Second, cdv1.RotationInterruptedReason)
			},
			violations: []string{InvLostGrant},
			lost:       []string{CauseNeverStored},
		},
		"RotationInterrupted without a revoked session has no proof": {
			build: func(w *world) {
				tok := healthy(w)
				_ = tok
				w.lost(time.Minute, cdv1.RotationInterruptedReason)
			},
			violations: []string{InvUnprovenLoss},
		},
		"a refresh-token Secret that goes back to an older token": {
			build: func(w *world) {
				healthy(w)
				w.see(30*time.Second+500*time.Millisecond, RefreshSecret("g"), h("r1"), "")
				w.see(30*time.Second+600*time.Millisecond, RefreshSecret("g"), h("r4"), "")
			},
			violations: []string{InvOlderToken},
		},
		"a Secret holding a token the sandbox never issued": {
			build: func(w *world) {
				healthy(w)
				w.see(30*time.Second+500*time.Millisecond, OutputSecret("g"), "", h("forged"))
				w.see(30*time.Second+600*time.Millisecond, OutputSecret("g"), "", h("a-r4"))
			},
			violations: []string{InvUnknownToken},
		},
		"an access token that expires under a steady leader": {
			build: func(w *world) {
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-10*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
				w.rotate(3*time.Minute, "s1", "r1", "r2", OutcomeDelivered, 100, true)
				w.r.End = w.at(3*time.Minute + 10*time.Second)
			},
			violations: []string{InvExpired},
		},
		"an access token that expires during an API-server outage is counted, not a violation": {
			build: func(w *world) {
				w.r.Timeline.APIDown = []Interval{{From: w.at(0), To: w.at(time.Minute)}}
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-10*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
				w.rotate(65*time.Second, "s1", "r1", "r2", OutcomeDelivered, 100, true)
				w.r.End = w.at(80 * time.Second)
			},
		},
		// CI's machine stood still for 12 s (a VM snapshot) while a token ran out: the
		// leader renewed it within the grace after the machine ran again.
		"an access token that expires while the machine is paused, renewed within the grace after, is counted, not a violation": {
			build: func(w *world) { w.expiresInAPause(40 * time.Second) },
		},
		"an access token still expired more than the grace after a machine pause": {
			build:      func(w *world) { w.expiresInAPause(time.Minute) }, // steady again from 0:48
			violations: []string{InvExpired},
		},
		"an output Secret deleted by hand and not repaired under a steady leader": {
			build: func(w *world) {
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-10*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
				w.r.Observations = append(w.r.Observations, Observation{At: w.at(5 * time.Second), Secret: OutputSecret("g"), Deleted: true})
				w.r.Timeline.Disturbances = []Disturbance{{Grant: "g", At: w.at(5 * time.Second), What: "output Secret deleted by hand"}}
				w.r.End = w.at(time.Minute)
			},
			violations: []string{InvNotRepaired, InvFinal},
		},
		"an output Secret deleted by hand and repaired within the grace": {
			build: func(w *world) {
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-10*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
				w.r.Observations = append(w.r.Observations, Observation{At: w.at(5 * time.Second), Secret: OutputSecret("g"), Deleted: true})
				w.r.Timeline.Disturbances = []Disturbance{{Grant: "g", At: w.at(5 * time.Second), What: "output Secret deleted by hand"}}
				w.rotate(6*time.Second, "s1", "r1", "r2", OutcomeDelivered, 100, true)
				w.r.End = w.at(30 * time.Second)
			},
		},
		"a manager SIGKILLed while its request was in flight, after the sandbox consumed the token, is an excused loss": {
			build: func(w *world) {
				w.r.Timeline.Procs[0].Cause, w.r.Timeline.Procs[0].Signaled, w.r.Timeline.Procs[0].Exited = ExitSIGKILL, w.at(-20*time.Second+5*time.Millisecond), w.at(-20*time.Second+6*time.Millisecond)
				w.r.Timeline.Procs[1].LeaderAt = w.at(-14 * time.Second)
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-20*time.Second, "s1", "r0", "r1", OutcomeClientGone, 100, false)
				w.replay(-13*time.Second, "s1", "r0")
				w.lost(-12*time.Second, cdv1.RotationInterruptedReason)
			},
			lost: []string{CauseKilledAsked},
		},
		"a client that hung up on its own before the answer is a loss on the way": {
			build: func(w *world) {
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-20*time.Second, "s1", "r0", "r1", OutcomeClientGone, 100, false)
				w.replay(-13*time.Second, "s1", "r0")
				w.lost(-12*time.Second, cdv1.RotationInterruptedReason)
			},
			lost: []string{CauseLostOnWay},
		},
		"a token sent twice, neither request forwarded before the client gave up, given up and reported, is an excused loss": {
			build: func(w *world) {
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-40*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
				w.attempt(-20*time.Second, "r1", 1, OutcomeNotForwarded)
				w.attempt(-10*time.Second, "r1", 2, OutcomeNotForwarded)
				w.lost(-9*time.Second, cdv1.RotationInterruptedReason)
			},
			lost: []string{CauseGivenUp},
		},
		"a mark whose writer was SIGKILLed before it sent, then a resend held past the timeout, is an excused loss": {
			build: func(w *world) {
				w.r.Timeline.Procs[0].Cause, w.r.Timeline.Procs[0].Signaled, w.r.Timeline.Procs[0].Exited = ExitSIGKILL, w.at(-20*time.Second-5*time.Millisecond), w.at(-20*time.Second)
				w.r.Timeline.Procs[1].LeaderAt = w.at(-14 * time.Second)
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-40*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
				w.attempt(-20*time.Second, "r1", 1, "")
				w.attempt(-5*time.Second, "r1", 2, OutcomeLate)
				w.lost(-4*time.Second, cdv1.RotationInterruptedReason)
			},
			lost: []string{CauseGivenUp},
		},
		"an attempt answered 429 and put back, then a resend held past the timeout, is an excused loss": {
			build: func(w *world) {
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-40*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
				w.attempt(-30*time.Second, "r1", 1, OutcomeNotForwarded)
				w.attempt(-20*time.Second, "r1", 2, OutcomeAnsweredProxy)   // 429: not spent
				w.attempt(-20*time.Second+50*time.Millisecond, "r1", 1, "") // the mark put back
				w.attempt(-10*time.Second, "r1", 2, OutcomeLate)
				w.lost(-9*time.Second, cdv1.RotationInterruptedReason)
			},
			lost: []string{CauseGivenUp},
		},
		"a token given up with an attempt no fault explains is a lost grant without cause": {
			build: func(w *world) {
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-40*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
				w.attempt(-20*time.Second, "r1", 1, "")
				w.attempt(-10*time.Second, "r1", 2, OutcomeNotForwarded)
				w.lost(-9*time.Second, cdv1.RotationInterruptedReason)
			},
			violations: []string{InvLostGrant},
			lost:       []string{CauseGivenUp},
		},
		"a grant said RotationInterrupted while its token was marked once is unproven": {
			build: func(w *world) {
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-40*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
				w.attempt(-20*time.Second, "r1", 1, OutcomeNotForwarded)
				w.lost(-9*time.Second, cdv1.RotationInterruptedReason)
			},
			violations: []string{InvUnprovenLoss, InvExpired},
		},
		"a refresh-token Secret deleted while its refresh was out, created again with the new token, breaks nothing": {
			build: func(w *world) {
				healthy(w)
				w.deleteMid(0)
			},
		},
		"a refresh-token Secret deleted while its refresh was out and never created again is a lost grant": {
			build: func(w *world) {
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-40*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
				w.rotate(-20*time.Second, "s1", "r1", "r2", OutcomeDelivered, 100, false)
				w.deleteMid(-20 * time.Second)
				w.r.Final["g"] = FinalGrant{Ready: false, ReadyReason: cdv1.SecretWriteFailedReason}
			},
			violations: []string{InvLostGrant, InvUnreported, InvFinal, InvNotRecreated},
			lost:       []string{CauseNeverStored},
		},
		"a refresh-token Secret deleted while its refresh was out, the answer held by a manager SIGKILLed 4 s later, is not created again": {
			build: func(w *world) {
				w.r.Timeline.Procs[0].Cause, w.r.Timeline.Procs[0].Signaled, w.r.Timeline.Procs[0].Exited = ExitSIGKILL, w.at(-16*time.Second), w.at(-16*time.Second+time.Millisecond)
				w.r.Timeline.Procs[1].LeaderAt = w.at(-10 * time.Second)
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-40*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
				w.rotate(-20*time.Second, "s1", "r1", "r2", OutcomeDeliveredLate, 100, false)
				w.deleteMid(-20 * time.Second)
				w.lost(-9*time.Second, cdv1.RefreshTokenMissingReason)
			},
			violations: []string{InvNotRecreated},
			lost:       []string{CauseKilled},
		},
		"a refresh-token Secret deleted while its refresh was out, the answer's manager SIGKILLed at once, is an excused loss": {
			build: func(w *world) {
				w.r.Timeline.Procs[0].Cause, w.r.Timeline.Procs[0].Signaled, w.r.Timeline.Procs[0].Exited = ExitSIGKILL, w.at(-20*time.Second+15*time.Millisecond), w.at(-20*time.Second+16*time.Millisecond)
				w.r.Timeline.Procs[1].LeaderAt = w.at(-14 * time.Second)
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-40*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
				w.rotate(-20*time.Second, "s1", "r1", "r2", OutcomeDeliveredLate, 100, false)
				w.deleteMid(-20 * time.Second)
				w.lost(-9*time.Second, cdv1.RefreshTokenMissingReason)
			},
			lost: []string{CauseKilled},
		},
		"a refresh-token Secret deleted while its refresh was out, the answer then lost, reported RefreshTokenMissing, is an excused loss": {
			build: func(w *world) {
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-40*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
				w.rotate(-20*time.Second, "s1", "r1", "r2", OutcomeLate, 100, false)
				w.deleteMid(-20 * time.Second)
				w.lost(-15*time.Second, cdv1.RefreshTokenMissingReason)
			},
			lost: []string{CauseLate},
		},
		"a loss reported RefreshTokenMissing while the refresh-token Secret exists is misreported": {
			build: func(w *world) {
				w.login(-time.Minute, "s1", "r0")
				w.rotate(-40*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
				w.rotate(-20*time.Second, "s1", "r1", "r2", OutcomeLate, 100, false)
				w.lost(-15*time.Second, cdv1.RefreshTokenMissingReason)
			},
			violations: []string{InvUnreported},
			lost:       []string{CauseLate},
		},
		"a grant neither Ready nor lost at the end": {
			build: func(w *world) {
				healthy(w)
				w.r.Final["g"] = FinalGrant{Ready: false, ReadyReason: "TokenRequestFailed"}
			},
			violations: []string{InvFinal},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld()
			tc.build(w)
			res := Check(w.r)
			want := tc.violations
			if want == nil {
				want = []string{}
			}
			if diff := cmp.Diff(sorted(want), sorted(invariants(res.Violations))); diff != "" {
				t.Errorf("violations (-want +got):\n%s\n%v", diff, res.Violations)
			}
			var causes []string
			for _, l := range res.Lost {
				causes = append(causes, l.Cause)
			}
			if diff := cmp.Diff(tc.lost, causes); diff != "" {
				t.Errorf("lost grants (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCheckCountsAndStaleness(t *testing.T) {
	w := newWorld()
	w.r.Timeline.APIDown = []Interval{{From: w.at(0), To: w.at(time.Minute)}}
	w.login(-time.Minute, "s1", "r0")
	w.rotate(-10*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true) // expires at 0:20, inside the outage
	w.rotate(65*time.Second, "s1", "r1", "r2", OutcomeDelivered, 100, true)  // 45 s past expiry
	w.rotate(85*time.Second, "s1", "r2", "r3", OutcomeDelivered, 100, true)  // 10 s before expiry, steady? no: outage within grace
	w.rotate(105*time.Second, "s1", "r3", "r4", OutcomeDelivered, 100, true) // 10 s before expiry, steady
	w.r.End = w.at(110 * time.Second)
	res := Check(w.r)
	got := map[string]any{
		"rotations": res.Rotations, "presentations": res.Presentations, "violations": len(res.Violations),
		"worst steady": res.WorstSteady, "worst past": res.WorstPast, "cause": res.WorstPastCause, "by cause": res.ExpiredByCause,
	}
	want := map[string]any{
		"rotations": 4, "presentations": 4, "violations": 0,
		// Replacements are seen 30 ms after the rotation.
		"worst steady": 9970 * time.Millisecond, "worst past": 45030 * time.Millisecond, "cause": "kube-apiserver outage",
		"by cause": map[string]int{"kube-apiserver outage": 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("figures (-want +got):\n%s", diff)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

func TestHandoverAndRecoveryAreMeasuredFromTheRecords(t *testing.T) {
	w := newWorld()
	// The leader (pid 100) is SIGKILLed at 0:10; pid 200 takes over at 0:16. The API
	// server is down from 0:30 to 1:00; pid 200 loses the lease and exits, and pid 300
	// acquires the lease at 1:02. The grant's token, expired at 0:50, is renewed at 1:05.
	w.r.Timeline.Procs[0].Cause, w.r.Timeline.Procs[0].Signaled, w.r.Timeline.Procs[0].Exited = ExitSIGKILL, w.at(10*time.Second), w.at(10*time.Second)
	w.r.Timeline.Procs[1].LeaderAt, w.r.Timeline.Procs[1].Cause, w.r.Timeline.Procs[1].Exited = w.at(16*time.Second), ExitSelf, w.at(35*time.Second)
	w.r.Timeline.Procs = append(w.r.Timeline.Procs, ProcRecord{Replica: "b", PID: 300, Started: w.at(36 * time.Second), LeaderAt: w.at(62 * time.Second)})
	w.r.Timeline.APIDown = []Interval{{From: w.at(30 * time.Second), To: w.at(60 * time.Second)}}
	w.r.Timeline.Injections = []Injection{
		{Seq: 1, Kind: KillLeader, Applied: true, Ref: w.at(10 * time.Second)},
		{Seq: 2, Kind: APIOutage, Applied: true, Ref: w.at(60 * time.Second)},
	}
	w.login(-time.Minute, "s1", "r0")
	w.rotate(20*time.Second, "s1", "r0", "r1", OutcomeDelivered, 200, true)
	w.rotate(65*time.Second, "s1", "r1", "r2", OutcomeDelivered, 300, true)
	w.r.End = w.at(80 * time.Second)
	res := Check(w.r)
	want := map[Kind][]time.Duration{KillLeader: {6 * time.Second}, APIOutage: {2 * time.Second}}
	if diff := cmp.Diff(want, res.Handovers); diff != "" {
		t.Errorf("handovers (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]time.Duration{5030 * time.Millisecond}, res.Recoveries); diff != "" || res.Unrecovered != 0 {
		t.Errorf("recoveries (-want +got):\n%s, %d unrecovered", diff, res.Unrecovered)
	}
}

func TestALostGrantIsTimedFromTheLostAnswerToItsReport(t *testing.T) {
	w := newWorld()
	w.login(-time.Minute, "s1", "r0")
	w.rotate(-40*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
	w.rotate(-20*time.Second, "s1", "r1", "r2", OutcomeDropped, 100, false)
	w.replay(time.Minute, "s1", "r1") // after a long wait
	w.lost(time.Minute+time.Second, cdv1.RotationInterruptedReason)
	res := Check(w.r)
	if len(res.Lost) != 1 {
		t.Fatalf("%d lost grants, want 1", len(res.Lost))
	}
	l := res.Lost[0]
	got := []time.Time{l.LostAt, l.At, l.Reported}
	want := []time.Time{w.at(-20 * time.Second), w.at(time.Minute), w.at(time.Minute + time.Second)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("lost at, replayed at, reported at (-want +got):\n%s", diff)
	}
	// From the lost answer on, the grant cannot be fresh: its expiry is not held against it.
	if len(res.Violations) != 0 {
		t.Errorf("violations: %v", res.Violations)
	}
}

// TestWatchPausesRecordsTheTimeNoTickCame: ticks every 100 ms, then none for 12 s (the
// machine stood still), then ticks again: one pause, from the last tick before it to
// the first after; a late tick under pauseGap is none.
func TestWatchPausesRecordsTheTimeNoTickCame(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 41, 28, 0, time.UTC)
	times := []time.Time{t0, t0.Add(100 * time.Millisecond), t0.Add(200 * time.Millisecond), t0.Add(12*time.Second + 200*time.Millisecond),
		t0.Add(12*time.Second + 300*time.Millisecond), t0.Add(13*time.Second + 200*time.Millisecond)}
	var i int
	now := func() time.Time { i++; return times[i-1] }
	ticks := make(chan time.Time)
	tl := &Timeline{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchPauses(ctx, tl, ticks, now)
	}()
	for range len(times) - 1 {
		ticks <- time.Time{}
	}
	cancel()
	<-done
	want := []Interval{{From: t0.Add(200 * time.Millisecond), To: t0.Add(12*time.Second + 200*time.Millisecond)}}
	if diff := cmp.Diff(want, tl.Snapshot().Paused); diff != "" {
		t.Errorf("pauses (-want +got):\n%s", diff)
	}
}

// TestAPauseIsCountedAsTheCauseOfAnExpiry: the figures name the pause as why the token
// expired, so a reader of the report sees it was the machine's doing.
func TestAPauseIsCountedAsTheCauseOfAnExpiry(t *testing.T) {
	w := newWorld()
	w.expiresInAPause(40 * time.Second)
	res := Check(w.r)
	if diff := cmp.Diff(map[string]int{MachinePaused: 1}, res.ExpiredByCause); diff != "" {
		t.Errorf("expired by cause (-want +got):\n%s", diff)
	}
	var out strings.Builder
	(&Report{Result: res, Record: w.r}).Print(&out)
	if !strings.Contains(out.String(), "machine paused") || !strings.Contains(out.String(), "10:00:15.000 to 10:00:28.000") {
		t.Errorf("the report does not list the pause:\n%s", out.String())
	}
}

// expiresInAPause records a machine pause from 0:15 to 0:28 and a token that expires at
// 0:20, inside it, replaced at renewed; the run ends 10 s after that.
func (w *world) expiresInAPause(renewed time.Duration) {
	w.r.Timeline.Paused = []Interval{{From: w.at(15 * time.Second), To: w.at(28 * time.Second)}}
	w.login(-time.Minute, "s1", "r0")
	w.rotate(-10*time.Second, "s1", "r0", "r1", OutcomeDelivered, 100, true)
	w.rotate(renewed, "s1", "r1", "r2", OutcomeDelivered, 100, true)
	w.r.End = w.at(renewed + 10*time.Second)
}
