package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"unicode"

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
	"sigs.k8s.io/controller-runtime/pkg/log"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// CDCredentialReconciler keeps a fresh client-credentials token in the output Secret of
// every ClientCredentials CDCredential, and reports whether an AuthorizationCode
// CDCredential is usable by its CDUserGrants.
type CDCredentialReconciler struct {
	client.Client
	// APIReader reads around the cache: Secrets the cache does not hold, and Secrets
	// the informer may not have caught up with.
	APIReader client.Reader
	Clock     clock.PassiveClock
	Tokens    tokenclient.Issuer
	Recorder  events.EventRecorder

	refused refusals
}

// Reconcile fetches the CDCredential, runs the reconcile steps and patches status once.
func (r *CDCredentialReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	obj := &cdv1.CDCredential{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			forget("CDCredential", req.Namespace, req.Name)
			r.refused.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := obj.DeepCopy()
	conds := newConditions(&obj.Status.Conditions, obj.Generation, r.Clock.Now())
	defer func() {
		obj.Status.ObservedGeneration = obj.Generation
		recordTransitions(r.Recorder, obj, conds)
		observeStatus("CDCredential", obj, obj.Status.Conditions, obj.Status.ExpiresAt, obj.Status.RenewalTime)
		if equality.Semantic.DeepEqual(before.Status, obj.Status) {
			return
		}
		if err := r.Status().Patch(ctx, obj, client.MergeFrom(before)); err != nil {
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
	}()
	return r.reconcile(ctx, obj, conds)
}

func (r *CDCredentialReconciler) reconcile(ctx context.Context, obj *cdv1.CDCredential, conds conditions) (ctrl.Result, error) {
	conds.ensure(cdv1.ReadyCondition, false, cdv1.ReconcilingReason, "The operator has not finished a first pass yet")
	conds.set(cdv1.FlowMisuseCondition, false, cdv1.FlowCorrectReason, "No sign that this client is used for the wrong flow")
	creds, err := readClientSecret(ctx, r.secrets(), obj)
	if err != nil {
		return clientSecretFailure(conds, err)
	}
	obj.Status.ClientID = creds.ID
	others, err := otherFlowSharers(ctx, r.Client, obj, creds.ID)
	if err != nil {
		return ctrl.Result{}, err
	}
	if len(others) > 0 {
		// Reported on every sharer, but not terminal: the identity server decides which
		// of them is wrong (GrantTypeNotAllowed), and stalling the right one would stop
		// its customers' rotations, the very outage this operator exists to prevent.
		conds.set(cdv1.FlowMisuseCondition, true, cdv1.ClientSharedAcrossFlowsReason, sharedClientMessage(obj, others))
	}
	var res ctrl.Result
	if obj.Spec.Flow == cdv1.FlowAuthorizationCode {
		obj.Status.SecretName = ""
		conds.ready(cdv1.ClientReadyReason, "Client Secret holds a client id and secret; CDUserGrants can use this client")
	} else if res, err = r.reconcileToken(ctx, obj, conds, creds); err != nil {
		return res, err
	}
	if len(others) > 0 {
		showSharedClient(conds)
	}
	return res, nil
}

// showSharedClient puts ClientSharedAcrossFlows in the reason of a CDCredential that is
// still Ready, so the Reason column of `kubectl get cdcred` shows the misuse at a glance
// while its customers keep working. A not-Ready one already shows why it is not.
func showSharedClient(conds conditions) {
	ready := meta.FindStatusCondition(*conds.list, cdv1.ReadyCondition)
	if ready == nil || ready.Status != metav1.ConditionTrue {
		return
	}
	conds.ready(cdv1.ClientSharedAcrossFlowsReason, ready.Message+"; but see FlowMisuse: its client id is also declared for the other flow")
}

// reconcileToken renews the access token when the output Secret's is due, missing,
// tampered with or was minted for another request, and requeues for the next renewal.
func (r *CDCredentialReconciler) reconcileToken(ctx context.Context, obj *cdv1.CDCredential, conds conditions, creds clientCreds) (ctrl.Result, error) {
	name := outputSecretName(obj.Name, obj.Spec.SecretName)
	ep := endpointFor(obj, creds)
	fingerprint := requestFingerprint(ep.TokenURL, ep.ClientID, string(ep.AuthMethod), strings.Join(ep.Scopes, " "))
	now := r.Clock.Now()

	existing, err := r.secrets().existing(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: name})
	if err != nil {
		return ctrl.Result{}, err
	}
	if sched, ok := currentSchedule(existing); ok && existing.Annotations[fingerprintAnnotation] == fingerprint {
		if due, wait := sched.due(now); !due {
			obj.Status.SecretName = name
			obj.Status.ExpiresAt, obj.Status.RenewalTime = timePtr(sched.ExpiresAt), timePtr(sched.RenewAt)
			conds.ready(cdv1.TokenIssuedReason, "Access token is in Secret "+name)
			return ctrl.Result{RequeueAfter: wait}, nil
		}
	}

	key := client.ObjectKeyFromObject(obj)
	request := requestFingerprint(fingerprint, tokenHash(creds.Secret), string(obj.UID), strconv.FormatInt(obj.Generation, 10))
	if prev, ok := r.refused.lookup(key, request); ok {
		// This very request was refused for good: report it again, send nothing.
		return tokenFailure(conds, obj.Spec.Flow, prev.hint, prev.err)
	}
	tok, err := instrumented{Issuer: r.Tokens, kind: "CDCredential"}.ClientCredentials(ctx, ep)
	if err != nil {
		log.FromContext(ctx).Info("Token request failed", "cdcredential", key, "reason", tokenclient.KindOf(err))
		hint := r.misuseNeighbours(ctx, obj, err)
		r.refused.record(key, request, err, hint)
		return tokenFailure(conds, obj.Spec.Flow, hint, err)
	}
	r.refused.forget(key)
	issued := issuedToken{
		AccessToken: tok.AccessToken,
		TokenType:   tok.TokenType,
		Scopes:      tok.Scopes,
		Schedule:    renewalSchedule(now, tok.Lifetime, renewBefore(obj.Spec.RenewBefore), string(obj.UID)),
		Fingerprint: fingerprint,
	}
	err = r.secrets().apply(ctx, outputSecret{owner: obj, kind: "CDCredential", name: name, template: obj.Spec.SecretTemplate, token: issued})
	if err != nil {
		return outputSecretFailure(conds, err)
	}
	obj.Status.SecretName = name
	obj.Status.ExpiresAt, obj.Status.RenewalTime = timePtr(issued.Schedule.ExpiresAt), timePtr(issued.Schedule.RenewAt)
	obj.Status.LastIssuedTime = timePtr(issued.Schedule.Issued)
	obj.Status.GrantedScopes = tok.Scopes
	conds.ready(cdv1.TokenIssuedReason, "Access token is in Secret "+name)
	r.Recorder.Eventf(eventTarget(obj), nil, corev1.EventTypeNormal, cdv1.TokenIssuedReason, "IssueToken", "Issued an access token into Secret %s", name)
	_, wait := issued.Schedule.due(now)
	return ctrl.Result{RequeueAfter: wait}, nil
}

// misuseNeighbours names, for a ClientCredentials CDCredential refused its grant type,
// the AuthorizationCode CDCredentials in its namespace: the likely mix-up.
func (r *CDCredentialReconciler) misuseNeighbours(ctx context.Context, obj *cdv1.CDCredential, err error) string {
	if tokenclient.KindOf(err) != tokenclient.KindGrantTypeNotAllowed || obj.Spec.Flow != cdv1.FlowClientCredentials {
		return ""
	}
	list := &cdv1.CDCredentialList{}
	if r.List(ctx, list, client.InNamespace(obj.Namespace)) != nil {
		return ""
	}
	var names []string
	for _, o := range list.Items {
		if o.Spec.Flow == cdv1.FlowAuthorizationCode {
			names = append(names, o.Name)
		}
	}
	if len(names) == 0 {
		return ""
	}
	return " (AuthorizationCode CDCredentials in this namespace: " + strings.Join(names, ", ") + "; does this client Secret hold the same client id as theirs?)"
}

func (r *CDCredentialReconciler) secrets() secretStore {
	return secretStore{client: r.Client, api: r.APIReader, scheme: r.Scheme()}
}

// endpointFor is where and how a CDCredential's client asks for tokens.
func endpointFor(obj *cdv1.CDCredential, creds clientCreds) tokenclient.Endpoint {
	tokenURL := obj.Spec.TokenURL
	if tokenURL == "" {
		issuer := obj.Spec.Issuer
		if issuer == "" {
			issuer = cdv1.DefaultIssuer
		}
		tokenURL = strings.TrimRight(issuer, "/") + "/connect/token"
	}
	method := tokenclient.ClientSecretPost
	if obj.Spec.ClientAuthMethod == cdv1.ClientSecretBasic {
		method = tokenclient.ClientSecretBasic
	}
	return tokenclient.Endpoint{
		TokenURL:     tokenURL,
		AuthMethod:   method,
		ClientID:     creds.ID,
		ClientSecret: creds.Secret,
		Scopes:       obj.Spec.Scopes,
	}
}

// requestFingerprint identifies what a token was requested for, so a changed client,
// endpoint or scope list gets a new token at once instead of at the next renewal.
func requestFingerprint(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:8])
}

// clientCreds is a client id and secret read from a client Secret.
type clientCreds struct{ ID, Secret string }

// errClientSecret explains why a client Secret cannot be used.
type errClientSecret struct {
	notFound bool
	msg      string
}

func (e errClientSecret) Error() string { return e.msg }

// readClientSecret reads and checks the client id and secret of a CDCredential.
func readClientSecret(ctx context.Context, store secretStore, obj *cdv1.CDCredential) (clientCreds, error) {
	ref := obj.Spec.ClientSecretRef
	secret, err := store.get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: ref.Name})
	if apierrors.IsNotFound(err) {
		return clientCreds{}, errClientSecret{notFound: true, msg: "Client Secret " + ref.Name + " not found in namespace " + obj.Namespace}
	}
	if err != nil {
		return clientCreds{}, err
	}
	idKey, secretKey := defaultString(ref.ClientIDKey, "client_id"), defaultString(ref.ClientSecretKey, "client_secret")
	id, idErr := secretValue(secret, idKey)
	sec, secErr := secretValue(secret, secretKey)
	if err := errors.Join(idErr, secErr); err != nil {
		return clientCreds{}, errClientSecret{msg: "Client Secret " + ref.Name + ": " + err.Error()}
	}
	return clientCreds{ID: id, Secret: sec}, nil
}

// maxSecretValue bounds a credential read from a Secret: anything longer is a mistake
// (a whole file pasted in), and would be sent to the identity server on every request.
const maxSecretValue = 4096

// secretValue reads one credential from a Secret, trimming the whitespace a shell
// `echo` or an editor leaves, and refusing values that cannot be a credential.
func secretValue(secret *corev1.Secret, key string) (string, error) {
	raw, ok := secret.Data[key]
	if !ok {
		return "", errors.New("key " + key + " is missing")
	}
	v := strings.TrimSpace(string(raw))
	switch {
	case v == "":
		return "", errors.New("key " + key + " is empty")
	case len(v) > maxSecretValue:
		return "", errors.New("key " + key + " is longer than 4096 bytes")
	case strings.IndexFunc(v, func(r rune) bool { return !unicode.IsPrint(r) || r == unicode.ReplacementChar }) >= 0:
		return "", errors.New("key " + key + " holds characters that are not printable text")
	}
	return v, nil
}

func clientSecretFailure(conds conditions, err error) (ctrl.Result, error) {
	var cs errClientSecret
	if !errors.As(err, &cs) {
		return ctrl.Result{}, err
	}
	if cs.notFound {
		// Not terminal: the Secret may be created later. A labelled one is seen at once
		// through the watch; an unlabelled one on the next retry.
		conds.notReady(cdv1.ClientSecretNotFoundReason, cs.msg)
		return ctrl.Result{RequeueAfter: missingSecretRetry}, nil
	}
	conds.stalled(cdv1.ClientSecretInvalidReason, cs.msg)
	return ctrl.Result{}, stalledError(cs.msg)
}

func outputSecretFailure(conds conditions, err error) (ctrl.Result, error) {
	var notOurs errSecretNotOurs
	if errors.As(err, &notOurs) {
		conds.stalled(cdv1.OutputSecretConflictReason, notOurs.Error())
		return ctrl.Result{}, stalledError(notOurs.Error())
	}
	return ctrl.Result{}, err
}

func defaultString(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// ClientEndpoint reads a CDCredential's client Secret and returns where and how its
// client asks for tokens. The onboarding callback uses it to exchange codes.
func ClientEndpoint(ctx context.Context, c client.Client, api client.Reader, cred *cdv1.CDCredential) (tokenclient.Endpoint, error) {
	creds, err := readClientSecret(ctx, secretStore{client: c, api: api, scheme: c.Scheme()}, cred)
	if err != nil {
		return tokenclient.Endpoint{}, err
	}
	return endpointFor(cred, creds), nil
}
