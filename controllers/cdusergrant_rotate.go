package controllers

import (
	"context"
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/metrics"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// errGrantGone: a new refresh token had nowhere to go, its refresh-token Secret and its
// grant both deleted while it was out; it was revoked instead (grantGone), and the held
// result is dropped, never retried.
var errGrantGone = errors.New("the grant and its refresh-token Secret were deleted while the refresh was out")

// errDraining: the manager stopped and Drain has begun; no rotation begins any more.
var errDraining = errors.New("the manager is stopping: no rotation begins")

// rotate spends the stored refresh token once (DESIGN §6): mark it in flight, send it,
// then store what came back before anything else. From the mark on, the work runs on a
// context shutdown does not cancel: a rotation cut in half loses the customer.
func (r *CDUserGrantReconciler) rotate(ctx context.Context, grant *cdv1.CDUserGrant, a *attempt, d rotation.Send) (outcome, error) {
	// Counted before anything else: once the manager stopped, Drain waits for the
	// rotations counted and the process exits when it returns. One that began after
	// Drain looked would send the token with nobody left to store the answer.
	if !r.rotating.begin(a.stored.hash) {
		return nil, errDraining
	}
	defer r.rotating.end(a.stored.hash)
	// The turn in the token-request rate limit comes before the mark: the mark counts an
	// attempt, and a process stopped while it queued for its turn must not leave one
	// counted that never went out (two counted attempts end the customer's session).
	// Admit fails once ctx ended, with or without a rate limit: the manager stopped.
	ctx, err := tokenclient.Admit(ctx, r.Tokens)
	if err != nil {
		return nil, err // stopping, or the turn would come too late: nothing was marked
	}
	ctx = context.WithoutCancel(ctx)
	previous := rotation.ReadMark(a.stored.secret.Annotations)
	marked, err := r.writeMark(ctx, a.stored.secret, grant, d.Mark)
	if writeRefused(err) {
		// Refused on every pass until someone changes the Secret or the policy: said on
		// the grant, or it would stay Ready while its access token runs out.
		return markRefused{secret: a.stored.secret.Name, err: err}, nil
	}
	if err != nil {
		return nil, err // a conflict means someone changed the Secret: nothing was sent
	}
	now := r.Clock.Now()
	tok, err := metrics.Instrument(r.Tokens, kindGrant).Refresh(ctx, a.client.Endpoint, a.stored.value)
	o := rotation.Judge(tok, err, d.Resume)
	refresh := &heldRefresh{
		grant: grant.DeepCopy(), secret: client.ObjectKeyFromObject(marked), key: a.stored.key, sent: a.stored.value,
		marked: marked, deadline: d.Mark.Since.Add(r.holderTimeout() - 5*time.Second),
	}
	switch {
	case o.Verdict == rotation.Issued:
		// The token may come without a successor (the server does not rotate), or with
		// the very token sent (Okta without rotation echoes it): then the old one stays,
		// unspent, and only the mark goes.
		refresh.token = rotatedTo(tok.RefreshToken, a.stored.value)
		// Counted from before the request went out, as the access token's expiry is:
		// never later than the server's. Judged against the spent token's own life: a
		// provider that holds the session to a fixed end gives no more life than that.
		life, capped := rotation.NextRefreshLife(now, tok.RefreshLifetime, a.stored.life())
		refresh.life = life
		sched, clamp := rotation.PlanRefresh(now, tok.Lifetime, lifeSpan(life), capped, renewBefore(grant.Spec.RenewBefore), string(grant.UID))
		r.held.put(grant, &result{request: a.request, after: a.requestAfter(grant, refresh.session()), refresh: refresh, refreshLife: refresh.life, access: &issued{
			token: tok.AccessToken, tokenType: tok.TokenType, scopes: tok.Scopes, schedule: sched, clamp: clamp,
			fingerprint: secrets.GrantFingerprint(a.client), subject: jwtSubject(tok.AccessToken), rotated: true,
		}})
		return r.persist(ctx, grant)
	case rotatedTo(o.NewRefreshToken, a.stored.value) != "":
		// Unusable, but it carried a successor: the old token is spent, store the new.
		refresh.token = o.NewRefreshToken
		// Stored with it, as an issued answer's is: the retry that sends it, and a lost
		// answer's one resend, must come before it dies. Judged against the spent token's
		// life as an issued answer's is: refresh_expires_in 0 in a capped session's last
		// second is its end, not no limit.
		refresh.life, _ = rotation.NextRefreshLife(now, o.NewRefreshLifetime, a.stored.life())
		r.held.put(grant, &result{request: a.request, after: a.requestAfter(grant, refresh.session()), refresh: refresh, refreshLife: refresh.life, answer: &o})
		return r.persist(ctx, grant)
	case !o.MaySpend():
		// The server answered without spending the token: the mark goes back to what
		// it was, so the resend budget of an interrupted rotation is not used up.
		if err := r.restoreMark(ctx, marked, grant, previous); err != nil {
			return nil, err
		}
	}
	return answered{outcome: o, request: a.request, refreshLife: a.stored.life()}, nil
}

// lifeSpan is how long a refresh token with life lives, as stored (whole seconds, so
// refresh_expires_in itself when the answer gave one): the lifetime status words count
// from (refreshLifetimeOf); 0 when it has no known limit.
func lifeSpan(life rotation.Schedule) time.Duration {
	if life.ExpiresAt.IsZero() {
		return 0
	}
	return life.ExpiresAt.Sub(life.Issued)
}

// rotatedTo is the refresh token an answer carried in place of sent, or "" when it
// carried none or sent itself back: a provider that does not rotate may echo the token
// (Okta with rotation off), which is then still the live session, not a spent one to
// list (secrets.StoreSuccessor) and never send again.
func rotatedTo(answered, sent string) string {
	if answered == sent {
		return ""
	}
	return answered
}

// writeMark writes the in-flight mark m (or removes it, for the zero Mark) with a
// resourceVersion-guarded update and returns the Secret as written. The same write binds
// the Secret to grant: the first spend binds it before anything is sent, at no write of
// its own.
func (r *CDUserGrantReconciler) writeMark(ctx context.Context, s *corev1.Secret, grant *cdv1.CDUserGrant, m rotation.Mark) (*corev1.Secret, error) {
	s = s.DeepCopy()
	secrets.Bind(s, grant)
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	rotation.WriteMark(s.Annotations, m)
	if err := r.Update(ctx, s); err != nil {
		return nil, err
	}
	return s, nil
}

// persist stores a held result in order: the new refresh token first, then the access
// token (the status follows in Reconcile). The result stays held until each part landed.
func (r *CDUserGrantReconciler) persist(ctx context.Context, grant *cdv1.CDUserGrant) (outcome, error) {
	ctx = context.WithoutCancel(ctx)
	held, ok := r.held.get(grant.UID)
	if !ok {
		// Stored and dropped since this pass saw it held: by Drain at shutdown, or by
		// another grant's pass that took this one for gone (storeInherited).
		return nil, nil
	}
	if held.refresh != nil {
		err := r.storeRefresh(ctx, held.refresh, r.Clock.Now().Add(r.persistTimeout()))
		if errors.Is(err, errGrantGone) {
			r.held.drop(grant.UID)
			return nil, nil // nothing left to report on: the grant is gone
		}
		if err != nil {
			return writeFailed{err: err, request: held.request, holding: true, refreshLife: held.refreshLife}, nil
		}
		stored := *held
		stored.refresh = nil
		held = &stored
		r.held.put(grant, held)
	}
	if held.access == nil {
		// The refresh token came with an unusable answer: report that answer, in this
		// pass or in a later one that stored the token after a failed write. Ending the
		// pass without an outcome would leave SecretWriteFailed standing and nothing
		// scheduled.
		r.held.drop(grant.UID)
		return answered{outcome: *held.answer, request: held.request, next: held.after, refreshLife: held.refreshLife}, nil
	}
	// The new refresh token, if any, is stored (above): only the access token goes.
	if expired, ok := expiredBeforeStored(held, held.after, r.Clock.Now()); ok {
		r.held.drop(grant.UID)
		return expired, nil
	}
	if err := writeOutput(ctx, r.Client, r.APIReader, grant, cdv1.GroupVersion.WithKind("CDUserGrant"), grant.Status.SecretName, grant.Spec.SecretTemplate, held.access); err != nil {
		if isTransientAPIError(err) {
			return nil, err
		}
		if refusedAsTerminating(err) {
			// The new refresh token, if any, is stored (above): only the access token goes.
			r.terminating.mark(grant.Namespace, r.Clock.Now(), r.Clock.Now().Add(terminatingRemembered))
			r.held.drop(grant.UID)
			ctrl.LoggerFrom(ctx).Info("Dropped an access token: its output Secret cannot be created in a namespace being deleted", "secret", grant.Status.SecretName)
			return nil, nil
		}
		return writeFailed{err: err, request: held.request, refreshLife: held.refreshLife}, nil
	}
	r.held.drop(grant.UID)
	return stored{token: held.access}, nil
}

// storeRefresh stores a new refresh token with resourceVersion-guarded updates,
// retrying through an API server outage until it lands or until (then the token stays
// held and the next attempt goes on). A refusal of the write itself (forbidden, invalid,
// too large) is returned at once. The spent token is never restored.
func (r *CDUserGrantReconciler) storeRefresh(ctx context.Context, h *heldRefresh, until time.Time) error {
	if h.deadline.Before(until) {
		until = h.deadline
	}
	return r.retryWrite(ctx, h.marked, until, r.storing(ctx, h))
}

// storing is the write of storeRefresh, for retryWrite or a retrier.
func (r *CDUserGrantReconciler) storing(ctx context.Context, h *heldRefresh) func(known *corev1.Secret) error {
	return func(known *corev1.Secret) error { return r.tryStoreRefresh(ctx, h, known) }
}

// restoreMark puts the in-flight mark on marked (the refresh-token Secret as this pass
// wrote it) back to previous. A write to the Secret while the request was out (a label,
// an annotation) is no reason to leave the mark counting a presentation that was
// answered: two such marks give a live token up. So a conflict reads the Secret again,
// and an outage is retried, as for storing a new token. A Secret whose mark is no longer
// this pass's (a new login was stored meanwhile, or it is gone) is left as it is.
func (r *CDUserGrantReconciler) restoreMark(ctx context.Context, marked *corev1.Secret, grant *cdv1.CDUserGrant, previous rotation.Mark) error {
	placed := rotation.ReadMark(marked.Annotations)
	return r.retryWrite(ctx, marked, r.Clock.Now().Add(r.persistTimeout()), func(known *corev1.Secret) error {
		s := known
		if s == nil {
			s = &corev1.Secret{}
			if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(marked), s); err != nil {
				return client.IgnoreNotFound(err)
			}
		}
		if rotation.ReadMark(s.Annotations) != placed {
			return nil
		}
		_, err := r.writeMark(ctx, s, grant, previous)
		return err
	})
}

// retryWrite runs try, first on known (the Secret as this process last wrote it), then
// on a fresh read (nil), until it succeeds, fails for good, until passes, or ctx ends: a
// conflict, or the Secret deleted or created under the write, is retried at once on a
// fresh read (retrier.readAgain), an outage after a backoff. A caller that must not be cut
// short by a shutdown passes a context.WithoutCancel context; once ctx has ended every
// try would fail at once (its API calls carry ctx), so retrying on is only time lost.
func (r *CDUserGrantReconciler) retryWrite(ctx context.Context, known *corev1.Secret, until time.Time, try func(known *corev1.Secret) error) error {
	w := retrier{known: known, try: try}
	backoff := newWriteBackoff()
	for {
		again, err := w.attempt(r.Clock, until)
		if !again || !backoff.wait(ctx, r.Clock) {
			return err
		}
	}
}

// retrier is one write retried through an API server outage: first on the Secret as
// this process last wrote it, then on fresh reads.
type retrier struct {
	known *corev1.Secret
	try   func(known *corev1.Secret) error
}

// attempt runs try, again at once on a conflict, and says whether an outage leaves it
// worth trying again after a backoff: not once it succeeded, failed for good, or until
// passed.
func (w *retrier) attempt(clock clock.PassiveClock, until time.Time) (again bool, err error) {
	for {
		err = w.try(w.known)
		if err == nil {
			return false, nil
		}
		now := w.readAgain(err)
		// errGrantGone is no API answer, which isTransientAPIError takes for a failed
		// connection; but it is settled for good (the token was revoked).
		if !now && (!isTransientAPIError(err) || errors.Is(err, errGrantGone)) {
			return false, err
		}
		w.known = nil // read it again
		if !clock.Now().Before(until) {
			return false, err
		}
		if !now {
			return true, err
		}
	}
}

// readAgain reports whether err is the Secret having changed under the write, which a
// fresh read settles at once: a conflict; the Secret as this process knew it deleted
// (the fresh read finds it gone, or created again by someone else, and the try judges
// that as for any Secret read); or a Secret created by someone else between the read
// that found it gone and the create.
func (w *retrier) readAgain(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || (w.known != nil && apierrors.IsNotFound(err))
}

// writeBackoff is the wait between tries of a write through an outage.
type writeBackoff struct{ next time.Duration }

func newWriteBackoff() *writeBackoff { return &writeBackoff{next: 100 * time.Millisecond} }

// wait waits the next backoff on clock, and reports false, at once, when ctx ends first.
func (b *writeBackoff) wait(ctx context.Context, clock clock.Clock) bool {
	if ctx.Err() != nil {
		return false
	}
	select {
	case <-clock.After(b.next):
	case <-ctx.Done():
		return false
	}
	b.next = min(2*b.next, 5*time.Second)
	return ctx.Err() == nil
}

// tryStoreRefresh makes one attempt to store h. It succeeds without writing when the
// Secret no longer holds the spent token: someone stored a new login meanwhile, which
// wins; a token this operator spent before is no new login.
func (r *CDUserGrantReconciler) tryStoreRefresh(ctx context.Context, h *heldRefresh, known *corev1.Secret) error {
	s := &corev1.Secret{}
	var err error
	if known != nil {
		s = known.DeepCopy()
	} else {
		err = r.APIReader.Get(ctx, h.secret, s)
	}
	if apierrors.IsNotFound(err) {
		// Deleted mid-rotation: the new token is the customer's only session, kept for
		// the grant if it is still there; else it goes with it (grantGone).
		if err := r.grantGone(ctx, h); err != nil {
			return err
		}
		s = secrets.NewRefreshSecret(h.grant)
		if h.token == "" {
			secrets.StoreRefreshToken(s, h.key, h.sent)
		} else {
			secrets.StoreSuccessor(s, h.key, h.sent, h.token)
		}
		secrets.SetRefreshLife(s, rotation.Hash(h.session()), h.life)
		return r.Create(ctx, s)
	}
	if err != nil {
		return err
	}
	// A token this operator spent before, written back meanwhile (a GitOps re-sync), is
	// no new login: a successor goes in all the same.
	if v, _ := secrets.Value(s, h.key); v != h.sent && (h.token == "" || !secrets.Spent(s, rotation.Hash(v))) {
		return nil
	}
	if h.token == "" {
		rotation.ClearMark(s.Annotations)
	} else {
		secrets.StoreSuccessor(s, h.key, h.sent, h.token)
	}
	// In the same write, for the token stored: the write budget per rotation holds.
	secrets.SetRefreshLife(s, rotation.Hash(h.session()), h.life)
	if err := r.Update(ctx, s); err != nil {
		// Made immutable while the refresh was out: said apart, since deleting the
		// Secret is the one way left to store the token (the NotFound path above).
		return refusedAsImmutable(ctx, r.APIReader, h.secret, err)
	}
	return nil
}

// grantGone returns errGrantGone, having revoked h's token, when the grant h belongs to
// is gone (or another by its name) or being deleted, as the API server says: a Secret
// deleted with its grant (kubectl delete -f of the onboarding manifest) is not created
// again. A Secret created again would hold the customer's live session bound to a UID
// that no longer exists, which any grant naming the Secret may adopt. The token is
// revoked as deletionPolicy Delete revokes one, when the credential has a
// revocationURL: nobody holds it any more.
func (r *CDUserGrantReconciler) grantGone(ctx context.Context, h *heldRefresh) error {
	g := &cdv1.CDUserGrant{}
	err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(h.grant), g)
	if err == nil && g.UID == h.grant.UID && g.DeletionTimestamp.IsZero() {
		return nil
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	r.revoke(ctx, h.grant, h.session())
	ctrl.LoggerFrom(ctx).Info("Revoked the customer's session: its grant and refresh-token Secret were deleted while a refresh was out, so the new refresh token is not stored",
		"grant", h.grant.Name, "secret", h.secret.Name)
	return errGrantGone
}

// storeOrphan stores the new refresh token of a grant deleted while it was held: the
// refresh-token Secret outlives its grant (deletionPolicy Retain), and the token in it
// must be the live one, not the spent one.
func (r *CDUserGrantReconciler) storeOrphan(ctx context.Context, key types.NamespacedName) error {
	return r.storeHeld(ctx, func(_ types.UID, h *heldRefresh) bool {
		return h.grant.Namespace == key.Namespace && h.grant.Name == key.Name
	})
}

// storeInherited stores the new refresh token this process holds for the grant's
// refresh-token Secret on behalf of a grant that is gone: the same grant deleted and
// created again (kubectl replace --force, a GitOps re-sync), or another that named the
// Secret. Until it lands the Secret holds the spent token under this process's in-flight
// mark, which this grant would take for its own interrupted rotation and send again.
//
// It also stores, into the Secret it was read from, the token held for a previous grant
// of this name that named another Secret (a Secret renamed in a GitOps repository): the
// passes for this name find this grant, so the path for a deleted grant (storeOrphan)
// never runs for that one, and its customer's live session would stay in memory only.
func (r *CDUserGrantReconciler) storeInherited(ctx context.Context, grant *cdv1.CDUserGrant) (outcome, error) {
	secret := types.NamespacedName{Namespace: grant.Namespace, Name: grant.Spec.RefreshTokenSecretRef.Name}
	for uid, held := range r.held.refreshTokens() {
		sameName := held.key == client.ObjectKeyFromObject(grant)
		if uid == grant.UID || (held.refresh.secret != secret && !sameName) {
			continue
		}
		// A grant still there stores its own; this one finds the Secret bound to it and
		// sends nothing. Asked at the API server, as the binding is judged
		// (secrets.BoundElsewhere): a cache that has not seen the grant's deletion yet
		// would leave its token to nobody while this grant takes the Secret over.
		other := &cdv1.CDUserGrant{}
		err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(held.refresh.grant), other)
		if err == nil && other.UID == uid {
			continue
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, err
		}
		if err := r.storeAndForget(ctx, uid, held.refresh); err != nil {
			return writeFailed{err: err, holding: true, inherited: true}, nil
		}
	}
	return nil, nil
}

// storeHeld stores the held new refresh tokens that match (storeAndForget).
func (r *CDUserGrantReconciler) storeHeld(ctx context.Context, match func(types.UID, *heldRefresh) bool) error {
	for uid, held := range r.held.refreshTokens() {
		if !match(uid, held.refresh) {
			continue
		}
		if err := r.storeAndForget(ctx, uid, held.refresh); err != nil {
			return err
		}
	}
	return nil
}

// storeAndForget stores the held new refresh token of a grant that is gone or going,
// until it lands or the persist timeout passes, then forgets the grant's result: only the
// refresh token is still wanted. A token whose Secret went with its grant is revoked
// instead (grantGone), and forgotten all the same.
func (r *CDUserGrantReconciler) storeAndForget(ctx context.Context, uid types.UID, h *heldRefresh) error {
	if err := r.storeRefresh(context.WithoutCancel(ctx), h, r.Clock.Now().Add(r.persistTimeout())); err != nil && !errors.Is(err, errGrantGone) {
		return err
	}
	r.held.drop(uid)
	return nil
}

// Drain, once the manager stopped (SIGTERM, or a lost leader election, which gives
// in-flight work no grace), waits for the rotations still in flight to end, then stores
// the refresh tokens still held: each until it lands, its deadline passes, or ctx ends.
// It returns how many rotations were still out when ctx ended, plus the tokens that
// could not be stored: those customers must log in again.
//
// The tokens are tried in turns, every one before any waits out a backoff: ctx is a
// budget (manager.ShutdownDrain after SIGTERM) shared by all of them, and storing them
// one after the other would spend it on the first outage met, leaving the rest no try.
func (r *CDUserGrantReconciler) Drain(ctx context.Context) int {
	r.rotating.stop()
	lost := r.rotating.wait(ctx)
	type draining struct {
		retrier
		deadline time.Time
	}
	pending := map[types.UID]*draining{}
	for uid, held := range r.held.refreshTokens() {
		pending[uid] = &draining{retrier{known: held.refresh.marked, try: r.storing(ctx, held.refresh)}, held.refresh.deadline}
	}
	backoff := newWriteBackoff()
	for len(pending) > 0 {
		for uid, d := range pending {
			again, err := d.attempt(r.Clock, d.deadline)
			if again {
				continue
			}
			if err != nil && !errors.Is(err, errGrantGone) {
				lost++
			} else {
				r.held.drop(uid)
			}
			delete(pending, uid)
		}
		if len(pending) > 0 && !backoff.wait(ctx, r.Clock) {
			lost += len(pending)
			break
		}
	}
	return lost
}
