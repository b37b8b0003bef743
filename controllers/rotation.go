package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// tokenHash identifies a refresh token without revealing it.
func tokenHash(v string) string {
	sum := sha256.Sum256([]byte(v))
	return "sha256:" + hex.EncodeToString(sum[:16])
}

// storedToken is the refresh token as stored in its Secret, read around the cache.
type storedToken struct {
	secret *corev1.Secret
	key    string
	value  string
}

func (t *storedToken) hash() string { return tokenHash(t.value) }

// rejected reports whether the identity server already rejected this very token.
func (t *storedToken) rejected() bool {
	return t.secret.Annotations[cdv1.RejectedAnnotation] == t.hash()
}

// interrupted reports whether this token was marked in flight and its outcome never
// recorded: the process that sent it died, or its answer never came.
func (t *storedToken) interrupted() bool {
	return t.secret.Annotations[cdv1.RotationInFlightAnnotation] == t.hash()
}

// rotation is one attempt to spend a refresh token.
type rotation struct {
	endpoint    tokenclient.Endpoint
	stored      *storedToken
	fingerprint string
}

// pendingToken is the result of a successful refresh that is not fully stored yet.
type pendingToken struct {
	secret    types.NamespacedName
	key       string
	spentHash string
	refresh   string // the new refresh token; "" when the server sent none (the old one stays)
	access    issuedToken
	subject   string
	// known is the Secret as the in-flight mark left it, so the first attempt to store
	// the new token needs no read; later attempts read it again.
	known *corev1.Secret
}

func (r *CDUserGrantReconciler) pendingFor(uid types.UID) (pendingToken, bool) {
	r.pendingMu.Lock()
	defer r.pendingMu.Unlock()
	p, ok := r.pending[uid]
	return p, ok
}

func (r *CDUserGrantReconciler) setPending(uid types.UID, p *pendingToken) {
	r.pendingMu.Lock()
	defer r.pendingMu.Unlock()
	if p == nil {
		delete(r.pending, uid)
		return
	}
	if r.pending == nil {
		r.pending = map[types.UID]pendingToken{}
	}
	r.pending[uid] = *p
}

// rotate spends the stored refresh token exactly once (DESIGN §6): mark it in flight,
// send it, then store the new one before anything else. From the mark on, the work runs
// on a context shutdown does not cancel: a rotation cut in half loses the customer.
func (r *CDUserGrantReconciler) rotate(ctx context.Context, grant *cdv1.CDUserGrant, conds conditions, rot rotation) (ctrl.Result, error) {
	ctx = context.WithoutCancel(ctx)
	recovering := rot.stored.interrupted()
	if recovering {
		if wait := r.liveHolder(rot.stored.secret); wait > 0 {
			// Another process is rotating this grant right now; let it finish.
			return ctrl.Result{RequeueAfter: wait}, nil
		}
	} else if err := r.markInFlight(ctx, rot.stored); err != nil {
		return ctrl.Result{}, err // a conflict means someone else changed the Secret: nothing was sent
	}
	now := r.Clock.Now()
	tok, err := instrumented{Issuer: r.Tokens, kind: "CDUserGrant"}.Refresh(ctx, rot.endpoint, rot.stored.value)
	if err != nil {
		return r.refreshFailed(ctx, grant, conds, rot, recovering, err)
	}
	p := &pendingToken{
		known:     rot.stored.secret,
		secret:    client.ObjectKeyFromObject(rot.stored.secret),
		key:       rot.stored.key,
		spentHash: rot.stored.hash(),
		refresh:   tok.RefreshToken,
		access: issuedToken{
			AccessToken: tok.AccessToken,
			TokenType:   tok.TokenType,
			Scopes:      tok.Scopes,
			Schedule:    renewalSchedule(now, tok.Lifetime, renewBefore(grant.Spec.RenewBefore), string(grant.UID)),
			Fingerprint: rot.fingerprint,
		},
		subject: jwtSubject(tok.AccessToken),
	}
	r.setPending(grant.UID, p)
	return r.finishRotation(ctx, grant, conds, *p)
}

// markInFlight records, with a resourceVersion-guarded update, that the stored token is
// about to be spent.
func (r *CDUserGrantReconciler) markInFlight(ctx context.Context, t *storedToken) error {
	s := t.secret.DeepCopy()
	metav1.SetMetaDataAnnotation(&s.ObjectMeta, cdv1.RotationInFlightAnnotation, t.hash())
	metav1.SetMetaDataAnnotation(&s.ObjectMeta, cdv1.RotationHolderAnnotation, holderID+"@"+r.Clock.Now().UTC().Format(time.RFC3339))
	if err := r.Update(ctx, s); err != nil {
		return err
	}
	t.secret = s
	return nil
}

// liveHolder returns how long to wait when another live process holds the in-flight
// mark, or 0 when the mark is ours or old enough that its holder must be gone.
func (r *CDUserGrantReconciler) liveHolder(s *corev1.Secret) time.Duration {
	id, since, ok := strings.Cut(s.Annotations[cdv1.RotationHolderAnnotation], "@")
	if !ok || id == holderID {
		return 0
	}
	t, err := time.Parse(time.RFC3339, since)
	if err != nil {
		return 0
	}
	if left := t.Add(r.inFlightTimeout()).Sub(r.Clock.Now()); left > 0 {
		return left
	}
	return 0
}

func (r *CDUserGrantReconciler) inFlightTimeout() time.Duration {
	if r.InFlightTimeout > 0 {
		return r.InFlightTimeout
	}
	return 2 * time.Minute
}

func (r *CDUserGrantReconciler) persistTimeout() time.Duration {
	if r.PersistTimeout > 0 {
		return r.PersistTimeout
	}
	return time.Minute
}

// refreshFailed records a failed refresh. invalid_grant is terminal and remembered on
// the Secret, so the dead token is never sent again. An ambiguous failure (the server
// may have spent the token) leaves the in-flight mark: the next attempt is a recovery
// that sends the stored token once and treats invalid_grant as an interrupted rotation.
func (r *CDUserGrantReconciler) refreshFailed(ctx context.Context, grant *cdv1.CDUserGrant, conds conditions, rot rotation, recovering bool, err error) (ctrl.Result, error) {
	var te *tokenclient.Error
	errors.As(err, &te)
	switch {
	case te != nil && te.Kind == tokenclient.KindInvalidGrant:
		reason := cdv1.RefreshTokenRejectedReason
		if recovering {
			reason = cdv1.RotationInterruptedReason
		}
		if werr := r.recordRejection(ctx, rot.stored, reason); werr != nil {
			return ctrl.Result{}, werr
		}
		msg := rejectionMessage(reason)
		conds.set(cdv1.ReauthorizationRequiredCondition, true, reason, msg)
		conds.stalled(reason, msg)
		return ctrl.Result{}, stalledError(msg)
	case te != nil && te.Token != nil && te.Token.RefreshToken != "":
		// The answer is unusable but carries a new refresh token: the old one is spent,
		// so the new one must be stored before anything else.
		r.setPending(grant.UID, &pendingToken{secret: client.ObjectKeyFromObject(rot.stored.secret), key: rot.stored.key, spentHash: rot.stored.hash(), refresh: te.Token.RefreshToken})
		if perr := r.persistRefreshToken(ctx, r.mustPending(grant.UID)); perr != nil {
			return ctrl.Result{}, perr
		}
		r.setPending(grant.UID, nil)
		return tokenFailure(conds, cdv1.FlowAuthorizationCode, "", err)
	case te != nil && te.Kind == tokenclient.KindRateLimited:
		// Told to slow down: wait as long as asked. If the server may have processed the
		// refresh anyway (a 503), the mark stays and the next attempt is a recovery.
		if !te.Ambiguous && !recovering {
			if werr := r.clearMark(ctx, rot.stored); werr != nil {
				return ctrl.Result{}, werr
			}
		}
		return tokenFailure(conds, cdv1.FlowAuthorizationCode, "", err)
	case te == nil || te.Ambiguous:
		conds.notReady(cdv1.TokenRequestFailedReason, "The identity server gave no clear answer to the refresh; the stored token is tried once more before the customer is asked to log in again")
		return ctrl.Result{}, err
	}
	if !recovering {
		// Nothing was spent: drop the mark so the next attempt is an ordinary one.
		if werr := r.clearMark(ctx, rot.stored); werr != nil {
			return ctrl.Result{}, werr
		}
	}
	return tokenFailure(conds, cdv1.FlowAuthorizationCode, "", err)
}

func (r *CDUserGrantReconciler) mustPending(uid types.UID) pendingToken {
	p, _ := r.pendingFor(uid)
	return p
}

func (r *CDUserGrantReconciler) recordRejection(ctx context.Context, t *storedToken, reason string) error {
	s := t.secret.DeepCopy()
	delete(s.Annotations, cdv1.RotationInFlightAnnotation)
	delete(s.Annotations, cdv1.RotationHolderAnnotation)
	metav1.SetMetaDataAnnotation(&s.ObjectMeta, cdv1.RejectedAnnotation, t.hash())
	metav1.SetMetaDataAnnotation(&s.ObjectMeta, cdv1.RejectedReasonAnnotation, reason)
	return r.Update(ctx, s)
}

func (r *CDUserGrantReconciler) clearMark(ctx context.Context, t *storedToken) error {
	s := t.secret.DeepCopy()
	delete(s.Annotations, cdv1.RotationInFlightAnnotation)
	delete(s.Annotations, cdv1.RotationHolderAnnotation)
	return r.Update(ctx, s)
}

// finishRotation stores a successful rotation in order: the new refresh token first,
// then the access token, then (deferred in Reconcile) the status.
func (r *CDUserGrantReconciler) finishRotation(ctx context.Context, grant *cdv1.CDUserGrant, conds conditions, p pendingToken) (ctrl.Result, error) {
	ctx = context.WithoutCancel(ctx)
	if err := r.persistRefreshToken(ctx, p); err != nil {
		conds.notReady(cdv1.TokenRequestFailedReason, "A new refresh token could not be stored yet; the operator holds it and keeps retrying")
		return ctrl.Result{}, err
	}
	if p.access.AccessToken == "" {
		r.setPending(grant.UID, nil)
		return ctrl.Result{}, nil
	}
	store := secretStore{client: r.Client, api: r.APIReader, scheme: r.Scheme()}
	out := outputSecret{owner: grant, kind: "CDUserGrant", name: grant.Status.SecretName, template: grant.Spec.SecretTemplate, token: p.access}
	if err := store.apply(ctx, out); err != nil {
		// The refresh token is safe; keep the access token pending so it is written
		// without spending another refresh token.
		r.setPending(grant.UID, &pendingToken{secret: p.secret, key: p.key, spentHash: p.spentHash, refresh: p.refresh, access: p.access, subject: p.subject})
		return outputSecretFailure(conds, err)
	}
	r.setPending(grant.UID, nil)
	rotations.Inc()
	s := p.access.Schedule
	grant.Status.ExpiresAt, grant.Status.RenewalTime = timePtr(s.ExpiresAt), timePtr(s.RenewAt)
	grant.Status.LastRotationTime = timePtr(s.Issued)
	grant.Status.RotationCount++
	grant.Status.GrantedScopes = p.access.Scopes
	grant.Status.Subject = p.subject
	conds.ready(cdv1.TokenIssuedReason, "Access token is in Secret "+grant.Status.SecretName)
	conds.set(cdv1.ReauthorizationRequiredCondition, false, cdv1.RefreshTokenValidReason, "The grant holds a refresh token")
	r.Recorder.Eventf(eventTarget(grant), nil, corev1.EventTypeNormal, cdv1.RefreshTokenRotatedReason, "RotateRefreshToken", "Rotated the refresh token and issued an access token into Secret %s", grant.Status.SecretName)
	_, wait := s.due(r.Clock.Now())
	return ctrl.Result{RequeueAfter: wait}, nil
}

// persistRefreshToken stores a new refresh token with a resourceVersion-guarded update,
// retrying until it lands or PersistTimeout passes; in the latter case the token stays
// pending in memory and the next reconcile retries. The spent token is never restored.
func (r *CDUserGrantReconciler) persistRefreshToken(ctx context.Context, p pendingToken) error {
	deadline := r.Clock.Now().Add(r.persistTimeout())
	backoff := 100 * time.Millisecond
	for {
		done, err := r.tryPersist(ctx, p)
		if done {
			return nil
		}
		p.known = nil
		if apierrors.IsConflict(err) {
			continue // re-read and try again at once
		}
		if !r.Clock.Now().Before(deadline) {
			return errors.Join(errPersistPending, err)
		}
		<-r.Clock.After(backoff)
		backoff = min(2*backoff, 5*time.Second)
	}
}

// tryPersist makes one attempt to store p. done is true when the Secret holds the new
// token, or when someone replaced the spent token meanwhile (a new login wins).
func (r *CDUserGrantReconciler) tryPersist(ctx context.Context, p pendingToken) (bool, error) {
	s := &corev1.Secret{}
	var err error
	if p.known != nil {
		s = p.known.DeepCopy()
	} else {
		err = r.APIReader.Get(ctx, p.secret, s)
	}
	if apierrors.IsNotFound(err) {
		// Deleted mid-rotation: the new token is the customer's only session.
		s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: p.secret.Namespace, Name: p.secret.Name, Labels: map[string]string{cdv1.WatchLabel: "true"}}}
		s.Data = map[string][]byte{p.key: []byte(p.refresh)}
		err = r.Create(ctx, s)
		return err == nil, err
	}
	if err != nil {
		return false, err
	}
	current := tokenHash(strings.TrimSpace(string(s.Data[p.key])))
	if current != p.spentHash {
		// Already stored, or replaced by a new login.
		return true, nil
	}
	if p.refresh != "" {
		s.Data[p.key] = []byte(p.refresh)
	}
	ClearRotationMarks(s)
	metav1.SetMetaDataAnnotation(&s.ObjectMeta, storedHashAnnotation, dataHash(s.Data))
	err = r.Update(ctx, s)
	return err == nil, err
}

// storedHashAnnotation records a hash of the refresh-token Secret's data as the operator
// wrote it, so its own rotation does not come back as "a new refresh token appeared".
const storedHashAnnotation = "cd.credops.io/stored-hash"

// dataHash identifies a Secret's data without revealing it.
func dataHash(data map[string][]byte) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(data)) {
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write(data[k])
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// ClearRotationMarks removes the in-flight and rejection marks from a refresh-token
// Secret whose token was just replaced.
func ClearRotationMarks(s *corev1.Secret) {
	for _, a := range []string{cdv1.RotationInFlightAnnotation, cdv1.RotationHolderAnnotation, cdv1.RejectedAnnotation, cdv1.RejectedReasonAnnotation} {
		delete(s.Annotations, a)
	}
}
