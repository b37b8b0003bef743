package chaos

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"

	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
)

// inject carries out one event and records it on the timeline.
func (h *Harness) inject(ctx context.Context, ev Event) {
	in := Injection{Seq: ev.Seq, Kind: ev.Kind, At: time.Now(), Applied: true}
	// Recorded first: a queued fault's hook amends it when a request takes the fault.
	h.tl.injected(Injection{Seq: ev.Seq, Kind: ev.Kind, At: in.At, Applied: true})
	if err := h.carryOut(ctx, ev, &in); err != nil {
		in.Applied = false
		in.Detail = joinDetail(in.Detail, err.Error())
	}
	in.Done = time.Now()
	var final Injection
	h.tl.amend(ev.Seq, func(rec *Injection) {
		rec.Done, rec.Applied, rec.Ref = in.Done, in.Applied, in.Ref
		rec.Detail = joinDetail(in.Detail, rec.Detail)
		final = *rec
	})
	h.cfg.Logf("event %d/%d %s: %s", ev.Seq, h.cfg.Events, ev.Kind, describe(final))
}

// carryOut does what ev says; the slow faults hold past the manager's token-request timeout.
func (h *Harness) carryOut(ctx context.Context, ev Event, in *Injection) error {
	slow := h.cfg.TokenTimeout + 2*time.Second
	switch ev.Kind {
	case KillLeader, TermLeader:
		return h.killLeader(ctx, ev, in)
	case KillFollower, TermFollower:
		return h.killFollower(ctx, ev, in)
	case AnswerLost:
		return h.arm(ctx, ev, Fault{Mode: DropAnswer, Count: 1})
	case Burst500, Burst503:
		status := http.StatusInternalServerError
		if ev.Kind == Burst503 {
			status = http.StatusServiceUnavailable
		}
		in.Detail = fmt.Sprintf("%d requests", ev.Burst)
		return h.arm(ctx, ev, Fault{Mode: AnswerStatus, Status: status, Count: ev.Burst})
	case Burst429:
		in.Detail = fmt.Sprintf("%d requests, Retry-After %d", ev.Burst, ev.RetryAfter)
		return h.arm(ctx, ev, Fault{Mode: AnswerStatus, Status: http.StatusTooManyRequests, RetryAfter: strconv.Itoa(ev.RetryAfter), Count: ev.Burst})
	case SlowRequest:
		return h.arm(ctx, ev, Fault{Mode: HoldRequest, Delay: slow, Count: 1})
	case SlowAnswer:
		return h.arm(ctx, ev, Fault{Mode: HoldAnswer, Delay: slow, Count: 1})
	case APIOutage:
		return h.outage(ctx, in)
	case EditOutput, EditRefreshMD:
		return h.edit(ctx, ev, in)
	case DeleteRefreshMid:
		return h.deleteRefreshMidRotation(ctx, ev)
	}
	return fmt.Errorf("unknown kind %q", ev.Kind)
}

func describe(in Injection) string {
	s := in.Detail
	if !in.Applied {
		s = "NOT APPLIED " + s
	}
	return s
}

func joinDetail(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

func signalOf(k Kind) syscall.Signal {
	if k == KillLeader || k == KillFollower {
		return syscall.SIGKILL
	}
	return syscall.SIGTERM
}

// waitLeader waits for a process to hold the lease.
func (h *Harness) waitLeader(ctx context.Context, timeout time.Duration) (ProcRecord, error) {
	var p ProcRecord
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		var ok bool
		p, ok = h.tl.leader(time.Now())
		return ok, nil
	})
	if err != nil {
		return p, fmt.Errorf("no leader within %s", timeout)
	}
	return p, nil
}

func (h *Harness) replica(name string) *Replica {
	for _, r := range h.replicas {
		if r.Name == name {
			return r
		}
	}
	return nil
}

func (h *Harness) killLeader(ctx context.Context, ev Event, in *Injection) error {
	leader, err := h.waitLeader(ctx, 60*time.Second)
	if err != nil {
		return err
	}
	sig := signalOf(ev.Kind)
	in.Detail = fmt.Sprintf("replica %s pid %d", leader.Replica, leader.PID)
	in.Ref = time.Now()
	exitCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return h.replica(leader.Replica).Signal(exitCtx, leader.PID, sig)
}

func (h *Harness) killFollower(ctx context.Context, ev Event, in *Injection) error {
	var target ProcRecord
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
		leader, hasLeader := h.tl.leader(time.Now())
		for _, r := range h.replicas {
			if p, ok := r.Current(); ok && hasLeader && p.PID != leader.PID {
				target = p
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("no follower running")
	}
	in.Detail = fmt.Sprintf("replica %s pid %d", target.Replica, target.PID)
	exitCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return h.replica(target.Replica).Signal(exitCtx, target.PID, signalOf(ev.Kind))
}

// arm queues a proxy fault for the next token requests and waits a moment for them;
// a fault no request took yet stays queued (drainFaults settles its account at the end),
// so a lull in rotations does not stall the run.
func (h *Harness) arm(ctx context.Context, ev Event, f Fault) error {
	f.Label, f.Event = string(ev.Kind), ev.Seq
	used := h.proxy.Arm(f)
	h.mu.Lock()
	h.armed = append(h.armed, armedFault{event: ev.Seq, count: max(f.Count, 1), used: used})
	h.mu.Unlock()
	select {
	case <-used:
	case <-time.After(h.cfg.FaultWait):
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// armedFault is a proxy fault an event queued.
type armedFault struct {
	event, count int
	used         <-chan struct{}
}

// drainFaults waits (bounded) for the queued faults to be taken, drops the rest, and
// records on each event whether its fault applied.
func (h *Harness) drainFaults(ctx context.Context, timeout time.Duration) {
	h.mu.Lock()
	armed := append([]armedFault(nil), h.armed...)
	h.mu.Unlock()
	deadline := time.After(timeout)
	for _, a := range armed {
		select {
		case <-a.used:
		case <-deadline:
		case <-ctx.Done():
		}
	}
	left := h.proxy.Disarm()
	for _, a := range armed {
		n, ok := left[a.event]
		if !ok {
			continue
		}
		h.tl.amend(a.event, func(in *Injection) {
			if n == a.count {
				in.Applied = false
				in.Detail = joinDetail(in.Detail, "no token request came to fault")
			} else {
				in.Detail = joinDetail(in.Detail, fmt.Sprintf("%d of %d uses left", n, a.count))
			}
		})
	}
}

// outage stops the API server for the configured time and starts it again on the same
// etcd.
func (h *Harness) outage(ctx context.Context, in *Injection) error {
	t0 := time.Now()
	if err := h.cluster.StopAPIServer(ctx); err != nil {
		return err
	}
	stopped := time.Now()
	select {
	case <-time.After(h.cfg.Outage): // the outage itself
	case <-ctx.Done():
		return ctx.Err()
	}
	t1 := time.Now()
	if err := h.cluster.StartAPIServer(ctx); err != nil {
		h.fatal = err
		return err
	}
	in.Ref = time.Now()
	in.Detail = fmt.Sprintf("%s down (stopping took %s, starting %s)", in.Ref.Sub(t0).Round(100*time.Millisecond),
		stopped.Sub(t0).Round(100*time.Millisecond), in.Ref.Sub(t1).Round(100*time.Millisecond))
	h.watchSecrets(ctx)
	return nil
}

// edit changes a grant's Secret by hand: mid-rotation (while its token request waits at
// the proxy) or at once.
func (h *Harness) edit(ctx context.Context, ev Event, in *Injection) error {
	do := func(grant string) string {
		var what string
		var err error
		if ev.Kind == EditOutput {
			what, err = h.editOutput(ctx, grant, ev)
		} else {
			what, err = h.editRefresh(ctx, grant, ev)
		}
		if err != nil {
			return fmt.Sprintf("%s: %v", grant, err)
		}
		h.tl.disturbed(grant, what, time.Now())
		return grant + ": " + what
	}
	if !ev.MidRotation {
		in.Detail = "at once; " + do(h.grants[ev.Grant%len(h.grants)])
		return nil
	}
	in.Detail = "mid-rotation"
	hook := func(presented string) {
		var detail string
		if grant, err := h.grantOfToken(ctx, presented); err != nil {
			detail = err.Error()
		} else {
			detail = do(grant)
		}
		h.tl.amend(ev.Seq, func(in *Injection) { in.Detail = joinDetail(in.Detail, detail) })
	}
	return h.arm(ctx, ev, Fault{Mode: Intercept, Hook: hook, Count: 1})
}

// RefreshDeletedMidRotation is the disturbance a DeleteRefreshMid event records on the
// grant whose refresh-token Secret it deleted.
const RefreshDeletedMidRotation = "refresh-token Secret deleted while its refresh was out"

// deleteRefreshMidRotation deletes the refresh-token Secret of the grant whose refresh
// comes next, after the sandbox has answered it and before the operator has the answer:
// the proxy holds the answer until the deletion has landed. The operator must create the
// Secret again with the new token.
//
// A refresh that comes back without a new token, or around an outage, deletes nothing;
// the fault is then armed again on the next refresh, up to deleteTries refreshes in
// all, so that a short run (where each kind comes up about once) nearly always deletes
// one Secret instead of merely planning to.
func (h *Harness) deleteRefreshMidRotation(ctx context.Context, ev Event) error {
	for range deleteTries {
		done := make(chan bool, 1)
		hook := func(presented string, status int) {
			detail, deleted := h.deleteRefreshOf(ctx, presented, status)
			h.tl.amend(ev.Seq, func(in *Injection) { in.Detail = joinDetail(in.Detail, detail) })
			done <- deleted
		}
		if err := h.arm(ctx, ev, Fault{Mode: InterceptAnswer, AnswerHook: hook, Count: 1}); err != nil {
			return err
		}
		// The fault is taken when the refresh reaches the proxy, and the hook runs once
		// the sandbox has answered it. A fault no refresh took within FaultWait stays
		// armed for a later one (and no answer comes here in time): no second try then.
		select {
		case deleted := <-done:
			if deleted {
				return nil
			}
		case <-time.After(h.cfg.TokenTimeout):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// deleteTries bounds the refreshes one DeleteRefreshMid event intercepts.
const deleteTries = 3

// apiSettle is how long after an outage the API server counts as settled.
const apiSettle = 5 * time.Second

// deleteRefreshOf deletes the refresh-token Secret of the grant presented belongs to,
// when the sandbox answered with a new token: without one on the way the deletion would
// be one at rest, the session lost with the Secret.
func (h *Harness) deleteRefreshOf(ctx context.Context, presented string, status int) (detail string, deleted bool) {
	if status != http.StatusOK {
		return fmt.Sprintf("the sandbox answered %d: nothing deleted", status), false
	}
	// Around an outage the operator's store may fail for reasons of its own, and the
	// checker holds it to storing the answer at once: delete only with the API server
	// settled.
	if h.tl.apiBackWithin(time.Now(), apiSettle) {
		return "the API server is down or just back: nothing deleted", false
	}
	// The client waits meanwhile: the deletion must land well within its timeout, or the
	// answer is lost (a loss the checker excuses, and nothing learnt).
	ctx, cancel := context.WithTimeout(ctx, h.cfg.TokenTimeout/2)
	defer cancel()
	grant, err := h.grantOfToken(ctx, presented)
	if err != nil {
		return "nothing deleted: " + err.Error(), false
	}
	if err := h.k8s.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: RefreshSecret(grant)}}); err != nil {
		return fmt.Sprintf("%s: nothing deleted: %v", grant, err), false
	}
	h.tl.disturbed(grant, RefreshDeletedMidRotation, time.Now())
	return grant + ": " + RefreshDeletedMidRotation, true
}

// grantOfToken names the CDUserGrant whose session a refresh token belongs to.
func (h *Harness) grantOfToken(ctx context.Context, hash string) (string, error) {
	if err := h.sandbox.SyncJournal(ctx); err != nil {
		return "", err
	}
	grantOfSeed := map[string]string{}
	h.mu.Lock()
	for _, s := range h.seeds {
		grantOfSeed[s.Token] = s.Grant
	}
	h.mu.Unlock()
	session, cr := "", map[string]string{}
	for _, e := range h.sandbox.Journal() {
		if g, ok := grantOfSeed[e.IssuedRefresh]; ok {
			cr[e.Grant] = g
		}
		if e.IssuedRefresh == hash {
			session = e.Grant
		}
	}
	if g, ok := cr[session]; ok {
		return g, nil
	}
	return "", fmt.Errorf("token %s belongs to no grant of the suite", short(hash))
}

func (h *Harness) editOutput(ctx context.Context, grant string, ev Event) (string, error) {
	name := OutputSecret(grant)
	if ev.Delete {
		err := h.k8s.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name}})
		if apierrors.IsNotFound(err) {
			err = nil
		}
		return "output Secret deleted by hand", err
	}
	junk := fmt.Sprintf("chaos-edit-%d", ev.Seq)
	h.mu.Lock()
	h.junk[cdsandbox.TokenHash(junk)] = true
	h.mu.Unlock()
	return "output Secret's access_token edited by hand", h.updateSecret(ctx, name, func(s *corev1.Secret) {
		if s.Data == nil {
			s.Data = map[string][]byte{}
		}
		s.Data["access_token"] = []byte(junk)
	})
}

func (h *Harness) editRefresh(ctx context.Context, grant string, ev Event) (string, error) {
	value := strconv.Itoa(ev.Seq)
	switch ev.Variant {
	case 0:
		return "refresh-token Secret: extra key edited by hand", h.updateSecret(ctx, RefreshSecret(grant), func(s *corev1.Secret) {
			if s.Data == nil {
				s.Data = map[string][]byte{}
			}
			s.Data["note"] = []byte("edited by chaos event " + value)
		})
	case 1:
		return "refresh-token Secret: annotation edited by hand", h.updateSecret(ctx, RefreshSecret(grant), func(s *corev1.Secret) {
			metav1.SetMetaDataAnnotation(&s.ObjectMeta, touchedKey, value)
		})
	default:
		return "refresh-token Secret: label edited by hand", h.updateSecret(ctx, RefreshSecret(grant), func(s *corev1.Secret) {
			metav1.SetMetaDataLabel(&s.ObjectMeta, touchedKey, value)
		})
	}
}

// updateSecret reads a Secret, changes it and writes it back, reading again on a
// conflict so the operator's own marks are never overwritten.
func (h *Harness) updateSecret(ctx context.Context, name string, change func(*corev1.Secret)) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		s := &corev1.Secret{}
		if err := h.k8s.Get(ctx, types.NamespacedName{Namespace: Namespace, Name: name}, s); err != nil {
			return err
		}
		change(s)
		return h.k8s.Update(ctx, s)
	})
}
