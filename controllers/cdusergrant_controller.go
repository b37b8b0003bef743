package controllers

import (
	"context"
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/metabound"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// CDUserGrantReconciler keeps a fresh access token in the output Secret of every
// CDUserGrant by rotating the customer's single-use refresh token (DESIGN §6).
type CDUserGrantReconciler struct {
	client.Client
	// APIReader reads around the cache: Secrets that are not opted in (metadata only),
	// refresh-token Secrets again while a new token is being stored, and the grant a
	// refresh-token Secret is bound to (the cache holds only this shard's grants).
	APIReader client.Reader
	Clock     clock.Clock
	Tokens    tokenclient.Issuer
	// Share splits the token requests among the namespaces asking for them
	// (tokenclient.Share; nil: no split). The CDCredential reconciler holds the same one:
	// a namespace's CRs of both kinds draw on one part.
	Share *tokenclient.Share
	// Revoker revokes a deleted grant's refresh token (deletionPolicy Delete); nil
	// skips revocation.
	Revoker  tokenclient.Revoker
	Recorder events.EventRecorder
	// Authorizer, when set (the callback server is on), puts an authorization URL in the
	// status of every grant that needs a customer to log in.
	Authorizer Authorizer
	// Holder names this process in in-flight marks; default: host name and a random part.
	Holder string
	// HolderTimeout is how old another process's in-flight mark must be before it is
	// taken for a dead process's (and the stored token is sent once more). It must be
	// longer than a token request plus the time a process may still spend storing its
	// result after it lost leadership. Default 2 minutes.
	HolderTimeout time.Duration
	// PersistTimeout bounds how long one reconcile retries storing a new refresh token
	// through an API server outage before it hands the token to the next reconcile (it
	// is never dropped while the process lives). Default 1 minute.
	PersistTimeout time.Duration
	// Shard is the manager's --shard-label-selector (nil: every CR): a grant relabelled
	// out of it is told so (reportLeftShard).
	Shard labels.Selector
	// LeftShard remembers the CRs relabelled out of Shard that no shard serves, and
	// publishes their series (nil: nothing remembered).
	LeftShard *LeftShard

	held     heldResults
	rotating inFlight
	written  writtenFailures
	links    writtenLinks
	// successors are live refresh tokens seen replaced by spent ones (a GitOps
	// re-sync), to put back.
	successors successors
	// terminating are namespaces lately seen being deleted.
	terminating recently
	// finalized are grants whose refresh token a deletion pass revoked and deleted.
	finalized recently
	// active is when this process won the leader election.
	active activeSince
}

// Elected records when this process became the one that rotates (it won the leader
// election, or started without one): another process's in-flight mark is waited for a
// full HolderTimeout after that, and a stored time in this process's future counts from
// it. The manager calls it from a leader-election runnable.
func (r *CDUserGrantReconciler) Elected(at time.Time) { r.active.elected(at) }

// Authorizer builds the URL a customer opens to authorize a grant (internal/onboarding).
type Authorizer interface {
	AuthorizationURL(grant *cdv1.CDUserGrant, cred *cdv1.CDCredential, clientID, current string, now time.Time) (string, time.Time)
}

// Reconcile fetches the CDUserGrant, carries out one pass and patches status once.
func (r *CDUserGrantReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	grant := &cdv1.CDUserGrant{}
	if err := r.Get(ctx, req.NamespacedName, grant); err != nil {
		if apierrors.IsNotFound(err) {
			r.Share.Forget(turnOf(kindGrant, req.NamespacedName)) // its turn is the next one's
			r.written.forget(req.NamespacedName)
			r.links.forget(req.NamespacedName)
			r.held.dropAccess(req.NamespacedName, "")
			if err := r.storeOrphan(ctx, req.NamespacedName); err != nil {
				return ctrl.Result{}, err
			}
			return reportLeftShard(ctx, r.APIReader, r.Client, r.Shard, req.NamespacedName, leftGrant(), r.LeftShard, r.Clock.Now())
		}
		return ctrl.Result{}, err
	}
	// A CR deleted and created again under its name (kubectl replace --force) may be
	// reconciled only under its new UID: what was remembered for the old one goes.
	r.written.forgetOthers(req.NamespacedName, grant.UID)
	r.links.forgetOthers(req.NamespacedName, grant.UID)
	r.LeftShard.forget(kindGrant, req.NamespacedName) // back in the shard, if it had left
	// A stub of a grant over metabound.Max lacks its finalizers and annotations: patches
	// of them computed from it would drop the ones it lost (reconcile stops on it).
	if !metabound.Over(grant) {
		if done, err := r.deletion(ctx, grant); done || err != nil {
			return ctrl.Result{}, err
		}
		if err := r.dropAnsweredReauthorization(ctx, grant); err != nil {
			return ctrl.Result{}, err
		}
	}
	before := grant.DeepCopy()
	defer func() {
		if equality.Semantic.DeepEqual(before.Status, grant.Status) {
			return
		}
		// Status is the last of a rotation's writes; shutdown must not cancel it.
		target, gone, err := writeStatus(context.WithoutCancel(ctx), r.Client, r.APIReader, cdv1.GroupVersion.WithKind("CDUserGrant"), grant, &before.Status, &grant.Status)
		if err != nil {
			retErr = kerrors.NewAggregate([]error{retErr, err})
			return
		}
		if gone {
			// Deleted, or replaced under its name, while the pass ran: its deletion, or the
			// new one's creation, brings a pass of its own.
			return
		}
		r.written.note(grant, target, before.Status.LastFailure, grant.Status.LastFailure, grant.Status.Conditions, r.Clock.Now())
		r.links.note(grant, target, before.Status.AuthorizationURL, grant.Status.AuthorizationURL)
	}()
	out, cred, err := r.reconcile(ctx, grant)
	keepTokenSecret(&grant.Status.SecretName, before.Status.SecretName, out)
	if out == nil {
		return ctrl.Result{}, err
	}
	out = noteLeftovers(ctx, r.Client, grant, kindGrant, grant.Status.SecretName, before.Status.SecretName, before.Status.Conditions, out)
	res, err = r.report(grant, out)
	return r.offerAuthorization(grant, cred, res, err)
}

// attempt is what a refresh needs once the decision is to send.
type attempt struct {
	cred    *cdv1.CDCredential
	client  secrets.Client
	stored  *storedToken
	request string
}

// requestAfter is the request a pass makes once session is the stored refresh token.
func (a *attempt) requestAfter(grant *cdv1.CDUserGrant, session string) string {
	return grantRequest(grant, a.cred, a.client, rotation.Hash(session))
}

// storedToken is the refresh token as stored in its Secret.
type storedToken struct {
	secret *corev1.Secret
	key    string
	value  string
	hash   string
	// lifeOf is life once read: a pass asks for it up to twice (the decision's input,
	// then its outcome), and parsing the annotation is the costlier part.
	lifeOf   rotation.Schedule
	lifeRead bool
}

// life is when the stored token was issued and dies, as its Secret records it for that
// very token (secrets.RefreshLife); zero when it has no known limit. Read at most once.
func (t *storedToken) life() rotation.Schedule {
	if !t.lifeRead {
		t.lifeOf, _ = secrets.RefreshLife(t.secret, t.hash)
		t.lifeRead = true
	}
	return t.lifeOf
}

// reconcile reads what the pass needs, decides, and carries the decision out. It also
// returns the grant's CDCredential when it could be read, for the authorization URL.
func (r *CDUserGrantReconciler) reconcile(ctx context.Context, grant *cdv1.CDUserGrant) (outcome, *cdv1.CDCredential, error) {
	previous := grant.Status.SecretName
	grant.Status.SecretName = secrets.OutputName(grant.Name, grant.Spec.SecretName)
	if out, err := r.storeInherited(ctx, grant); out != nil || err != nil {
		return out, nil, err
	}
	r.held.dropAccess(client.ObjectKeyFromObject(grant), grant.UID) // a token of its previous UID's
	now := r.Clock.Now()
	in := rotation.Input{Now: now, Pending: r.held.has(grant.UID), ActiveSince: r.active.since(now)}
	if in.Pending {
		// A rotation succeeded but its result is not stored yet: store it before
		// anything else, whatever else changed, and never fall back to the spent token.
		out, err := r.carryOut(ctx, grant, in, nil)
		return out, nil, err
	}
	if metabound.Over(grant) {
		return metadataTooLarge{kind: kindGrant}, nil, nil
	}
	cred, c, out, err := r.credential(ctx, grant)
	if out != nil || err != nil {
		return out, cred, err
	}
	rt, out, err := r.refreshToken(ctx, grant)
	if out != nil || err != nil {
		return out, cred, err
	}
	current, err := r.outputSecret(ctx, grant)
	if err != nil {
		out, err := outputProblem(err)
		return out, cred, err
	}
	if err := syncTemplate(ctx, r.Client, grant, current, grant.Spec.SecretTemplate); err != nil {
		return nil, cred, err
	}
	if current == nil {
		if going, err := goingBeforeRequest(ctx, r.APIReader, &r.terminating, grant.Namespace, grant.Status.ExpiresAt != nil, r.Clock.Now()); going || err != nil {
			return nil, cred, err // the grant is about to go: nothing to report
		}
	}
	fingerprint := secrets.GrantFingerprint(c)
	in.Request = grantRequest(grant, cred, c, rt.hash)
	in.Failure = r.written.current(grant, grant.Status.LastFailure).AsOf(now, in.ActiveSince)
	if current != nil && metav1.IsControlledBy(current, grant) {
		if s, ok := secrets.Schedule(current, fingerprint); ok {
			s.Issued = issuanceOf(s, grant.Status.LastRotationTime, grant.Status.ExpiresAt)
			in.Current = &s
		}
		in.Last = lastToken(current, grant.Status.LastRotationTime, grant.Status.ExpiresAt)
	}
	if in.Last == nil && current == nil {
		in.Last = renamedToken(previous, grant.Status.SecretName, grant.Status.LastRotationTime, grant.Status.ExpiresAt, grant.Status.RenewalTime)
	}
	in.Lifetime = lifetimeOf(grant.Status.LastRotationTime, grant.Status.ExpiresAt)
	in.Refresh = &rotation.Refresh{Hash: rt.hash, Mark: rotation.ReadMark(rt.secret.Annotations), Self: r.holder(), HolderTimeout: r.holderTimeout(), To: destination(cred, c), OutHere: r.rotating.spending(rt.hash),
		Expires: refreshExpiry(rt.life(), now, in.ActiveSince), Planned: plannedWith(rt.life(), grant.Status.LastRotationTime)}
	out, err = r.carryOut(ctx, grant, in, &attempt{cred: cred, client: c, stored: rt, request: in.Request})
	return out, cred, err
}

// carryOut decides and does what the decision says: the only token requests and Secret
// writes of a CDUserGrant.
func (r *CDUserGrantReconciler) carryOut(ctx context.Context, grant *cdv1.CDUserGrant, in rotation.Input, a *attempt) (outcome, error) {
	switch d := rotation.Decide(in).(type) {
	case rotation.Persist:
		return r.persist(ctx, grant)
	case rotation.Wait:
		f := freshUntil(*in.Current, d.Until)
		if a != nil {
			f.refreshLife = a.stored.life()
		}
		return f, nil
	case rotation.Hold:
		return holding{until: d.Until, here: d.Here}, nil
	case rotation.Defer:
		return deferred{until: d.Until, afterFailure: d.AfterFailure, failure: in.Failure, last: in.Last}, nil
	case rotation.Stop:
		return remembered{failure: d.Failure}, nil
	case rotation.Backoff:
		return remembered{failure: *in.Failure}, nil
	case rotation.Abandon:
		return abandoned{request: in.Request}, nil
	case rotation.Redirected:
		return redirected{sentTo: d.SentTo}, nil
	case rotation.Send:
		if out := throttle(r.Share, kindGrant, grant, in); out != nil {
			return out, nil
		}
		return r.rotate(ctx, grant, a, d)
	}
	panic("unknown decision")
}

// existsOutsideCache tells whether a CDCredential the cache does not hold exists at the
// API server all the same: the cache holds only the manager's shard, and "not found"
// would send the platform team looking for an object that is there. Only read on this
// error path, and for metadata alone.
func (r *CDUserGrantReconciler) existsOutsideCache(ctx context.Context, key types.NamespacedName) bool {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(cdv1.GroupVersion.WithKind("CDCredential"))
	return r.APIReader.Get(ctx, key, m) == nil
}

// credential finds the grant's CDCredential and its client. A non-nil outcome says why
// the grant cannot proceed.
func (r *CDUserGrantReconciler) credential(ctx context.Context, grant *cdv1.CDUserGrant) (*cdv1.CDCredential, secrets.Client, outcome, error) {
	cred := &cdv1.CDCredential{}
	key := types.NamespacedName{Namespace: grant.Namespace, Name: grant.Spec.CredentialRef.Name}
	if err := r.Get(ctx, key, cred); err != nil {
		if apierrors.IsNotFound(err) {
			// Waiting: the credential watch brings the grant back when it appears (or is
			// labelled into this manager's shard).
			return nil, secrets.Client{}, credentialMissing{name: key.Name, outsideShard: r.existsOutsideCache(ctx, key)}, nil
		}
		return nil, secrets.Client{}, nil, err
	}
	if cred.Spec.Flow == cdv1.FlowClientCredentials {
		return cred, secrets.Client{}, wrongFlow{name: cred.Name}, nil
	}
	if !meta.IsStatusConditionTrue(cred.Status.Conditions, cdv1.ReadyCondition) {
		return cred, secrets.Client{}, credentialNotReady{name: cred.Name}, nil
	}
	c, err := r.readers().ReadClient(ctx, cred)
	if err != nil {
		if _, err := clientProblem(err); err != nil {
			return cred, secrets.Client{}, nil, err
		}
		return cred, secrets.Client{}, credentialNotReady{name: cred.Name}, nil
	}
	return cred, c, nil, nil
}

// refreshToken reads the grant's refresh-token Secret, opted in, not bound to another
// grant, and not set back to a token this operator already spent (unless the live one it
// replaced can be put back). An unbound Secret is bound by the same
// resourceVersion-guarded write that marks its token in flight, so nothing is sent before
// the binding is recorded, and binding costs no write of its own. A non-nil outcome says
// why there is nothing to spend.
func (r *CDUserGrantReconciler) refreshToken(ctx context.Context, grant *cdv1.CDUserGrant) (*storedToken, outcome, error) {
	return r.readRefreshToken(ctx, grant, r.readers(), putBackTries)
}

// readRefreshToken is refreshToken reading through readers; tries bounds the reads
// again after a put-back that conflicted.
func (r *CDUserGrantReconciler) readRefreshToken(ctx context.Context, grant *cdv1.CDUserGrant, readers secrets.Readers, tries int) (*storedToken, outcome, error) {
	ref := grant.Spec.RefreshTokenSecretRef
	key := secrets.RefreshKey(grant)
	s, err := readers.Get(ctx, types.NamespacedName{Namespace: grant.Namespace, Name: ref.Name}, cdv1.SecretTypeRefreshToken)
	if out, err := refreshProblem(err, ref.Name, key); out != nil || err != nil {
		return nil, out, err
	}
	if err := r.boundElsewhere(ctx, grant, s); err != nil {
		out, err := refreshProblem(err, ref.Name, key)
		return nil, out, err
	}
	if isImmutable(s) {
		// Checked before the mark: the mark (metadata) would be taken, the token sent and
		// spent, and its successor refused.
		return nil, refreshSecretUnusable{err: &immutableRefreshSecret{secret: ref.Name, key: key}}, nil
	}
	value, err := secrets.Value(s, key)
	if err != nil {
		return nil, refreshTokenMissing{secret: ref.Name, key: key, err: err}, nil
	}
	hash := rotation.Hash(value)
	if secrets.Spent(s, hash) {
		// Set back to a token this operator spent (a GitOps re-sync, a restore): its
		// data no longer matches the operator's last write, as a new login's would not,
		// but sending it is a reuse, which a strict provider answers by revoking the
		// customer's whole session. The live token it replaced goes back when this
		// process saw it go.
		rt, err := r.putBack(ctx, grant, s, key, hash)
		switch {
		case apierrors.IsConflict(err) && tries > 1:
			// Written meanwhile: read it again, around the cache, and decide again.
			return r.readRefreshToken(ctx, grant, secrets.Readers{Cache: r.APIReader, API: r.APIReader}, tries-1)
		case err != nil:
			return nil, nil, err
		case rt == nil:
			return nil, refreshTokenSpent{secret: ref.Name}, nil
		}
		return rt, nil, nil
	}
	return &storedToken{secret: s, key: key, value: value, hash: hash}, nil, nil
}

// boundElsewhere returns a boundElsewhereError when the Secret is bound to another grant
// that still holds it (secrets.BoundElsewhere), as the API server says: the cache holds
// only this shard's grants. A grant that moved off the Secret holds it while a rotation
// of it is out (its in-flight mark) or this process holds its successor for it, not
// stored yet (as storeInherited leaves it to that grant).
func (r *CDUserGrantReconciler) boundElsewhere(ctx context.Context, grant *cdv1.CDUserGrant, s *corev1.Secret) error {
	holding := func(bound types.UID) bool {
		h, ok := r.held.refreshTokens()[bound]
		return ok && h.refresh.secret == client.ObjectKeyFromObject(s)
	}
	elsewhere, err := secrets.BoundElsewhere(ctx, r.APIReader, grant, s, holding)
	if elsewhere {
		return boundElsewhereError{grant: types.NamespacedName{Namespace: grant.Namespace, Name: secrets.BindingOf(s).Name}}
	}
	return err
}

func refreshProblem(err error, secret, key string) (outcome, error) {
	switch {
	case err == nil:
		return nil, nil
	case apierrors.IsNotFound(err):
		return refreshTokenMissing{secret: secret, key: key}, nil
	}
	if out, _ := clientProblem(err); out != nil {
		return refreshSecretUnusable{err: out.(clientUnusable).err}, nil
	}
	if errors.Is(err, errBoundElsewhere) {
		return refreshSecretUnusable{err: err}, nil
	}
	return nil, err
}

// outputSecret returns the grant's output Secret when the grant may write it.
func (r *CDUserGrantReconciler) outputSecret(ctx context.Context, grant *cdv1.CDUserGrant) (*corev1.Secret, error) {
	if err := checkOutputName(grant.Status.SecretName); err != nil {
		return nil, err
	}
	if err := secrets.ValidateTemplate(grant.Spec.SecretTemplate); err != nil {
		return nil, wrapTemplate(err)
	}
	return existingOutput(ctx, r.readers(), types.NamespacedName{Namespace: grant.Namespace, Name: grant.Status.SecretName}, grant)
}

func (r *CDUserGrantReconciler) readers() secrets.Readers {
	return secrets.Readers{Cache: r.Client, API: r.APIReader}
}

func (r *CDUserGrantReconciler) holder() string {
	if r.Holder != "" {
		return r.Holder
	}
	return holderID
}

func (r *CDUserGrantReconciler) holderTimeout() time.Duration {
	if r.HolderTimeout > 0 {
		return r.HolderTimeout
	}
	return 2 * time.Minute
}

func (r *CDUserGrantReconciler) persistTimeout() time.Duration {
	if r.PersistTimeout > 0 {
		return r.PersistTimeout
	}
	return time.Minute
}
