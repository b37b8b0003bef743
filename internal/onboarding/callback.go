package onboarding

import (
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/eventnote"
	"github.com/credops/cd-credentials-operator/internal/metrics"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
	"github.com/credops/cd-credentials-operator/internal/statuspatch"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// UsedStateAnnotation on a CDUserGrant holds the hashes of the states whose codes were
// exchanged, each with its expiry, until they expire (see claims). Adding one is a
// resourceVersion-guarded write, so across replicas only one callback per state gets to
// exchange its code, and a state stays refused after a newer one is claimed.
const UsedStateAnnotation = "cd.credops.io/authorization-state"

// Callback serves the redirect back from the identity server. Any replica may serve it:
// every write goes through the API server with a resourceVersion guard.
type Callback struct {
	Client    client.Client
	APIReader client.Reader
	Signer    *Signer
	Tokens    tokenclient.Issuer
	// Revoker revokes a refresh token the callback obtained but could not keep (RFC
	// 7009), when the CDCredential has a revocationURL; nil: such a token is left to
	// expire, and the grant's status says so.
	Revoker  tokenclient.Revoker
	Recorder events.EventRecorder
	Clock    clock.PassiveClock
	// CallbackURL is this endpoint's external URL (the redirect_uri, unless a
	// CDCredential declares its own).
	CallbackURL string

	// failures is when this replica last recorded each failed login of each grant.
	failures failureLog
}

// page is the callback's page. It must stay free of script, style and images: its
// Content-Security-Policy (default-src 'none') allows none.
var page = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><title>{{.Title}}</title></head>
<body><h1>{{.Title}}</h1><p>{{.Message}}</p></body></html>
`))

// answer is what the callback tells the customer, and what it records on the grant.
type answer struct {
	status int
	msg    string
	// title heads the page; empty: "Authorized" or "Not authorized" by status.
	title string
	// reason, when set, is recorded in the grant's status.lastAuthorization.
	reason, oauthError string
	// page, when set, is what the customer's page says instead of msg: msg holds
	// words that are for the grant's owner only.
	page string
}

func (a *answer) Error() string { return a.msg }

func refuse(status int, msg string) *answer { return &answer{status: status, msg: msg} }

// failed is a refusal recorded on the grant: the customer tried and the grant says why
// it did not work.
func failed(status int, reason, oauthError, msg string) *answer {
	return &answer{status: status, msg: msg, reason: reason, oauthError: oauthError}
}

// ownerOnly is failed for a message that carries free text the grant's namespace or the
// identity server wrote (spec.issuer, the token endpoint's answer): it goes to the
// grant's owner only (status, events), and the customer's page, served from a domain
// every tenant's customers trust, says failedPage.
func ownerOnly(status int, reason, msg string) *answer {
	a := failed(status, reason, "", msg)
	a.page = failedPage
	return a
}

// failedPage is what the customer's page says of a login refused for a reason only the
// grant's owner can act on.
const failedPage = "The login could not be completed, and nothing from it was kept. Whoever sent you the link can see why; ask them for a new one."

func (c *Callback) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Referrer-Policy", "no-referrer")
	// The page is on a domain every tenant's customers trust: no other site may frame it
	// (clickjacking) nor a browser read it as anything but HTML. It has no script, style
	// or image, so its policy allows nothing; X-Frame-Options is for browsers without
	// frame-ancestors.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	grant, st, spent, err := c.handle(r.Context(), r)
	a := &answer{status: http.StatusOK, reason: cdv1.CustomerAuthorizedReason, msg: "Thank you: the integration can now act on your behalf. You can close this window."}
	if err != nil && !errors.As(err, &a) {
		log.FromContext(r.Context()).Error(err, "Callback failed")
		a = refuse(http.StatusInternalServerError, "The login could not be completed. Try again from the link you were given.")
	}
	if grant != nil && a.reason != "" {
		c.record(r.Context(), grant, st, a, spent)
	}
	title := a.title
	switch {
	case title != "":
	case a.status == http.StatusOK:
		title = "Authorized"
	default:
		title = "Not authorized"
	}
	msg := a.msg
	if a.page != "" {
		msg = a.page
	}
	w.WriteHeader(a.status)
	_ = page.Execute(w, map[string]string{"Title": title, "Message": msg})
}

// handle runs one callback. It validates everything before it spends anything: the
// state, the grant still waiting, the issuer (RFC 9207), an error or a code, and where the
// refresh token would go. Only then is the link claimed and the code exchanged, once. It
// returns the grant, when known, so the outcome is recorded on it, the state (an expired
// one too), and whether the link was spent.
func (c *Callback) handle(ctx context.Context, r *http.Request) (*cdv1.CDUserGrant, State, bool, error) {
	q := r.URL.Query()
	st, stateErr := c.Signer.Verify(q.Get("state"), c.Clock.Now())
	if errors.Is(stateErr, ErrStateMalformed) || errors.Is(stateErr, ErrStateForged) {
		return nil, st, false, refuse(http.StatusBadRequest, stateErr.Error())
	}
	if stateErr != nil {
		// Expired but genuine: the grant is known, to record the attempt on it.
		st, _ = c.Signer.Verify(q.Get("state"), time.Unix(0, 0))
	}
	grant, spent, err := c.carryOut(ctx, q, st, stateErr)
	return grant, st, spent, err
}

// carryOut is handle past the state's signature.
func (c *Callback) carryOut(ctx context.Context, q url.Values, st State, stateErr error) (*cdv1.CDUserGrant, bool, error) {
	grant, err := c.grantFor(ctx, st)
	if grant == nil || err != nil {
		return grant, false, err
	}
	if stateErr != nil {
		return grant, false, failed(http.StatusBadRequest, cdv1.AuthorizationFailedReason, "", stateErr.Error())
	}
	cred, err := c.credential(ctx, grant)
	if err != nil {
		return grant, false, err
	}
	if err := checkIssuer(cred, q); err != nil {
		return grant, false, err
	}
	if code := q.Get("error"); code != "" {
		reason, msg, page := describeError(code, q.Get("error_description"))
		a := failed(http.StatusForbidden, reason, errorCode(code), msg)
		a.page = page
		return grant, false, a
	}
	if q.Get("code") == "" {
		return grant, false, refuse(http.StatusBadRequest, "The login did not complete. Open the link you were given again.")
	}
	if err := c.checkTarget(ctx, grant); err != nil {
		return grant, false, err
	}
	ep, err := secrets.Readers{Cache: c.Client, API: c.APIReader}.ReadClient(ctx, cred)
	if err != nil {
		log.FromContext(ctx).Info("Callback refused: the grant's client cannot be used; see the CDCredential's conditions", "cdusergrant", client.ObjectKeyFromObject(grant))
		return grant, false, refuse(http.StatusConflict, "Logins cannot be completed right now. Try again later from the same link, or tell whoever sent it to you.")
	}
	if err := c.claimState(ctx, grant, st); err != nil {
		return grant, false, err
	}
	return grant, true, c.exchange(ctx, grant, cred, ep.Endpoint, q.Get("code"), st)
}

// grantFor finds the grant a state was issued for; a deleted or recreated grant, or one
// that does not need authorizing, is refused. An expired link is checked as far as a
// fresh one: a customer who opens an old link after logging in from a newer one has
// nothing left to do, and an authorized grant must not record that as a failure.
func (c *Callback) grantFor(ctx context.Context, st State) (*cdv1.CDUserGrant, error) {
	grant := &cdv1.CDUserGrant{}
	err := c.APIReader.Get(ctx, types.NamespacedName{Namespace: st.Namespace, Name: st.Name}, grant)
	if apierrors.IsNotFound(err) || (err == nil && grant.UID != st.UID) {
		return nil, refuse(http.StatusNotFound, "This link is no longer valid: what it was for has been removed. Ask for a new one.")
	}
	if err != nil {
		return nil, err
	}
	if claimed(grant.Annotations, st) {
		return nil, refuse(http.StatusConflict, "This link was already used. If you are still asked to log in, ask for a new link.")
	}
	if !meta.IsStatusConditionTrue(grant.Status.Conditions, cdv1.ReauthorizationRequiredCondition) {
		// Not a failure: the page must not head it "Not authorized".
		return nil, &answer{status: http.StatusConflict, title: "Already authorized", msg: "The integration is already authorized: there is nothing more to do. You can close this window."}
	}
	return grant, nil
}

func (c *Callback) credential(ctx context.Context, grant *cdv1.CDUserGrant) (*cdv1.CDCredential, error) {
	// The customer's page cannot help with the credential; the log says what is wrong.
	unusable := refuse(http.StatusConflict, "Logins cannot be completed right now. Try again later from the same link, or tell whoever sent it to you.")
	cred := &cdv1.CDCredential{}
	if err := c.APIReader.Get(ctx, types.NamespacedName{Namespace: grant.Namespace, Name: grant.Spec.CredentialRef.Name}, cred); err != nil {
		log.FromContext(ctx).Info("Callback refused: the grant's CDCredential cannot be read", "cdusergrant", client.ObjectKeyFromObject(grant), "error", err.Error())
		return nil, unusable
	}
	if cred.Spec.Flow != cdv1.FlowAuthorizationCode {
		log.FromContext(ctx).Info("Callback refused: the grant's CDCredential is not an AuthorizationCode credential", "cdusergrant", client.ObjectKeyFromObject(grant))
		return nil, unusable
	}
	return cred, nil
}

// checkIssuer is the RFC 9207 mix-up defence: an `iss` in the authorization response
// must be the credential's issuer exactly, and with requireIssuerInResponse it must be
// there. The link stays valid: a forged or misrouted response spends nothing.
func checkIssuer(cred *cdv1.CDCredential, q map[string][]string) error {
	iss, present := q["iss"]
	switch {
	case present && (len(iss) != 1 || iss[0] != secrets.Issuer(cred)):
		return ownerOnly(http.StatusBadRequest, cdv1.AuthorizationFailedReason, "The authorization response names another issuer than the CDCredential's ("+secrets.Issuer(cred)+"): it was refused before any code was exchanged (RFC 9207). If the identity server's issuer really is different, set spec.issuer to it.")
	case !present && cred.Spec.RequireIssuerInResponse:
		return failed(http.StatusBadRequest, cdv1.AuthorizationFailedReason, "", "The authorization response carries no iss parameter, which spec.requireIssuerInResponse requires (RFC 9207); it was refused before any code was exchanged.")
	}
	return nil
}

// checkTarget refuses, before the code is exchanged, a grant whose refresh-token Secret
// may not be written: only a missing Secret, or an opted-in one bound to this grant (or
// to none yet), is. Anything else would overwrite a Secret the operator must not touch.
func (c *Callback) checkTarget(ctx context.Context, grant *cdv1.CDUserGrant) error {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	err := c.APIReader.Get(ctx, types.NamespacedName{Namespace: grant.Namespace, Name: grant.Spec.RefreshTokenSecretRef.Name}, m)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if why, err := c.notWritable(ctx, grant, m.ObjectMeta); why == "" || err != nil {
		return err
	}
	return failed(http.StatusConflict, cdv1.RefreshTokenSecretConflictReason, "", "Secret "+m.Name+" exists and is not this grant's refresh-token Secret (it must be labelled "+cdv1.SecretTypeLabel+"="+cdv1.SecretTypeRefreshToken+" and bound to this grant), so the login was not completed and nothing was exchanged. Point spec.refreshTokenSecretRef at a new Secret name and log in again.")
}

// claimState records the state as used with a resourceVersion-guarded patch; a replay,
// or a second replica racing on the same callback, is refused before any exchange.
func (c *Callback) claimState(ctx context.Context, grant *cdv1.CDUserGrant, st State) error {
	for range 5 {
		before := grant.DeepCopy()
		used := readClaims(grant.Annotations[UsedStateAnnotation])
		used.add(st, c.Clock.Now())
		metav1.SetMetaDataAnnotation(&grant.ObjectMeta, UsedStateAnnotation, used.String())
		err := c.Client.Patch(ctx, grant, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
		if !apierrors.IsConflict(err) {
			return err
		}
		// The grant changed since it was read: its controller writes status all the
		// time. Only another claim of this very state is a refusal.
		if err := c.APIReader.Get(ctx, client.ObjectKeyFromObject(grant), grant); err != nil {
			return err
		}
		if claimed(grant.Annotations, st) {
			return refuse(http.StatusConflict, "This login is already being completed.")
		}
	}
	return refuse(http.StatusConflict, "The login could not be completed right now. Try again from the same link.")
}

// exchange trades the code once and stores the refresh token; one it does not store is
// revoked (notKept).
func (c *Callback) exchange(ctx context.Context, grant *cdv1.CDUserGrant, cred *cdv1.CDCredential, ep tokenclient.Endpoint, code string, st State) error {
	ctx = context.WithoutCancel(ctx) // a spent code must not be lost to a closed browser tab
	verifier := ""
	if !cred.Spec.DisablePKCE {
		verifier = c.Signer.Verifier(st)
	}
	sent := c.Clock.Now()
	tok, err := metrics.Instrument(c.Tokens, "CDUserGrant").Exchange(ctx, ep, code, RedirectURI(cred, c.CallbackURL), verifier)
	if err != nil {
		// A 200 may carry a refresh token beside an answer the client refuses (no access
		// token, another token_type): the code was accepted and that token is a live
		// session, which the callback does not keep, so it is revoked.
		if te := (*tokenclient.Error)(nil); errors.As(err, &te) && te.Token != nil && te.Token.RefreshToken != "" {
			return c.notKept(ctx, grant, cred, ep, te.Token.RefreshToken, &notStored{status: http.StatusBadGateway, reason: cdv1.AuthorizationFailedReason,
				what: "The identity server accepted the authorization code, but its answer was unusable: " + err.Error() + ".", fix: "Ask for a new link and log in again."})
		}
		return ownerOnly(http.StatusBadGateway, cdv1.AuthorizationFailedReason, "The identity server refused the authorization code: "+err.Error()+". Ask for a new link and log in again.")
	}
	if tok.RefreshToken == "" {
		return failed(http.StatusBadGateway, cdv1.AuthorizationFailedReason, "", noRefreshToken(cred, tok.Scopes))
	}
	// The refresh token's own life (refresh_expires_in; none: no limit, or not said),
	// counted from sent, before the request went out, as the controller counts a
	// rotation's: never later than the server's. Stored with the token, it bounds the
	// grant's first renewal and its retries, which a provider outage right after the
	// login would otherwise let run past the token's death.
	if err := c.store(ctx, grant, tok.RefreshToken, rotation.Life(sent, tok.RefreshLifetime)); err != nil {
		return c.notKept(ctx, grant, cred, ep, tok.RefreshToken, err)
	}
	c.Recorder.Eventf(eventTarget(grant), nil, corev1.EventTypeNormal, cdv1.CustomerAuthorizedReason, "Authorize", "%s", eventnote.Of("The customer authorized the integration; the refresh token is stored in Secret %s", grant.Spec.RefreshTokenSecretRef.Name))
	return nil
}

// noRefreshToken says truthfully why a login gave no refresh token.
func noRefreshToken(cred *cdv1.CDCredential, granted []string) string {
	msg := "The identity server issued no refresh token, so the grant cannot be kept alive. Likely causes: consent to offline access was not forced (spec.authorizationParameters: prompt=consent, or Google's access_type=offline); the client is not allowed offline access or refresh tokens at the identity server; or the scope was not granted"
	if len(granted) > 0 {
		msg += " (granted: " + strings.Join(granted, " ") + ")"
	}
	if !strings.Contains(strings.Join(Scopes(cred), " "), "offline_access") {
		msg += "; spec.scopes does not request offline_access"
	}
	return msg + "."
}

// store writes the customer's refresh token into the grant's Secret: a new one, opted
// in and bound to the grant but owned by nobody (the session outlives the grant), or the
// bound one, replacing a dead token and its in-flight mark. The same write records the
// token's life (secrets.SetRefreshLife; a zero life removes a previous token's). Then
// the reauthorization request, if any, is done; only a failure to store the token is an
// error.
//
// checkTarget cannot keep the Secret free until the write: another grant's callback
// naming the same Secret may create or bind it meanwhile. The write then fails
// (AlreadyExists, or Conflict of the resourceVersion guard) and the Secret is read and
// judged again by the same rule.
func (c *Callback) store(ctx context.Context, grant *cdv1.CDUserGrant, rt string, life rotation.Schedule) error {
	var (
		s       *corev1.Secret
		created bool
		err     error
	)
	for range 3 {
		s, created, err = c.writeRefresh(ctx, grant, rt, life)
		if !apierrors.IsAlreadyExists(err) && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			break
		}
	}
	if err != nil {
		return err
	}
	if err := c.confirmGrant(ctx, grant, s, created, rt); err != nil {
		return err
	}
	c.clearReauthorize(ctx, grant)
	return nil
}

// writeRefresh reads the grant's refresh-token Secret and, if the callback may write
// it, writes rt, and its life, into it; NotFound, AlreadyExists or Conflict mean it
// changed meanwhile. It returns the Secret as written, and whether it created it.
func (c *Callback) writeRefresh(ctx context.Context, grant *cdv1.CDUserGrant, rt string, life rotation.Schedule) (*corev1.Secret, bool, error) {
	s := &corev1.Secret{}
	err := c.APIReader.Get(ctx, types.NamespacedName{Namespace: grant.Namespace, Name: grant.Spec.RefreshTokenSecretRef.Name}, s)
	if apierrors.IsNotFound(err) {
		s = secrets.NewRefreshSecret(grant)
		secrets.StoreRefreshToken(s, secrets.RefreshKey(grant), rt)
		secrets.SetRefreshLife(s, rotation.Hash(rt), life)
		return s, true, c.Client.Create(ctx, s)
	}
	if err != nil {
		return nil, false, err
	}
	why, err := c.notWritable(ctx, grant, s.ObjectMeta)
	switch {
	case err != nil:
		return nil, false, err
	case why != "":
		return nil, false, &notStored{status: http.StatusConflict, reason: cdv1.RefreshTokenSecretConflictReason,
			what: "Secret " + s.Name + " " + why + ": it was created or changed while the customer logged in, so the refresh token was not stored.",
			fix:  "Point spec.refreshTokenSecretRef at a Secret no other grant uses, then ask for a new link and log in again."}
	}
	secrets.Bind(s, grant)
	secrets.StoreRefreshToken(s, secrets.RefreshKey(grant), rt)
	secrets.SetRefreshLife(s, rotation.Hash(rt), life)
	return s, false, c.Client.Update(ctx, s) // guarded by the resourceVersion just read
}

// confirmGrant makes sure, after the write, that the grant the login was for is still
// there. One deleted before the write (being deleted, or created again under its name)
// would leave a live session in a Secret bound to a UID that is gone, which by the
// binding rule any grant naming the Secret may adopt: a new grant of that name would
// inherit another customer's session. Such a write is taken back (takeBack) and the
// token, not kept, revoked. Reading after the write leaves no gap: a grant deleted
// after this read is an ordinary deletion, which its deletionPolicy carries out.
//
// Only the API server's answer says the grant is gone (NotFound, another UID, a
// deletionTimestamp): an error of the read (a timeout, a 500) is retried, and a grant
// that still cannot be read keeps the login. The login was good and its link is spent,
// while the grant was there a moment ago (claimState); its controller finds the token.
func (c *Callback) confirmGrant(ctx context.Context, grant *cdv1.CDUserGrant, s *corev1.Secret, created bool, rt string) error {
	cur := &cdv1.CDUserGrant{}
	err := retry.OnError(retry.DefaultBackoff, func(err error) bool { return !apierrors.IsNotFound(err) }, func() error {
		return c.APIReader.Get(ctx, client.ObjectKeyFromObject(grant), cur)
	})
	switch {
	case err != nil && !apierrors.IsNotFound(err):
		log.FromContext(ctx).Info("The refresh token is stored but the grant could not be read again to confirm it is still there; the login is kept", "cdusergrant", client.ObjectKeyFromObject(grant), "secret", s.Name, "error", err.Error())
		return nil
	case err == nil && cur.UID == grant.UID && cur.DeletionTimestamp.IsZero():
		return nil
	}
	// Unconfirmed is not kept either: the token is revoked, so a Secret that could not be
	// taken back holds a dead one.
	c.takeBack(ctx, s, created, secrets.RefreshKey(grant), rt)
	log.FromContext(ctx).Info("The grant was removed while the customer logged in; the refresh token written for it was taken back", "cdusergrant", client.ObjectKeyFromObject(grant), "secret", s.Name)
	// No reason: nothing is recorded, not even on a new grant of the same name.
	return &notStored{status: http.StatusNotFound,
		what: "What this login was for was removed while you logged in, so the login was not kept.",
		fix:  "If access is still needed, ask for a new link."}
}

// takeBack removes rt from s, which the callback just wrote: the Secret it created is
// deleted, as long as nobody wrote it since (UID and resourceVersion preconditions);
// otherwise only the key is removed, as long as it still holds rt (a JSON patch test).
// A failure is logged: the token is revoked all the same.
func (c *Callback) takeBack(ctx context.Context, s *corev1.Secret, created bool, key, rt string) {
	if created {
		err := c.Client.Delete(ctx, s, client.Preconditions{UID: &s.UID, ResourceVersion: &s.ResourceVersion})
		if err == nil || apierrors.IsNotFound(err) {
			return
		}
	}
	path := "/data/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(key)
	patch, _ := json.Marshal([]map[string]any{
		{"op": "test", "path": "/metadata/uid", "value": s.UID},
		{"op": "test", "path": path, "value": []byte(rt)}, // []byte marshals as base64, as Secret data does
		{"op": "remove", "path": path},
	})
	if err := c.Client.Patch(ctx, s, client.RawPatch(types.JSONPatchType, patch)); err != nil && !apierrors.IsNotFound(err) {
		log.FromContext(ctx).Info("Could not take back the refresh token written for a removed grant; it is revoked all the same", "secret", client.ObjectKeyFromObject(s), "error", err.Error())
	}
}

// notStored is why the refresh token was not kept, and what to do about it; notKept puts
// what became of the token in between.
type notStored struct {
	status    int
	reason    string
	what, fix string
}

func (n *notStored) Error() string { return n.what }

// notKept answers a login whose refresh token was not stored. That token is a live
// session nobody holds, so it is revoked, and the answer says whether it was.
func (c *Callback) notKept(ctx context.Context, grant *cdv1.CDUserGrant, cred *cdv1.CDCredential, ep tokenclient.Endpoint, rt string, err error) error {
	var n *notStored
	if !errors.As(err, &n) {
		n = &notStored{status: http.StatusInternalServerError, reason: cdv1.AuthorizationFailedReason,
			what: "The refresh token could not be stored (" + string(apierrors.ReasonForError(err)) + ").", fix: "Ask for a new link and log in again."}
	}
	return failed(n.status, n.reason, "", n.what+" "+c.revoke(ctx, grant, cred, ep, rt)+" "+n.fix)
}

// revoke revokes a refresh token the callback obtained and does not keep (RFC 7009),
// with the client the grant's controller revokes a deleted grant's token with, and
// returns the sentence that tells the grant and the customer what became of it.
func (c *Callback) revoke(ctx context.Context, grant *cdv1.CDUserGrant, cred *cdv1.CDCredential, ep tokenclient.Endpoint, rt string) string {
	logger := log.FromContext(ctx).WithValues("cdusergrant", client.ObjectKeyFromObject(grant))
	const alive = ": it stays valid at the identity server until it expires or is revoked there."
	switch {
	case cred.Spec.RevocationURL == "":
		logger.Info("The refresh token of a login was not stored and cannot be revoked: the CDCredential has no spec.revocationURL")
		return "The CDCredential has no spec.revocationURL, so the session the login opened could not be revoked" + alive
	case c.Revoker == nil:
		logger.Info("The refresh token of a login was not stored and cannot be revoked: this manager has no revocation client")
		return "The session the login opened could not be revoked" + alive
	}
	if err := c.Revoker.Revoke(ctx, ep, cred.Spec.RevocationURL, rt, "refresh_token"); err != nil {
		logger.Info("The refresh token of a login was not stored, and revoking it failed", "error", err.Error())
		return "Revoking the session the login opened failed (" + err.Error() + ")" + alive
	}
	logger.Info("Revoked the refresh token of a login that was not stored")
	return "The session the login opened was revoked at the identity server."
}

// clearReauthorize removes the reauthorization request the stored login answered. The
// token is stored by then, so the login succeeded whatever happens here: a request that
// cannot be removed after a few tries is left for the grant's controller, which drops the
// request status.lastAuthorization.answeredRequest names (see record).
func (c *Callback) clearReauthorize(ctx context.Context, grant *cdv1.CDUserGrant) {
	requested, asked := grant.Annotations[cdv1.ReauthorizeAnnotation]
	if !asked {
		return
	}
	err := retry.OnError(retry.DefaultBackoff, func(err error) bool { return !apierrors.IsNotFound(err) }, func() error {
		cur := &cdv1.CDUserGrant{}
		if err := c.APIReader.Get(ctx, client.ObjectKeyFromObject(grant), cur); err != nil {
			return err
		}
		if cur.UID != grant.UID || cur.Annotations[cdv1.ReauthorizeAnnotation] != requested {
			return nil // gone, or asked again since: a new request is not this login's
		}
		patch := client.MergeFromWithOptions(cur.DeepCopy(), client.MergeFromWithOptimisticLock{})
		delete(cur.Annotations, cdv1.ReauthorizeAnnotation)
		return c.Client.Patch(ctx, cur, patch)
	})
	if err != nil && !apierrors.IsNotFound(err) {
		log.FromContext(ctx).Info("The refresh token is stored but the reauthorization request could not be removed; the grant's controller drops it", "cdusergrant", client.ObjectKeyFromObject(grant), "error", err.Error())
	}
}

// record writes the outcome of a login to the grant's status (where its controller
// turns it into conditions) and as an event. A claimed link leaves status: it is spent.
// A successful login names the reauthorization request it answered, so the controller
// can remove that request, and only that one, if clearReauthorize could not.
//
// A login that spent nothing failed before anything was claimed, and anyone holding a
// link can repeat it (the redirect is a plain GET to a public URL), so it is recorded
// only when it is news (failureNews), and by this replica at most once per grant and
// failure (failureKeyOf) per failureRecordWindow: the customer's page says what went
// wrong every time. Its write
// is guarded by the resourceVersion read, so a login recorded meanwhile is judged too.
//
// Every write applies to the grant the login was for and no other (setOutcome): the
// exchange takes seconds, and a grant deleted and created again under its name
// meanwhile (kubectl replace --force, a GitOps tool's replace) must not show a login
// its customer never made, nor lose its own link. Such a grant is gone: nothing is
// recorded, on it or as an event.
func (c *Callback) record(ctx context.Context, grant *cdv1.CDUserGrant, st State, a *answer, spent bool) {
	ctx = context.WithoutCancel(ctx)
	logger := log.FromContext(ctx).WithValues("cdusergrant", client.ObjectKeyFromObject(grant))
	now := c.Clock.Now()
	floodable := a.reason != cdv1.CustomerAuthorizedReason && !spent
	if floodable && (!failureNews(grant.Status.LastAuthorization, st, a, now) || !c.failures.claim(failureKeyOf(grant.UID, a), now)) {
		return
	}
	for try := 1; ; try++ {
		read := grant.ResourceVersion
		err := c.Client.Status().Patch(ctx, grant, setOutcome(grant, a, spent, now, floodable))
		gone := apierrors.IsNotFound(err)
		if apierrors.IsConflict(err) || apierrors.IsInvalid(err) {
			// Conflict: a failure's write found the grant changed since it was read.
			// Invalid: a test failed, of the UID or of a status written meanwhile, or
			// the API server refused what the write says (its schema, an admission
			// policy). The grant as it is now says which, and judges the write again.
			cur := &cdv1.CDUserGrant{}
			readErr := c.APIReader.Get(ctx, client.ObjectKeyFromObject(grant), cur)
			gone = apierrors.IsNotFound(readErr) || (readErr == nil && cur.UID != grant.UID)
			// The same grant at the version the write was made for: no test failed, and
			// the same write would be refused the same way.
			refused := readErr == nil && !gone && apierrors.IsInvalid(err) && cur.ResourceVersion == read
			if readErr == nil && !gone && !refused && try < 3 {
				*grant = *cur
				if floodable && !failureNews(grant.Status.LastAuthorization, st, a, now) {
					return
				}
				continue
			}
			if readErr != nil && !gone {
				err = readErr
			}
		}
		if gone {
			logger.Info("The grant was removed while the customer logged in; the outcome of the login is not recorded", "reason", a.reason)
			return
		}
		if err != nil {
			logger.Error(err, "Recording the authorization outcome failed")
		}
		break
	}
	if a.reason != cdv1.CustomerAuthorizedReason {
		c.Recorder.Eventf(eventTarget(grant), nil, corev1.EventTypeWarning, a.reason, "Authorize", "%s", eventnote.Of("Customer authorization failed: %s", a.msg))
	}
}

// setOutcome puts a's outcome into grant's status and returns the patch that writes
// it, to grant alone: guarded, by its resourceVersion (which no other object of its name
// ever has), so that a login recorded meanwhile is judged again; otherwise, by its UID
// (statuspatch), which a merge patch cannot do: the status subresource drops
// metadata.uid from one.
func setOutcome(grant *cdv1.CDUserGrant, a *answer, spent bool, now time.Time, guarded bool) client.Patch {
	before := grant.DeepCopy()
	grant.Status.LastAuthorization = &cdv1.AuthorizationResult{
		Time: metav1.NewTime(now.Truncate(time.Second)), Reason: a.reason, Error: a.oauthError, Message: truncate(a.msg, 1000),
	}
	if a.reason == cdv1.CustomerAuthorizedReason {
		grant.Status.LastAuthorization.AnsweredRequest = answeredRequest(grant)
	}
	if spent {
		grant.Status.AuthorizationURL = ""
	}
	if guarded {
		return client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})
	}
	return statuspatch.For(grant, &before.Status, &grant.Status)
}

// failureRecordWindow is how long a recorded failed login stands for the same grant's
// next ones that spent nothing and failed alike (same reason and OAuth error). Thirty
// seconds: a flood of one replayed redirect costs at most two status writes (and
// controller wakes) a minute per grant and replica, while a customer's next real try
// (reading the page, going back to the identity server, logging in again) takes longer
// than that, so it is still recorded; one that fails differently is recorded at once.
const failureRecordWindow = 30 * time.Second

// failureNews says whether a failed login that spent nothing is worth recording over
// last: not when it comes from a link no newer than a recorded login (a replayed old
// redirect must not undo the login, nor its answeredRequest, which the controller needs),
// nor when last is the same refusal, told within failureRecordWindow.
func failureNews(last *cdv1.AuthorizationResult, st State, a *answer, now time.Time) bool {
	switch {
	case last == nil:
		return true
	case last.Reason == cdv1.CustomerAuthorizedReason && madeBy(st) <= last.Time.Unix():
		return false
	case last.Reason == a.reason && last.Error == a.oauthError && now.Sub(last.Time.Time) < failureRecordWindow:
		return false
	}
	return true
}

// madeBy is the latest a link can have been made (Unix seconds): when it was, or, for a
// link made before states carried that (Issued 0), when it expired. Such a link may be
// newer than a recorded login, so its failure is recorded unless it had expired by then.
func madeBy(st State) int64 {
	if st.Issued == 0 {
		return st.Expires
	}
	return st.Issued
}

// failureLog is when this replica last recorded each failure of a grant. It holds only
// grants a genuine link was made for, at most a key per reason and known OAuth error
// each, and forgets those whose window passed.
type failureLog struct {
	mu   sync.Mutex
	last map[failureKey]time.Time
}

// failureKey is one refusal of one grant: the window throttles a replay of it, not the
// customer's next try, which may fail differently.
type failureKey struct {
	uid                types.UID
	reason, oauthError string
}

// failureKeyOf is the key of a's failure of grant uid. The OAuth error is the
// redirect's to choose, so a code the callback does not know is one key: made-up codes
// cannot each buy a status write.
func failureKeyOf(uid types.UID, a *answer) failureKey {
	code := a.oauthError
	if _, known := authorizationErrors[code]; !known && code != "" {
		code = "unknown_error"
	}
	return failureKey{uid: uid, reason: a.reason, oauthError: code}
}

// claim says whether failure k may be recorded at now, and if so notes it.
func (l *failureLog) claim(k failureKey, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[k]; ok && now.Sub(t) < failureRecordWindow {
		return false
	}
	if l.last == nil {
		l.last = map[failureKey]time.Time{}
	}
	for k, t := range l.last {
		if now.Sub(t) >= failureRecordWindow {
			delete(l.last, k)
		}
	}
	l.last[k] = now
	return true
}

// answeredRequest is the reauthorization request a successful login answered: the one
// on the grant as it was claimed, which is the one clearReauthorize removes. A request
// made since has another value (a time, from kubectl cd reauthorize) and stays. A value
// too long for status.lastAuthorization.answeredRequest is not recorded: only the
// callback removes such a request.
func answeredRequest(grant *cdv1.CDUserGrant) string {
	v := grant.Annotations[cdv1.ReauthorizeAnnotation]
	if len(v) > maxAnsweredRequest {
		return ""
	}
	return v
}

// maxAnsweredRequest is AuthorizationResult.AnsweredRequest's MaxLength.
const maxAnsweredRequest = 128

// notWritable says why the callback may not write the refresh-token Secret m for
// grant, or "" when it may: opted in, and bound to grant, to no grant yet (an opted-in
// Secret prepared for a customer who has not logged in), or to a grant that no longer
// exists, by the same rule as the controller (secrets.BoundElsewhere).
func (c *Callback) notWritable(ctx context.Context, grant *cdv1.CDUserGrant, m metav1.ObjectMeta) (string, error) {
	if m.Labels[cdv1.SecretTypeLabel] != cdv1.SecretTypeRefreshToken {
		return "is not labelled " + cdv1.SecretTypeLabel + "=" + cdv1.SecretTypeRefreshToken, nil
	}
	s := &corev1.Secret{ObjectMeta: m}
	// The callback cannot see the reconciler's held results; a held result keeps the
	// in-flight mark on the Secret, which holds the binding by the same rule.
	elsewhere, err := secrets.BoundElsewhere(ctx, c.APIReader, grant, s, nil)
	if err != nil || !elsewhere {
		return "", err
	}
	return "is bound to grant " + secrets.BindingOf(s).Name, nil
}

// eventTarget is obj without its resourceVersion, so repeated events aggregate.
func eventTarget(grant *cdv1.CDUserGrant) *cdv1.CDUserGrant {
	cp := grant.DeepCopy()
	cp.ResourceVersion = ""
	return cp
}
