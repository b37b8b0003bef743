package controllers

import (
	"context"
	"errors"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// CDUserGrantReconciler keeps a fresh access token in the output Secret of every
// CDUserGrant by rotating the customer's single-use refresh token (DESIGN §6).
type CDUserGrantReconciler struct {
	client.Client
	// APIReader reads the refresh-token Secret around the cache before spending it: a
	// stale cache would hand back a token that is already spent.
	APIReader client.Reader
	Clock     clock.Clock
	Tokens    tokenclient.Issuer
	Recorder  events.EventRecorder
	// PersistTimeout bounds how long one reconcile keeps retrying the write of a new
	// refresh token before it hands the token to the next reconcile (it is never
	// dropped while the process lives). Default 1 minute.
	PersistTimeout time.Duration
	// InFlightTimeout is how old another process's in-flight mark must be before it is
	// taken for a dead process's (and the stored token is tried once). Default 2 minutes.
	InFlightTimeout time.Duration

	// Authorizer, when set (the callback server is on), puts an authorization URL in the
	// status of every grant that needs a customer to log in.
	Authorizer Authorizer

	pendingMu sync.Mutex
	// pending holds new refresh tokens the API server has not accepted yet, by grant
	// UID. While a grant has one, its stored (spent) token is never sent again.
	pending map[types.UID]pendingToken
}

// Reconcile fetches the CDUserGrant, runs the reconcile steps and patches status once.
func (r *CDUserGrantReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	grant := &cdv1.CDUserGrant{}
	if err := r.Get(ctx, req.NamespacedName, grant); err != nil {
		if apierrors.IsNotFound(err) {
			forget("CDUserGrant", req.Namespace, req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := grant.DeepCopy()
	conds := newConditions(&grant.Status.Conditions, grant.Generation, r.Clock.Now())
	defer func() {
		grant.Status.ObservedGeneration = grant.Generation
		recordTransitions(r.Recorder, grant, conds)
		observeStatus("CDUserGrant", grant, grant.Status.Conditions, grant.Status.ExpiresAt, grant.Status.RenewalTime)
		if equality.Semantic.DeepEqual(before.Status, grant.Status) {
			return
		}
		// Status is the last of a rotation's writes; shutdown must not cancel it.
		if err := r.Status().Patch(context.WithoutCancel(ctx), grant, client.MergeFrom(before)); err != nil {
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
	}()
	return r.reconcile(ctx, grant, conds)
}

func (r *CDUserGrantReconciler) reconcile(ctx context.Context, grant *cdv1.CDUserGrant, conds conditions) (ctrl.Result, error) {
	grant.Status.SecretName = outputSecretName(grant.Name, grant.Spec.SecretName)
	conds.ensure(cdv1.ReadyCondition, false, cdv1.ReconcilingReason, "The operator has not finished a first pass yet")
	conds.ensure(cdv1.ReauthorizationRequiredCondition, false, cdv1.RefreshTokenNotCheckedReason, "The refresh token has not been checked yet")
	conds.set(cdv1.FlowMisuseCondition, false, cdv1.FlowCorrectReason, "The grant uses an AuthorizationCode credential")
	if p, ok := r.pendingFor(grant.UID); ok {
		// A rotation succeeded but its new refresh token is not stored yet: store it
		// before anything else, and never fall back to the spent one.
		return r.finishRotation(ctx, grant, conds, p)
	}
	cred, ep, res, err := r.resolveCredential(ctx, grant, conds)
	if cred == nil {
		return res, err
	}
	res, err = r.reconcileToken(ctx, grant, conds, ep)
	if conds.isTrue(cdv1.ReauthorizationRequiredCondition) {
		return r.offerAuthorization(grant, cred, ep.ClientID, res, err)
	}
	grant.Status.AuthorizationURL = ""
	return res, err
}

// reconcileToken keeps the access token fresh with the stored refresh token.
func (r *CDUserGrantReconciler) reconcileToken(ctx context.Context, grant *cdv1.CDUserGrant, conds conditions, ep tokenclient.Endpoint) (ctrl.Result, error) {
	rt, res, err := r.readRefreshToken(ctx, grant, conds, false)
	if rt == nil {
		return res, err
	}
	fingerprint := requestFingerprint(ep.TokenURL, ep.ClientID, string(ep.AuthMethod))
	if !rt.interrupted() {
		if res, fresh, err := r.checkFresh(ctx, grant, conds, fingerprint); fresh || err != nil {
			return res, err
		}
	}
	if rt, res, err = r.readRefreshToken(ctx, grant, conds, true); rt == nil {
		return res, err
	}
	return r.rotate(ctx, grant, conds, rotation{endpoint: ep, stored: rt, fingerprint: fingerprint})
}

// resolveCredential finds the grant's CDCredential and its client. A nil credential means
// the grant cannot proceed; the conditions say why.
func (r *CDUserGrantReconciler) resolveCredential(ctx context.Context, grant *cdv1.CDUserGrant, conds conditions) (*cdv1.CDCredential, tokenclient.Endpoint, ctrl.Result, error) {
	cred := &cdv1.CDCredential{}
	key := types.NamespacedName{Namespace: grant.Namespace, Name: grant.Spec.CredentialRef.Name}
	if err := r.Get(ctx, key, cred); err != nil {
		if apierrors.IsNotFound(err) {
			// Waiting: the credential watch brings the grant back when it appears.
			conds.notReady(cdv1.CredentialNotFoundReason, "CDCredential "+key.Name+" not found in namespace "+key.Namespace)
			return nil, tokenclient.Endpoint{}, ctrl.Result{}, nil
		}
		return nil, tokenclient.Endpoint{}, ctrl.Result{}, err
	}
	if cred.Spec.Flow == cdv1.FlowClientCredentials {
		msg := "CDCredential " + cred.Name + " is a ClientCredentials (server-to-server) client; a customer grant needs the AuthorizationCode credential set. Point spec.credentialRef at an AuthorizationCode CDCredential. Nothing was sent to the identity server"
		conds.set(cdv1.FlowMisuseCondition, true, cdv1.UserGrantOnClientCredentialsReason, msg)
		conds.stalled(cdv1.UserGrantOnClientCredentialsReason, msg)
		return nil, tokenclient.Endpoint{}, ctrl.Result{}, stalledError(msg)
	}
	creds, err := readClientSecret(ctx, secretStore{client: r.Client, api: r.APIReader, scheme: r.Scheme()}, cred)
	if err != nil || !meta.IsStatusConditionTrue(cred.Status.Conditions, cdv1.ReadyCondition) {
		conds.notReady(cdv1.CredentialNotReadyReason, "CDCredential "+cred.Name+" is not Ready; see its conditions")
		return nil, tokenclient.Endpoint{}, ctrl.Result{}, nil
	}
	return cred, endpointFor(cred, creds), ctrl.Result{}, nil
}

// readRefreshToken reads the refresh-token Secret: through the cache (which labels it
// for the watch on first sight) to decide whether anything is due, or around it (direct)
// right before the token is spent, since a stale cache would hand back a spent token. A
// nil result means there is nothing to spend; the conditions say why.
func (r *CDUserGrantReconciler) readRefreshToken(ctx context.Context, grant *cdv1.CDUserGrant, conds conditions, direct bool) (*storedToken, ctrl.Result, error) {
	ref := grant.Spec.RefreshTokenSecretRef
	key := types.NamespacedName{Namespace: grant.Namespace, Name: ref.Name}
	secret := &corev1.Secret{}
	var err error
	if direct {
		err = r.APIReader.Get(ctx, key, secret)
	} else {
		secret, err = secretStore{client: r.Client, api: r.APIReader, scheme: r.Scheme()}.get(ctx, key)
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, ctrl.Result{}, err
	}
	if secret == nil {
		secret = &corev1.Secret{}
	}
	value, valueErr := secretValue(secret, defaultString(ref.Key, "refresh_token"))
	if err != nil || valueErr != nil {
		msg := "No refresh token in Secret " + ref.Name + ": the customer has to log in (or put a refresh token under key " + defaultString(ref.Key, "refresh_token") + ")"
		conds.notReady(cdv1.AwaitingAuthorizationReason, msg)
		conds.set(cdv1.ReauthorizationRequiredCondition, true, cdv1.RefreshTokenMissingReason, msg)
		return nil, ctrl.Result{RequeueAfter: missingSecretRetry}, nil
	}
	rt := &storedToken{secret: secret, key: defaultString(ref.Key, "refresh_token"), value: value}
	if rt.rejected() {
		// invalid_grant is terminal: wait for a new refresh token, send nothing.
		reason := secret.Annotations[cdv1.RejectedReasonAnnotation]
		msg := rejectionMessage(reason)
		conds.set(cdv1.ReauthorizationRequiredCondition, true, reason, msg)
		conds.stalled(reason, msg)
		return nil, ctrl.Result{}, stalledError(msg)
	}
	conds.set(cdv1.ReauthorizationRequiredCondition, false, cdv1.RefreshTokenValidReason, "The grant holds a refresh token")
	return rt, ctrl.Result{}, nil
}

// checkFresh reports whether the output Secret holds a token not yet due for renewal,
// and if so fills the status from it and requeues for its renewal. A cached Secret that
// looks due is read again around the cache before a refresh token is spent on it.
func (r *CDUserGrantReconciler) checkFresh(ctx context.Context, grant *cdv1.CDUserGrant, conds conditions, fingerprint string) (ctrl.Result, bool, error) {
	key := types.NamespacedName{Namespace: grant.Namespace, Name: grant.Status.SecretName}
	now := r.Clock.Now()
	for _, reader := range []client.Reader{r.Client, r.APIReader} {
		secret := &corev1.Secret{}
		if err := reader.Get(ctx, key, secret); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return ctrl.Result{}, false, err
		}
		sched, ok := currentSchedule(secret)
		if !ok || secret.Annotations[fingerprintAnnotation] != fingerprint || !metav1.IsControlledBy(secret, grant) {
			continue
		}
		if due, wait := sched.due(now); !due {
			grant.Status.ExpiresAt, grant.Status.RenewalTime = timePtr(sched.ExpiresAt), timePtr(sched.RenewAt)
			conds.ready(cdv1.TokenIssuedReason, "Access token is in Secret "+key.Name)
			return ctrl.Result{RequeueAfter: wait}, true, nil
		}
	}
	return ctrl.Result{}, false, nil
}

// Authorizer builds the URL a customer opens to authorize a grant (internal/onboarding).
type Authorizer interface {
	AuthorizationURL(grant *cdv1.CDUserGrant, cred *cdv1.CDCredential, clientID, current string, now time.Time) (string, time.Time)
}

// offerAuthorization shows a grant that needs a login where to log in, and comes back
// before that link expires. Without a callback server it changes nothing.
func (r *CDUserGrantReconciler) offerAuthorization(grant *cdv1.CDUserGrant, cred *cdv1.CDCredential, clientID string, res ctrl.Result, err error) (ctrl.Result, error) {
	if r.Authorizer == nil || (err != nil && !errors.Is(err, reconcile.TerminalError(nil))) {
		return res, err
	}
	now := r.Clock.Now()
	url, expires := r.Authorizer.AuthorizationURL(grant, cred, clientID, grant.Status.AuthorizationURL, now)
	grant.Status.AuthorizationURL = url
	// The grant waits for the customer, not for a retry: a terminal error still sends
	// nothing, but the link is renewed before it expires.
	refresh := expires.Add(-time.Minute).Sub(now)
	if res.RequeueAfter > 0 && res.RequeueAfter < refresh {
		refresh = res.RequeueAfter
	}
	return ctrl.Result{RequeueAfter: max(refresh, time.Second)}, nil
}

func rejectionMessage(reason string) string {
	if reason == cdv1.RotationInterruptedReason {
		return "A previous rotation was interrupted after the refresh token was sent, and the identity server has rejected the stored token (invalid_grant): the customer must log in again"
	}
	return "The identity server rejected the refresh token (invalid_grant): it is spent, expired or revoked; the customer must log in again"
}

var errPersistPending = errors.New("the new refresh token is not stored yet; retrying")
