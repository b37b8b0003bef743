package chaos

import (
	"fmt"
	"sort"
	"strings"
	"time"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
)

// Seed is a customer login the harness did for a CDUserGrant: the refresh token it put
// in the grant's Secret (at the start, or after a lost session).
type Seed struct {
	Grant string
	At    time.Time
	Token string // cdsandbox.TokenHash of the refresh token
}

// Episode is a time the harness saw a CDUserGrant say ReauthorizationRequired=True.
type Episode struct {
	Grant  string
	At     time.Time
	Reason string
}

// FinalGrant is a CDUserGrant's conditions at the end of the run.
type FinalGrant struct {
	Ready        bool
	ReadyReason  string
	Reauth       bool
	ReauthReason string
}

// Record is everything a run produced, for Check.
type Record struct {
	Journal      []cdsandbox.JournalEntry
	Ledger       []Exchange
	Timeline     Snapshot
	Observations []Observation
	Seeds        []Seed
	Episodes     []Episode
	Final        map[string]FinalGrant
	// Junk holds the hashes of values the harness wrote into Secrets by hand.
	Junk map[string]bool
	// Grants are the CDUserGrants' names.
	Grants []string
	// From and End bound the chaos: freshness is judged in between.
	From, End time.Time
	// Grace is how long a steady leader may take to put things right after a
	// disturbance (a handover, an outage, a fault on the grant, a hand edit).
	Grace time.Duration
	// InFlight is the managers' --in-flight-timeout (Config.InFlightTimeout).
	InFlight time.Duration
}

// RefreshSecret and OutputSecret name a CDUserGrant's Secrets in the suite.
func RefreshSecret(grant string) string { return grant + "-refresh" }

// OutputSecret is the Secret a CDUserGrant's access token goes to (the default name).
func OutputSecret(grant string) string { return grant + "-token" }

// Violation is a broken invariant.
type Violation struct {
	Invariant string
	Grant     string
	At        time.Time
	Detail    string
}

func (v Violation) String() string {
	return fmt.Sprintf("%s: %s at %s: %s", v.Invariant, v.Grant, v.At.Format("15:04:05.000"), v.Detail)
}

// Invariants, as named in violations.
const (
	InvPresentedTwice = "refresh token presented twice"
	InvLostGrant      = "grant lost without cause"
	InvUnreported     = "loss not reported as RotationInterrupted"
	InvUnprovenLoss   = "ReauthorizationRequired without a lost answer"
	InvFinal          = "not Ready at the end"
	InvOlderToken     = "Secret went back to an older token"
	InvUnknownToken   = "Secret holds a token the sandbox never issued"
	InvExpired        = "access token expired under a steady leader"
	InvNotRepaired    = "output Secret not repaired under a steady leader"
	InvNotRecreated   = "refresh-token Secret deleted mid-rotation not created again with the new token"
)

// LostGrant is a customer session the sandbox revoked.
type LostGrant struct {
	Grant string
	// LostAt is when the answer was lost (the consumed presentation), At when the
	// sandbox saw the replay that revoked the session, Reported when the grant said
	// ReauthorizationRequired (zero if never).
	LostAt   time.Time
	Reported time.Time
	At       time.Time
	Cause    string
	Detail   string
	Excused  bool
}

// Result is the verdict of Check and the figures for the report.
type Result struct {
	Violations    []Violation
	Lost          []LostGrant
	Presentations int
	Rotations     int
	Requests      int
	Replays       int
	// WorstSteady is the least time a token had left when it was replaced (or at the
	// end) while the grant was undisturbed under a steady leader; negative is past expiry.
	WorstSteady      time.Duration
	WorstSteadyGrant string
	// WorstPast is the longest a Secret held an expired token, for any reason.
	WorstPast      time.Duration
	WorstPastGrant string
	WorstPastCause string
	// ExpiredByCause counts periods in which an output Secret held an expired token,
	// by what disturbed the grant (none of them under a steady leader).
	ExpiredByCause map[string]int
	// Handovers are the times from a leader kill (or the API server answering again)
	// to a process holding the lease.
	Handovers map[Kind][]time.Duration
	// Recoveries are the times from the API server answering again after an outage to
	// every grant holding an unexpired token; Unrecovered counts outages never recovered.
	Recoveries  []time.Duration
	Unrecovered int
	// DeletedMidRotation counts the refresh-token Secrets deleted while their refresh was
	// out (DeleteRefreshMid events that found one).
	DeletedMidRotation int
}

type tokenInfo struct {
	grant string
	seq   int64
}

type accessInfo struct {
	grant   string
	seq     int64
	expires time.Time
}

// index joins the sandbox's journal, the proxy's ledger and the harness's seeds.
type index struct {
	refresh       map[string]tokenInfo
	access        map[string]accessInfo
	presentations map[string][]cdsandbox.JournalEntry
	consumed      map[string]bool
	grantCR       map[string]string
	exchanges     map[string]Exchange
	stored        map[string]bool          // refresh-token hashes ever seen in a refresh-token Secret
	silent        []cdsandbox.JournalEntry // silentLosses
	givenUp       []abandonment            // givenUp
}

func newIndex(r *Record) *index {
	x := &index{
		refresh: map[string]tokenInfo{}, access: map[string]accessInfo{},
		presentations: map[string][]cdsandbox.JournalEntry{}, consumed: map[string]bool{},
		grantCR: map[string]string{}, exchanges: map[string]Exchange{}, stored: map[string]bool{},
	}
	for _, e := range r.Journal {
		if e.IssuedRefresh != "" {
			x.refresh[e.IssuedRefresh] = tokenInfo{grant: e.Grant, seq: e.Seq}
		}
		if e.IssuedAccess != "" {
			x.access[e.IssuedAccess] = accessInfo{grant: e.Grant, seq: e.Seq, expires: e.AccessExpiresAt}
		}
		if e.Presented != "" {
			x.presentations[e.Presented] = append(x.presentations[e.Presented], e)
			if e.Consumed {
				x.consumed[e.Presented] = true
			}
		}
	}
	for _, s := range r.Seeds {
		if t, ok := x.refresh[s.Token]; ok {
			x.grantCR[t.grant] = s.Grant
		}
	}
	for _, ex := range r.Ledger {
		x.exchanges[ex.ID] = ex
	}
	for _, o := range r.Observations {
		if !o.Deleted && o.Refresh != "" {
			x.stored[o.Refresh] = true
		}
	}
	x.silent, x.givenUp = silentLosses(r, x), givenUp(r, x)
	return x
}

// crOfToken names the CDUserGrant a refresh token belongs to.
func (x *index) crOfToken(hash string) string {
	return x.grantCR[x.refresh[hash].grant]
}

// Check judges a run.
func Check(rec *Record) Result {
	r := *rec
	r.Observations = append([]Observation(nil), rec.Observations...)
	sort.SliceStable(r.Observations, func(i, j int) bool { return r.Observations[i].At.Before(r.Observations[j].At) })
	return check(&r)
}

func check(r *Record) Result {
	x := newIndex(r)
	res := Result{ExpiredByCause: map[string]int{}, WorstSteady: time.Duration(1<<62 - 1), Requests: len(r.Ledger)}
	for _, e := range r.Journal {
		if e.GrantType == "refresh_token" {
			res.Presentations++
			if e.Consumed {
				res.Rotations++
			}
			if e.Reused {
				res.Replays++
			}
		}
	}
	res.Violations = append(res.Violations, checkPresentations(r, x)...)
	lost, v := checkLosses(r, x)
	res.Lost = lost
	res.Violations = append(res.Violations, v...)
	res.Violations = append(res.Violations, checkFinal(r, x)...)
	v, res.DeletedMidRotation = checkDeletedMidRotation(r, x, lost)
	res.Violations = append(res.Violations, v...)
	res.Violations = append(res.Violations, checkOrder(r, x)...)
	res.Violations = append(res.Violations, checkFreshness(r, x, &res)...)
	res.Handovers = handovers(r.Timeline)
	res.Recoveries, res.Unrecovered = recoveries(r, x, newJudge(r, x))
	sort.SliceStable(res.Violations, func(i, j int) bool { return res.Violations[i].At.Before(res.Violations[j].At) })
	return res
}

// checkPresentations: a refresh token reaches the sandbox once, or twice when its first
// answer was lost (DESIGN §6.5's one retry), never more.
func checkPresentations(r *Record, x *index) []Violation {
	var out []Violation
	for hash, ps := range x.presentations {
		if len(ps) < 2 {
			continue
		}
		first, cr := ps[0], x.crOfToken(hash)
		switch {
		case len(ps) > 2:
			out = append(out, Violation{InvPresentedTwice, cr, ps[2].Time, fmt.Sprintf("token %s presented %d times (journal seq %s)", short(hash), len(ps), seqs(ps))})
		case !first.Consumed:
			out = append(out, Violation{InvPresentedTwice, cr, ps[1].Time, fmt.Sprintf("token %s presented again after the sandbox refused it (%s, journal seq %s)", short(hash), first.Error, seqs(ps))})
		case x.stored[first.IssuedRefresh]:
			out = append(out, Violation{InvPresentedTwice, cr, ps[1].Time, fmt.Sprintf("token %s presented again although its successor %s had been stored (journal seq %s)", short(hash), short(first.IssuedRefresh), seqs(ps))})
		}
	}
	return out
}

// Loss causes: the first four, and CauseHeldOutage, are losses no protocol can avoid (the
// answer never reached the operator, the process holding it was SIGKILLed before it
// could store it, or the API server was down for as long as the token may be held).
const (
	CauseDropped     = "answer dropped by the proxy after the sandbox consumed the token"
	CauseLate        = "answer held by the proxy past the client's timeout after consumption"
	CauseLostOnWay   = "answer lost on the way, not injected (client gone before it came)"
	CauseKilledAsked = "manager SIGKILLed while its request was in flight, after the sandbox consumed the token"
	CauseKilled      = "manager SIGKILLed after the answer arrived, before storing the new token"
	CauseKilledLate  = "manager SIGKILLed long after the answer arrived, having held it unstored while the API server ran"
	CauseTerminated  = "manager SIGTERMed mid-rotation exited without storing the new token (DESIGN §6.4)"
	CauseExited      = "manager exited on its own holding an answer it had not stored (DESIGN §6.3)"
	CauseHeldOutage  = "answer held through an API-server outage longer than the in-flight timeout: nowhere to store it"
	CauseNeverStored = "answer delivered to a running manager, new token never stored"
	CauseNoProxy     = "token reached the sandbox without passing the proxy"
	CauseReplay      = "a token of the session was presented again after it had been refused"
	// CauseGivenUp is a token the operator stopped sending after two attempts without an
	// answer (DESIGN §6.5), although the sandbox never consumed it: from the operator's
	// side a request that never arrived cannot be told from one whose answer was lost.
	// Excused when each counted attempt is explained by an injected fault.
	CauseGivenUp = "given up after two attempts without an answer (DESIGN §6.5), the token never consumed"
)

// lossCause says why the answer to a consumed refresh was never stored.
func lossCause(r *Record, x *index, first cdsandbox.JournalEntry) (cause, detail string, excused bool) {
	ex, ok := x.exchanges[first.RequestID]
	if !ok {
		return CauseNoProxy, "", false
	}
	if ex.lostAnswer() {
		switch ex.Outcome {
		case OutcomeDropped:
			return CauseDropped, ex.ID, true
		case OutcomeLate:
			return CauseLate, ex.ID, true
		}
		// The client hung up before the answer: a SIGKILL of the sender while the
		// request was in flight is the injected cause; otherwise it gave up on its own.
		if p, ok := r.Timeline.proc(ex.PID); ok && p.Cause == ExitSIGKILL && !p.Signaled.Before(ex.Start) && !p.Signaled.After(ex.End) {
			return CauseKilledAsked, fmt.Sprintf("%s: replica %s pid %d killed %s after sending", ex.ID, p.Replica, p.PID, p.Signaled.Sub(ex.Start).Round(time.Millisecond)), true
		}
		return CauseLostOnWay, ex.ID + ": " + string(ex.Outcome), true
	}
	p, ok := r.Timeline.proc(ex.PID)
	if !ok {
		// The socket's owner could not be told (it may have been dying): only the
		// leader rotates, so it was the process that held the lease then.
		p, ok = r.Timeline.leaderAt(ex.Start)
	}
	switch {
	case !ok:
		return CauseNeverStored, fmt.Sprintf("%s: to an unidentified process while no leader ran", ex.ID), false
	case p.Cause == ExitSIGKILL && !p.Exited.Before(ex.Start):
		return killedHolding(r, ex, p)
	case p.Cause == ExitSIGTERM && !p.Exited.Before(ex.Start):
		return CauseTerminated, fmt.Sprintf("%s: replica %s pid %d, SIGTERM %s after the answer, exited %s after it", ex.ID, p.Replica, p.PID, p.Signaled.Sub(ex.End).Round(time.Millisecond), p.Exited.Sub(ex.End).Round(time.Millisecond)), false
	case p.Cause == ExitSelf && !p.Exited.Before(ex.Start) && r.Timeline.apiDownThroughout(ex.End, p.Exited):
		// The API server was down from the answer until the process gave the token up
		// at its holder deadline (the in-flight timeout, after which another process may
		// resend): no write could have landed.
		return CauseHeldOutage, fmt.Sprintf("%s: replica %s pid %d exited %s after the answer, the API server down throughout", ex.ID, p.Replica, p.PID, p.Exited.Sub(ex.End).Round(time.Millisecond)), true
	case p.Cause == ExitSelf && !p.Exited.Before(ex.Start):
		return CauseExited, fmt.Sprintf("%s: replica %s pid %d exited with code %d %s after the answer", ex.ID, p.Replica, p.PID, p.ExitCode, p.Exited.Sub(ex.End).Round(time.Millisecond)), false
	default:
		return CauseNeverStored, fmt.Sprintf("%s: replica %s pid %d", ex.ID, p.Replica, p.PID), false
	}
}

// killedHolding judges an answer never stored by the process it was delivered to, which
// was then SIGKILLed. The kill explains the loss only while the answer could not have
// been stored yet: within the in-flight timeout after the answer (a live manager stores
// its answer, or gives it up, by its holder deadline, which falls within the in-flight
// timeout of its mark, and the mark precedes the send), or with the API server down
// from the answer to the kill (nowhere to store it). A kill after that found a manager
// still holding an answer it should long have stored: the kill did not lose the token,
// the manager had.
func killedHolding(r *Record, ex Exchange, p ProcRecord) (cause, detail string, excused bool) {
	after := p.Signaled.Sub(ex.End)
	detail = fmt.Sprintf("%s: replica %s pid %d killed %s after the answer", ex.ID, p.Replica, p.PID, after.Round(time.Millisecond))
	switch {
	case after <= r.InFlight:
		return CauseKilled, detail, true
	case r.Timeline.apiDownThroughout(ex.End, p.Signaled):
		return CauseKilled, detail + ", the API server down throughout", true
	}
	return CauseKilledLate, fmt.Sprintf("%s, more than the in-flight timeout (%s) with the API server up for some of it", detail, r.InFlight), false
}

// checkLosses: every revoked grant, and every session whose newest refresh token the
// operator never received, is a lost session with a cause, reported by its CDUserGrant
// as RotationInterrupted; every RotationInterrupted has such a loss behind it.
func checkLosses(r *Record, x *index) ([]LostGrant, []Violation) {
	var lost []LostGrant
	var out []Violation
	revokedAt := map[string][]time.Time{} // CR -> revocations, in order
	add := func(l LostGrant) {
		lost = append(lost, l)
		if !l.Excused {
			out = append(out, Violation{InvLostGrant, l.Grant, l.At, joinDetail(l.Cause, l.Detail)})
		}
		revokedAt[l.Grant] = append(revokedAt[l.Grant], l.At)
	}
	seen := map[string]bool{}
	for _, e := range r.Journal {
		if !e.Reused || seen[e.Grant] {
			continue
		}
		seen[e.Grant] = true
		cr := x.grantCR[e.Grant]
		ps := x.presentations[e.Presented]
		cause, detail, excused, lostAt := CauseReplay, "", false, e.Time
		if len(ps) > 0 && ps[0].Consumed {
			cause, detail, excused = lossCause(r, x, ps[0])
			lostAt = ps[0].Time
		}
		add(LostGrant{Grant: cr, LostAt: lostAt, At: e.Time, Cause: cause, Detail: detail, Excused: excused})
	}
	for _, e := range x.silent {
		cause, detail, excused := lossCause(r, x, e)
		add(LostGrant{Grant: x.grantCR[e.Grant], LostAt: e.Time, At: e.Time, Cause: cause, Detail: detail, Excused: excused})
	}
	for _, g := range x.givenUp {
		add(LostGrant{Grant: g.cr, LostAt: g.at, At: g.at, Cause: CauseGivenUp, Detail: g.detail, Excused: g.explained})
	}
	for _, ts := range revokedAt {
		sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	}
	type revKey struct {
		cr string
		at time.Time
	}
	reported := map[revKey]time.Time{}
	episodes := map[string][]Episode{}
	for _, ep := range r.Episodes {
		episodes[ep.Grant] = append(episodes[ep.Grant], ep)
	}
	for _, cr := range r.Grants {
		revs, eps := revokedAt[cr], episodes[cr]
		if f, ok := r.Final[cr]; ok && f.Reauth && (len(eps) == 0 || eps[len(eps)-1].At.Before(lastOr(revs))) {
			eps = append(eps, Episode{Grant: cr, At: r.End, Reason: f.ReauthReason})
		}
		for i, ep := range eps {
			if i < len(revs) {
				reported[revKey{cr, revs[i]}] = ep.At
			}
			switch {
			case i >= len(revs) || revs[i].After(ep.At):
				out = append(out, Violation{InvUnprovenLoss, cr, ep.At, fmt.Sprintf("reason %s, but the sandbox shows no revoked session of this grant before it", ep.Reason)})
			case ep.Reason != cdv1.RotationInterruptedReason && !(ep.Reason == cdv1.RefreshTokenMissingReason && deletedMidRotation(r, cr, ep.At)):
				out = append(out, Violation{InvUnreported, cr, ep.At, fmt.Sprintf("reason %s, want %s", ep.Reason, cdv1.RotationInterruptedReason)})
			}
		}
		for i := len(eps); i < len(revs); i++ {
			out = append(out, Violation{InvUnreported, cr, revs[i], "the sandbox revoked the session, and the CDUserGrant never said ReauthorizationRequired"})
		}
	}
	for i := range lost {
		lost[i].Reported = reported[revKey{lost[i].Grant, lost[i].At}]
	}
	return lost, out
}

// deletedMidRotation reports whether the harness deleted cr's refresh-token Secret while
// a refresh was out, and the Secret was still gone at t. A session lost with the answer
// to that refresh leaves the operator no Secret and no token: RefreshTokenMissing is as
// true a report of the loss as RotationInterrupted.
func deletedMidRotation(r *Record, cr string, t time.Time) bool {
	var deleted time.Time
	for _, d := range r.Timeline.Disturbances {
		if d.Grant == cr && d.What == RefreshDeletedMidRotation && d.At.Before(t) {
			deleted = d.At
		}
	}
	if deleted.IsZero() {
		return false
	}
	// A watch started afresh after an outage never sees a deletion it missed: absent any
	// later state, the Secret is gone.
	gone := true
	for _, o := range r.Observations {
		if o.Secret == RefreshSecret(cr) && o.At.After(deleted) && o.At.Before(t) {
			gone = o.Deleted
		}
	}
	return gone
}

// checkDeletedMidRotation: a grant whose refresh-token Secret was deleted while its
// refresh was out keeps its session. The operator creates the Secret again with the new
// token, so the grant ends Ready with the newest token the sandbox issued it in the
// Secret, unless the session was lost after all, from the refresh on, to a cause
// checkLosses excuses (a lost answer, a timely kill). It returns how many deletions
// there were.
func checkDeletedMidRotation(r *Record, x *index, lost []LostGrant) ([]Violation, int) {
	var out []Violation
	last := lastObservations(r.Observations)
	n := 0
	for _, d := range r.Timeline.Disturbances {
		if d.What != RefreshDeletedMidRotation {
			continue
		}
		n++
		cr, from, stored := d.Grant, d.At, true
		for _, ex := range r.Ledger {
			if ex.Fault == string(DeleteRefreshMid) && !ex.Start.After(d.At) && !ex.End.Before(d.At) {
				var v Violation
				from = ex.Start
				if v, stored = storedAgain(r, x, d, ex); !stored {
					out = append(out, v)
				}
			}
		}
		if !stored || excusedLossSince(lost, cr, from) {
			continue
		}
		what := fmt.Sprintf("Secret %s deleted at %s while its refresh was out, no session lost since to an injected cause", RefreshSecret(cr), d.At.Format("15:04:05.000"))
		f, rt := r.Final[cr], last[RefreshSecret(cr)]
		newest, seq := newestRefresh(r, x, cr)
		switch {
		case !f.Ready || f.Reauth:
			out = append(out, Violation{InvNotRecreated, cr, r.End, fmt.Sprintf("%s, and at the end Ready=%t (%s), ReauthorizationRequired=%t (%s)", what, f.Ready, f.ReadyReason, f.Reauth, f.ReauthReason)})
		case rt.Deleted || rt.Secret == "":
			out = append(out, Violation{InvNotRecreated, cr, r.End, what + ", and at the end the Secret is gone"})
		case rt.Refresh != newest:
			out = append(out, Violation{InvNotRecreated, cr, r.End, fmt.Sprintf("%s, and at the end the Secret holds token %s, not the newest the sandbox issued (%s, journal seq %d)", what, short(rt.Refresh), short(newest), seq)})
		}
	}
	return out, n
}

// answerToStore is how long a process that has an answer may take to store its new
// token with the API server up: a read and a create, tens of milliseconds here, so ample
// on a loaded machine.
const answerToStore = time.Second

// storedAgain: the answer to the refresh during which the Secret was deleted, when it
// reached the operator, is stored (the Secret created again with its new token), unless
// the process that had it was SIGKILLed before it could. The deletion landed, and the
// harness deletes only with the API server up for a while, so the kill must come within
// answerToStore of the answer. (A kill that late
// is otherwise excused up to the in-flight timeout, which covers a store retried through
// an outage; here it would excuse an operator that does not create the Secret again and
// holds the token until something kills it.)
func storedAgain(r *Record, x *index, d Disturbance, ex Exchange) (Violation, bool) {
	if ex.Outcome != OutcomeDelivered && ex.Outcome != OutcomeDeliveredLate {
		return Violation{}, true // the answer never reached the operator: checkLosses judges the loss
	}
	issued := ""
	for _, e := range r.Journal {
		if e.RequestID == ex.ID {
			issued = e.IssuedRefresh
		}
	}
	if issued == "" || x.stored[issued] {
		return Violation{}, true
	}
	what := fmt.Sprintf("%s: Secret %s deleted at %s, the answer delivered at %s, and its new token %s never stored", ex.ID, RefreshSecret(d.Grant), d.At.Format("15:04:05.000"), ex.End.Format("15:04:05.000"), short(issued))
	p, ok := r.Timeline.proc(ex.PID)
	if !ok {
		p, ok = r.Timeline.leaderAt(ex.Start)
	}
	switch {
	case !ok:
		return Violation{InvNotRecreated, d.Grant, ex.End, what}, false
	case p.Cause == ExitSIGKILL && !p.Signaled.After(ex.End.Add(answerToStore)):
		return Violation{}, true
	case p.Cause == ExitRunning:
		return Violation{InvNotRecreated, d.Grant, ex.End, fmt.Sprintf("%s by replica %s pid %d", what, p.Replica, p.PID)}, false
	}
	at := p.Signaled
	if p.Cause == ExitSelf {
		at = p.Exited
	}
	return Violation{InvNotRecreated, d.Grant, ex.End, fmt.Sprintf("%s by replica %s pid %d (%s %s after the answer)", what, p.Replica, p.PID, p.Cause, at.Sub(ex.End).Round(time.Millisecond))}, false
}

// excusedLossSince reports whether a session of cr was lost to an injected cause at or
// after from.
func excusedLossSince(lost []LostGrant, cr string, from time.Time) bool {
	for _, l := range lost {
		if l.Grant == cr && l.Excused && !l.LostAt.Before(from) {
			return true
		}
	}
	return false
}

// newestRefresh is the last refresh token the sandbox issued to any session of cr.
func newestRefresh(r *Record, x *index, cr string) (string, int64) {
	hash, seq := "", int64(0)
	for _, e := range r.Journal {
		if e.IssuedRefresh != "" && x.grantCR[e.Grant] == cr && e.Seq > seq {
			hash, seq = e.IssuedRefresh, e.Seq
		}
	}
	return hash, seq
}

// silentLosses are the sessions lost without a replay: the token's one presentation at
// the sandbox consumed it, and its successor was never stored nor presented. That is the
// operator's resend (the first send never reached the sandbox) whose answer was lost
// too: it gives up rather than send a third time, so nothing is revoked, but the session
// is gone all the same.
func silentLosses(r *Record, x *index) []cdsandbox.JournalEntry {
	var out []cdsandbox.JournalEntry
	for _, e := range r.Journal {
		if e.GrantType != "refresh_token" || !e.Consumed || e.IssuedRefresh == "" || len(x.presentations[e.Presented]) != 1 {
			continue
		}
		if !x.stored[e.IssuedRefresh] && len(x.presentations[e.IssuedRefresh]) == 0 {
			out = append(out, e)
		}
	}
	return out
}

// abandonment is a refresh token the operator gave up on without the sandbox ever
// consuming it.
type abandonment struct {
	cr        string
	from      time.Time // the write that counted the first attempt: no token since
	at        time.Time // the write that counted the second attempt
	detail    string
	explained bool
}

// givenUp finds the refresh tokens whose Secret last showed them marked with two
// attempts (the operator sends no third) and that the sandbox never consumed, and
// explains each counted attempt: a send whose answer never came (the proxy held or
// dropped it), or a process SIGKILLed between writing its mark and sending.
func givenUp(r *Record, x *index) []abandonment {
	type state struct {
		token    string
		attempts int
		marks    [3]time.Time // the last write that counted attempt 1 and 2
		// putBack is when the count last went down (an answer that did not spend the
		// token, a 429 or a 503, puts the mark back, DESIGN §6.5), and since[k] that time
		// as it was when attempt k was counted: sends before it were answered, and are
		// no counted attempt's.
		putBack time.Time
		since   [3]time.Time
	}
	var out []abandonment
	flush := func(secret string, st state) {
		if st.attempts < 2 || st.token == "" || x.consumed[st.token] {
			return
		}
		cr := grantOf(secret)
		var parts []string
		explained := true
		// The watch sees a mark a little after it lands (long after, when it lists again
		// after an outage), and the send follows the write at once, so sends are matched
		// to attempts in order: the first attempt's is the first send from shortly before
		// its mark until shortly before the second mark (a resend comes seconds later, after
		// a timeout and a backoff or hold); the second's is the next one.
		from := st.marks[1].Add(-markToSend)
		for k := 1; k <= 2; k++ {
			until := r.End
			if k == 1 {
				until = st.marks[2].Add(-markToSend)
			}
			if st.since[k].After(from) {
				from = st.since[k]
			}
			why, sent, ok := explainAttempt(r, st.token, st.marks[k], from, until)
			explained = explained && ok
			parts = append(parts, fmt.Sprintf("attempt %d: %s", k, why))
			if !sent.IsZero() {
				from = sent.Add(time.Nanosecond) // the resend is another exchange
			}
		}
		out = append(out, abandonment{cr: cr, from: st.marks[1], at: st.marks[2], detail: strings.Join(parts, "; "), explained: explained})
	}
	states := map[string]state{}
	for _, o := range r.Observations {
		if o.Secret != RefreshSecret(grantOf(o.Secret)) {
			continue
		}
		st := states[o.Secret]
		if o.Deleted || o.Refresh != st.token {
			flush(o.Secret, st)
			st = state{token: o.Refresh}
			if o.Deleted {
				st.token = ""
			}
		}
		if o.Attempts > st.attempts && o.Attempts <= 2 {
			st.marks[o.Attempts] = o.At
			st.since[o.Attempts] = st.putBack
		}
		if o.Attempts < st.attempts {
			st.putBack = o.At
		}
		st.attempts = o.Attempts
		states[o.Secret] = st
	}
	for secret, st := range states {
		flush(secret, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

// markToSend is how long after its mark write a process's send of the token may reach
// the proxy (the write's answer, the dial) and still count as that attempt's.
const markToSend = 2 * time.Second

// explainAttempt says what became of the attempt counted by the mark seen at marked:
// its send is the first of the token at the proxy in [from, until). It returns when that
// send started (zero when none did) and whether an injected fault explains why no answer
// arrived.
func explainAttempt(r *Record, token string, marked, from, until time.Time) (string, time.Time, bool) {
	if marked.IsZero() {
		return "its mark was never seen", time.Time{}, false
	}
	var send *Exchange
	for i, ex := range r.Ledger {
		if ex.Presented == token && !ex.Start.Before(from) && ex.Start.Before(until) && (send == nil || ex.Start.Before(send.Start)) {
			send = &r.Ledger[i]
		}
	}
	if send != nil {
		switch send.Outcome {
		case OutcomeNotForwarded, OutcomeLate, OutcomeDropped, OutcomeClientGone:
			return fmt.Sprintf("%s %s", send.ID, send.Outcome), send.Start, true
		}
		return fmt.Sprintf("%s %s with status %d, yet counted as unanswered", send.ID, send.Outcome, send.Status), send.Start, false
	}
	// No send of it reached the proxy: the process that wrote the mark must have been
	// SIGKILLed before it could send (a SIGTERMed one sends what it marked, DESIGN §6.4).
	// The mark is seen when the write lands, which may be just after the kill.
	for _, p := range r.Timeline.Procs {
		if p.Cause != ExitSIGKILL || p.LeaderAt.IsZero() || p.LeaderAt.After(marked) {
			continue
		}
		if p.Signaled.After(marked.Add(-markToSend)) && p.Signaled.Before(marked.Add(markToSend)) {
			return fmt.Sprintf("replica %s pid %d %s %s after its mark was seen, before sending", p.Replica, p.PID, p.Cause, p.Signaled.Sub(marked).Round(time.Millisecond)), time.Time{}, true
		}
	}
	return fmt.Sprintf("marked at %s, and neither a send without an answer nor a killed process explains it", marked.Format("15:04:05.000")), time.Time{}, false
}

func lastOr(ts []time.Time) time.Time {
	if len(ts) == 0 {
		return time.Time{}
	}
	return ts[len(ts)-1]
}

// checkFinal: every grant ends Ready with a live session and a fresh token, or says
// ReauthorizationRequired (which checkLosses holds to a proven loss).
func checkFinal(r *Record, x *index) []Violation {
	var out []Violation
	last := lastObservations(r.Observations)
	revoked := map[string]bool{}
	for _, e := range r.Journal {
		if e.Revoked {
			revoked[e.Grant] = true
		}
	}
	for _, cr := range r.Grants {
		f, ok := r.Final[cr]
		switch {
		case !ok:
			out = append(out, Violation{InvFinal, cr, r.End, "the CDUserGrant could not be read at the end"})
		case f.Reauth:
		case !f.Ready:
			out = append(out, Violation{InvFinal, cr, r.End, fmt.Sprintf("Ready=False (%s) and no ReauthorizationRequired", f.ReadyReason)})
		default:
			rt, at := last[RefreshSecret(cr)], last[OutputSecret(cr)]
			info, known := x.refresh[rt.Refresh]
			switch {
			case !known:
				out = append(out, Violation{InvFinal, cr, r.End, "Ready, but the refresh-token Secret holds no token the sandbox issued"})
			case x.consumed[rt.Refresh] || revoked[info.grant]:
				out = append(out, Violation{InvFinal, cr, r.End, "Ready, but the stored refresh token is spent or its session revoked"})
			}
			if a, ok := x.access[at.Access]; !ok || at.Deleted || !a.expires.After(r.End) {
				out = append(out, Violation{InvFinal, cr, r.End, "Ready, but the output Secret holds no unexpired access token"})
			}
		}
	}
	return out
}

func lastObservations(obs []Observation) map[string]Observation {
	last := map[string]Observation{}
	for _, o := range obs {
		last[o.Secret] = o
	}
	return last
}

// checkOrder: no Secret ever holds a token older than one it held before. Tokens are
// ordered by when the sandbox issued them.
func checkOrder(r *Record, x *index) []Violation {
	var out []Violation
	newest := map[string]int64{}
	unknown := map[string]bool{}
	for _, cr := range r.Grants {
		for _, name := range []string{RefreshSecret(cr), OutputSecret(cr)} {
			newest[name] = 0
		}
	}
	for _, o := range r.Observations {
		prev, ours := newest[o.Secret]
		if !ours || o.Deleted {
			continue
		}
		hash, seq, known := o.Refresh, int64(0), false
		if o.Secret == OutputSecret(grantOf(o.Secret)) {
			hash = o.Access
			a, ok := x.access[hash]
			seq, known = a.seq, ok
		} else {
			t, ok := x.refresh[hash]
			seq, known = t.seq, ok
		}
		switch {
		case hash == "" || r.Junk[hash]:
		case !known:
			if !unknown[hash] {
				unknown[hash] = true
				out = append(out, Violation{InvUnknownToken, grantOf(o.Secret), o.At, fmt.Sprintf("Secret %s holds token %s", o.Secret, short(hash))})
			}
		case seq < prev:
			out = append(out, Violation{InvOlderToken, grantOf(o.Secret), o.At, fmt.Sprintf("Secret %s went from the token issued at journal seq %d back to the one of seq %d", o.Secret, prev, seq)})
		default:
			newest[o.Secret] = seq
		}
	}
	return out
}

// grantOf names the CDUserGrant a Secret of the suite belongs to.
func grantOf(secret string) string {
	for _, suffix := range []string{"-refresh", "-token"} {
		if n := len(secret) - len(suffix); n > 0 && secret[n:] == suffix {
			return secret[:n]
		}
	}
	return secret
}

// judge knows what disturbed each grant, to tell whether it could be expected fresh.
type judge struct {
	s     Snapshot
	dist  map[string][]judged
	lost  map[string][]Interval // from a revoked session to the customer's next login
	grace time.Duration
}

// judged is a disturbance, and whether the harness itself made it (a hand edit, a new
// login) rather than a fault the operator met.
type judged struct {
	Disturbance
	byHarness bool
}

// newJudge adds what the ledger and the journal say to the timeline's own disturbances:
// faults on a grant's requests, and revoked sessions.
func newJudge(r *Record, x *index) judge {
	j := judge{s: r.Timeline, dist: map[string][]judged{}, lost: map[string][]Interval{}, grace: r.Grace}
	for _, d := range r.Timeline.Disturbances {
		j.dist[d.Grant] = append(j.dist[d.Grant], judged{d, true})
	}
	for _, ex := range r.Ledger {
		if ex.Fault != "" {
			d := Disturbance{Grant: x.crOfToken(ex.Presented), At: ex.Start, What: ex.Fault}
			j.dist[d.Grant] = append(j.dist[d.Grant], judged{d, false})
		}
	}
	for _, e := range r.Journal {
		if !e.Reused {
			continue
		}
		cr := x.grantCR[e.Grant]
		// The session was doomed from the moment the answer to its consumed token was
		// lost; the replay only shows it.
		lost := Interval{From: e.Time, To: nextSeed(r, cr, e.Time)}
		if ps := x.presentations[e.Presented]; len(ps) > 0 && ps[0].Consumed {
			lost.From = ps[0].Time
		}
		j.lost[cr] = append(j.lost[cr], lost)
	}
	for _, e := range x.silent {
		cr := x.grantCR[e.Grant]
		j.lost[cr] = append(j.lost[cr], Interval{From: e.Time, To: nextSeed(r, cr, e.Time)})
	}
	for _, g := range x.givenUp {
		j.lost[g.cr] = append(j.lost[g.cr], Interval{From: g.from, To: nextSeed(r, g.cr, g.at)})
	}
	return j
}

// nextSeed is when the customer of cr logged in again after t (zero if never).
func nextSeed(r *Record, cr string, t time.Time) time.Time {
	for _, s := range r.Seeds {
		if s.Grant == cr && s.At.After(t) {
			return s.At
		}
	}
	return time.Time{}
}

// MachinePaused is why a grant was not expected fresh while, or within the grace after,
// the whole machine stood still (watchPauses).
const MachinePaused = "machine paused (no process ran)"

// steady reports whether grant could be expected fresh at t: one leader held the lease,
// the API server and the machine ran, and nothing disturbed the grant during the grace
// before t. When not, it says why.
func (j judge) steady(grant string, t time.Time) (bool, string) {
	from := t.Add(-j.grace)
	switch {
	case !j.s.apiUpThroughout(from, t):
		return false, "kube-apiserver outage"
	case j.s.pausedWithin(from, t):
		return false, MachinePaused
	case !j.s.steadyLeader(from, t):
		return false, "no steady leader (handover)"
	}
	for _, l := range j.lost[grant] {
		if l.overlaps(from, t) {
			return false, "session lost, awaiting the customer's next login"
		}
	}
	for _, d := range j.dist[grant] {
		if !d.At.Before(from) && !d.At.After(t) {
			return false, d.What
		}
	}
	return true, ""
}

// firstSteady returns the first moment in [from, to) at which grant is steady, checked
// every 250 ms.
func (j judge) firstSteady(grant string, from, to time.Time) (time.Time, bool) {
	for t := from; t.Before(to); t = t.Add(250 * time.Millisecond) {
		if ok, _ := j.steady(grant, t); ok {
			return t, true
		}
	}
	return time.Time{}, false
}

// checkFreshness: while a leader runs steadily and nothing disturbs a grant, its output
// Secret never holds an expired access token, and a deleted or edited one is repaired.
func checkFreshness(r *Record, x *index, res *Result) []Violation {
	j := newJudge(r, x)
	var out []Violation
	for _, cr := range r.Grants {
		for _, span := range spans(r.Observations, OutputSecret(cr), r.From, r.End) {
			if v, ok := judgeSpan(r, x, j, cr, span, res); ok {
				out = append(out, v)
			}
		}
	}
	if res.WorstSteady == time.Duration(1<<62-1) {
		res.WorstSteady = 0
	}
	return out
}

// span is a stretch of time in which a Secret held one state.
type span struct {
	from, to time.Time
	obs      Observation
}

// spans cuts [from, end) into the states one Secret held, starting with the state it
// held at from.
func spans(obs []Observation, secret string, from, end time.Time) []span {
	var out []span
	var cur *span
	for _, o := range obs {
		if o.Secret != secret {
			continue
		}
		if o.At.Before(from) {
			cur = &span{from: from, obs: o}
			continue
		}
		if !o.At.Before(end) {
			break
		}
		if cur != nil {
			cur.to = o.At
			out = append(out, *cur)
		}
		cur = &span{from: o.At, obs: o}
	}
	if cur != nil {
		cur.to = end
		out = append(out, *cur)
	}
	return out
}

// judgeSpan checks one state of an output Secret and adds to the figures.
func judgeSpan(r *Record, x *index, j judge, cr string, sp span, res *Result) (Violation, bool) {
	a, known := x.access[sp.obs.Access]
	if sp.obs.Deleted || !known {
		if !sp.obs.Deleted && sp.obs.Access != "" && !r.Junk[sp.obs.Access] {
			return Violation{}, false // an unknown token: checkOrder reports it
		}
		what := "deleted"
		if !sp.obs.Deleted {
			what = "edited by hand"
		}
		if t, ok := j.firstSteady(cr, sp.from, sp.to); ok {
			return Violation{InvNotRepaired, cr, t, fmt.Sprintf("Secret %s %s at %s and still so at %s", OutputSecret(cr), what, sp.from.Format("15:04:05.000"), t.Format("15:04:05.000"))}, true
		}
		return Violation{}, false
	}
	left := a.expires.Sub(sp.to)
	if ok, _ := j.steady(cr, sp.to); ok && left < res.WorstSteady {
		res.WorstSteady, res.WorstSteadyGrant = left, cr
	}
	if left >= 0 {
		return Violation{}, false
	}
	expiredFrom := a.expires
	if expiredFrom.Before(sp.from) {
		expiredFrom = sp.from
	}
	past := sp.to.Sub(a.expires)
	if t, ok := j.firstSteady(cr, expiredFrom, sp.to); ok {
		if past > res.WorstPast {
			res.WorstPast, res.WorstPastGrant, res.WorstPastCause = past, cr, "steady leader"
		}
		return Violation{InvExpired, cr, t, fmt.Sprintf("the token in %s expired at %s and was still there at %s (replaced at %s)", OutputSecret(cr), a.expires.Format("15:04:05"), t.Format("15:04:05"), sp.to.Format("15:04:05"))}, true
	}
	_, cause := j.steady(cr, expiredFrom)
	res.ExpiredByCause[cause]++
	if past > res.WorstPast {
		res.WorstPast, res.WorstPastGrant, res.WorstPastCause = past, cr, cause
	}
	return Violation{}, false
}

func short(hash string) string {
	if len(hash) > 15 {
		return hash[7:15]
	}
	return hash
}

func seqs(ps []cdsandbox.JournalEntry) string {
	out := ""
	for i, p := range ps {
		if i > 0 {
			out += ","
		}
		out += fmt.Sprint(p.Seq)
	}
	return out
}
