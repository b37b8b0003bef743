package controllers

import (
	"context"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
	"github.com/credops/cd-credentials-operator/internal/metrics"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// CDCredentialReconciler keeps a fresh client-credentials token in the output Secret of
// every ClientCredentials CDCredential, and reports whether an AuthorizationCode
// CDCredential is usable by its CDUserGrants.
type CDCredentialReconciler struct {
	client.Client
	// APIReader reads around the cache: Secrets that are not opted in (metadata only),
	// and Secrets the informer has not caught up with.
	APIReader client.Reader
	Clock     clock.PassiveClock
	Tokens    tokenclient.Issuer
	// Share splits the token requests among the namespaces asking for them
	// (tokenclient.Share; nil: no split), the same one the CDUserGrant reconciler holds.
	Share    *tokenclient.Share
	Recorder events.EventRecorder
	// Key keys the hash of client secrets in status (ClientSharedAcrossFlows).
	Key []byte
	// Shard is the manager's --shard-label-selector (nil: every CR): a CR relabelled out
	// of it is told so (reportLeftShard).
	Shard labels.Selector
	// LeftShard remembers the CRs relabelled out of Shard that no shard serves, and
	// publishes their series (nil: nothing remembered).
	LeftShard *LeftShard

	held    heldResults
	written writtenFailures
	// terminating are namespaces lately seen being deleted.
	terminating recently
	// active is when this process won the leader election.
	active activeSince
}

// Elected records when this process became the one that requests tokens (it won the
// leader election, or started without one): a stored time in this process's future
// counts from it. The manager calls it from a leader-election runnable.
func (r *CDCredentialReconciler) Elected(at time.Time) { r.active.elected(at) }

// Reconcile fetches the CDCredential, carries out one pass and patches status once.
func (r *CDCredentialReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	cred := &cdv1.CDCredential{}
	if err := r.Get(ctx, req.NamespacedName, cred); err != nil {
		if apierrors.IsNotFound(err) {
			r.Share.Forget(turnOf(kindCredential, req.NamespacedName)) // its turn is the next one's
			r.written.forget(req.NamespacedName)
			r.held.dropAccess(req.NamespacedName, "")
			return reportLeftShard(ctx, r.APIReader, r.Client, r.Shard, req.NamespacedName, leftCredential(), r.LeftShard, r.Clock.Now())
		}
		return ctrl.Result{}, err
	}
	// A CR deleted and created again under its name (kubectl replace --force) may be
	// reconciled only under its new UID: what was remembered for the old one goes.
	r.written.forgetOthers(req.NamespacedName, cred.UID)
	r.LeftShard.forget(kindCredential, req.NamespacedName) // back in the shard, if it had left
	if !cred.DeletionTimestamp.IsZero() {
		// Going: in a foreground deletion the garbage collector deletes the output first,
		// and a token now would only create it again for the collector to delete.
		r.held.dropAccess(req.NamespacedName, "")
		return ctrl.Result{}, nil
	}
	before := cred.DeepCopy()
	defer func() {
		if equality.Semantic.DeepEqual(before.Status, cred.Status) {
			return
		}
		target, gone, err := writeStatus(ctx, r.Client, r.APIReader, cdv1.GroupVersion.WithKind("CDCredential"), cred, &before.Status, &cred.Status)
		if err != nil {
			retErr = kerrors.NewAggregate([]error{retErr, err})
			return
		}
		if gone {
			return // deleted or replaced while the pass ran: that brings a pass of its own
		}
		r.written.note(cred, target, before.Status.LastFailure, cred.Status.LastFailure, cred.Status.Conditions, r.Clock.Now())
	}()
	out, err := r.reconcile(ctx, cred)
	keepTokenSecret(&cred.Status.SecretName, before.Status.SecretName, out)
	if out == nil {
		return ctrl.Result{}, err
	}
	out = noteLeftovers(ctx, r.Client, cred, kindCredential, cred.Status.SecretName, before.Status.SecretName, before.Status.Conditions, out)
	sharers, err := r.sharers(ctx, cred)
	if err != nil {
		return ctrl.Result{}, err
	}
	return r.report(cred, out, sharers)
}

// reconcile reads what the pass needs, decides, and carries the decision out. A nil
// outcome with an error is a failed read: nothing is reported, controller-runtime
// backs off.
func (r *CDCredentialReconciler) reconcile(ctx context.Context, cred *cdv1.CDCredential) (outcome, error) {
	now := r.Clock.Now()
	r.held.dropAccess(client.ObjectKeyFromObject(cred), cred.UID) // a token of its previous UID's
	in := rotation.Input{Now: now, Pending: r.held.has(cred.UID), ActiveSince: r.active.since(now)}
	if in.Pending {
		return r.carryOut(ctx, cred, in, secrets.Client{}, nil)
	}
	if metabound.Over(cred) {
		return metadataTooLarge{kind: kindCredential}, nil
	}
	c, err := r.readers().ReadClient(ctx, cred)
	if err != nil {
		cred.Status.ClientID, cred.Status.ClientSecretHash = "", ""
		return clientProblem(err)
	}
	cred.Status.ClientID = c.Endpoint.ClientID
	cred.Status.ClientSecretHash = secrets.KeyedHash(r.Key, c.Endpoint.ClientSecret)
	if cred.Spec.Flow == cdv1.FlowAuthorizationCode {
		return r.authorizationCode(ctx, cred)
	}
	previous := cred.Status.SecretName
	name := secrets.OutputName(cred.Name, cred.Spec.SecretName)
	cred.Status.SecretName = name
	current, err := r.outputSecret(ctx, cred, name)
	if err != nil {
		return outputProblem(err)
	}
	if err := syncTemplate(ctx, r.Client, cred, current, cred.Spec.SecretTemplate); err != nil {
		return nil, err
	}
	if current == nil {
		if going, err := goingBeforeRequest(ctx, r.APIReader, &r.terminating, cred.Namespace, cred.Status.ExpiresAt != nil, r.Clock.Now()); going || err != nil {
			return nil, err // the credential is about to go: nothing to report
		}
	}
	in.Request = credentialRequest(cred, c)
	in.Failure = r.written.current(cred, cred.Status.LastFailure).AsOf(now, in.ActiveSince)
	if s, ok := secrets.Schedule(current, c.Fingerprint); ok {
		s.Issued = issuanceOf(s, cred.Status.LastIssuedTime, cred.Status.ExpiresAt)
		in.Current = &s
	}
	if current != nil && metav1.IsControlledBy(current, cred) {
		// An orphaned output (its CR deleted with --cascade=orphan) holds no token of
		// this CR's: the budget does not count from it.
		in.Last = lastToken(current, cred.Status.LastIssuedTime, cred.Status.ExpiresAt)
	}
	if in.Last == nil && current == nil {
		in.Last = renamedToken(previous, name, cred.Status.LastIssuedTime, cred.Status.ExpiresAt, cred.Status.RenewalTime)
	}
	in.Lifetime = lifetimeOf(cred.Status.LastIssuedTime, cred.Status.ExpiresAt)
	return r.carryOut(ctx, cred, in, c, current)
}

// authorizationCode reports an AuthorizationCode CDCredential, which mints nothing: its
// status shows no token of a ClientCredentials flow it was switched from (no expiry, no
// renewal time, no scopes). lastIssuedTime and lastFailure stay: they are the request
// budget's memory (the lifetime it counts in, the failures it counts from), and
// switching the flow back and forth must buy neither a shorter window nor new attempts.
//
// The output Secret of that flow is kept and named on Ready, not deleted: pods may still
// mount it (a deleted Secret stops new pods from starting), and its token is what the
// budget counts from, so a switch back gets no token sooner than the budget allows (a
// deleted one would be requested at once, on every switch back).
func (r *CDCredentialReconciler) authorizationCode(ctx context.Context, cred *cdv1.CDCredential) (outcome, error) {
	cred.Status.SecretName = ""
	cred.Status.ExpiresAt, cred.Status.RenewalTime, cred.Status.GrantedScopes = nil, nil, nil
	leftover, err := leftoverOutputs(ctx, r.Client, cred, kindCredential, "")
	if err != nil {
		return nil, err
	}
	return clientReady{leftover: leftover}, nil
}

// carryOut decides and does what the decision says: the only token requests and Secret
// writes of a CDCredential. current is the output Secret as the pass found it.
func (r *CDCredentialReconciler) carryOut(ctx context.Context, cred *cdv1.CDCredential, in rotation.Input, c secrets.Client, current *corev1.Secret) (outcome, error) {
	switch d := rotation.Decide(in).(type) {
	case rotation.Persist:
		return r.persist(ctx, cred)
	case rotation.Wait:
		return freshUntil(*in.Current, d.Until), nil
	case rotation.Defer:
		return deferred{until: d.Until, afterFailure: d.AfterFailure, failure: in.Failure, last: in.Last}, nil
	case rotation.Stop:
		return remembered{failure: d.Failure}, nil
	case rotation.Backoff:
		return remembered{failure: *in.Failure}, nil
	}
	if out := throttle(r.Share, kindCredential, cred, in); out != nil {
		return out, nil
	}
	return r.issue(ctx, cred, c, in.Request)
}

// issue asks for a client-credentials token (request, the pass's rotation.Request) and
// stores it.
func (r *CDCredentialReconciler) issue(ctx context.Context, cred *cdv1.CDCredential, c secrets.Client, request string) (outcome, error) {
	now := r.Clock.Now()
	tok, err := metrics.Instrument(r.Tokens, kindCredential).ClientCredentials(ctx, c.Endpoint)
	o := rotation.Judge(tok, err, false)
	if o.Verdict != rotation.Issued {
		ctrl.LoggerFrom(ctx).Info("Token request failed", "verdict", o.Verdict.String(), "reason", tokenclient.KindOf(err))
		return answered{outcome: o, request: request, hint: r.misuseHint(ctx, cred, o), scopes: c.Endpoint.Scopes}, nil
	}
	sched, clamp := rotation.Plan(now, tok.Lifetime, renewBefore(cred.Spec.RenewBefore), string(cred.UID))
	r.held.put(cred, &result{request: request, access: &issued{
		token: tok.AccessToken, tokenType: tok.TokenType, scopes: tok.Scopes, schedule: sched, clamp: clamp, fingerprint: c.Fingerprint,
	}})
	return r.persist(ctx, cred)
}

// persist writes the held access token into the output Secret. A token that expired
// before it could be written is dropped, and reported as a failure: the next one is
// asked for after a backoff.
func (r *CDCredentialReconciler) persist(ctx context.Context, cred *cdv1.CDCredential) (outcome, error) {
	held, _ := r.held.get(cred.UID)
	if expired, ok := expiredBeforeStored(held, held.request, r.Clock.Now()); ok {
		r.held.drop(cred.UID)
		return expired, nil
	}
	name := secrets.OutputName(cred.Name, cred.Spec.SecretName)
	if err := writeOutput(ctx, r.Client, r.APIReader, cred, cdv1.GroupVersion.WithKind("CDCredential"), name, cred.Spec.SecretTemplate, held.access); err != nil {
		if isTransientAPIError(err) {
			return nil, err
		}
		if refusedAsTerminating(err) {
			r.terminating.mark(cred.Namespace, r.Clock.Now(), r.Clock.Now().Add(terminatingRemembered))
			r.held.drop(cred.UID)
			ctrl.LoggerFrom(ctx).Info("Dropped a token: its output Secret cannot be created in a namespace being deleted", "secret", name)
			return nil, nil
		}
		return writeFailed{err: err, request: held.request}, nil
	}
	r.held.drop(cred.UID)
	cred.Status.SecretName = name
	return stored{token: held.access}, nil
}

// outputSecret returns the output Secret when the credential may write it: its name is
// valid and not taken by another Secret, and its template is valid.
func (r *CDCredentialReconciler) outputSecret(ctx context.Context, cred *cdv1.CDCredential, name string) (*corev1.Secret, error) {
	if err := checkOutputName(name); err != nil {
		return nil, err
	}
	if err := secrets.ValidateTemplate(cred.Spec.SecretTemplate); err != nil {
		return nil, wrapTemplate(err)
	}
	return existingOutput(ctx, r.readers(), types.NamespacedName{Namespace: cred.Namespace, Name: name}, cred)
}

// misuseHint names, for a ClientCredentials CDCredential refused its grant type, the
// AuthorizationCode CDCredentials in its namespace: the likely mix-up.
func (r *CDCredentialReconciler) misuseHint(ctx context.Context, cred *cdv1.CDCredential, o rotation.Outcome) string {
	if o.Verdict != rotation.Misuse {
		return ""
	}
	hint := misuseHint(cred.Spec.Flow)
	list := &cdv1.CDCredentialList{}
	if r.List(ctx, list, client.InNamespace(cred.Namespace)) != nil {
		return hint
	}
	var names []string
	for _, o := range list.Items {
		if o.Spec.Flow == cdv1.FlowAuthorizationCode {
			names = append(names, o.Name)
		}
	}
	if len(names) > 0 {
		hint += " (AuthorizationCode CDCredentials in this namespace: " + strings.Join(names, ", ") + "; does this client Secret hold the same client id as theirs?)"
	}
	return hint
}

func (r *CDCredentialReconciler) readers() secrets.Readers {
	return secrets.Readers{Cache: r.Client, API: r.APIReader}
}

// misuseHint names the likely cause of GrantTypeNotAllowed, so the reader knows what to
// change without knowing OAuth.
func misuseHint(flow cdv1.Flow) string {
	if flow == cdv1.FlowClientCredentials {
		return "this client id is probably registered for the authorization-code flow; use the client-credentials credential set Central Dispatch issued you"
	}
	return "this client id is probably registered for the client-credentials flow; use the authorization-code credential set for customer logins"
}
