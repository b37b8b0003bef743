package onboarding

import (
	"context"
	"errors"
	"html/template"
	"net/http"
	"regexp"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/controllers"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// UsedStateAnnotation on a CDUserGrant holds the hash of the last state whose callback
// was accepted. Setting it is a resourceVersion-guarded write, so across replicas only
// one callback per state gets to exchange its code.
const UsedStateAnnotation = "cd.credops.io/authorization-state"

// Event reasons of the callback.
const (
	CustomerAuthorizedReason  = "CustomerAuthorized"
	AuthorizationFailedReason = "AuthorizationFailed"
)

// Callback serves the redirect back from the identity server. Any replica may serve it:
// every write goes through the API server with a resourceVersion guard.
type Callback struct {
	Client    client.Client
	APIReader client.Reader
	Signer    *Signer
	Tokens    tokenclient.Issuer
	Recorder  events.EventRecorder
	Clock     clock.PassiveClock
	// CallbackURL is this endpoint's external URL (the redirect_uri, unless a
	// CDCredential declares its own).
	CallbackURL string
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><title>{{.Title}}</title></head>
<body><h1>{{.Title}}</h1><p>{{.Message}}</p></body></html>
`))

// callbackError is a refusal: an HTTP status and a message safe to show.
type callbackError struct {
	status int
	msg    string
}

func (e *callbackError) Error() string { return e.msg }

func refuse(status int, msg string) error { return &callbackError{status: status, msg: msg} }

func (c *Callback) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	grant, err := c.handle(r.Context(), r)
	if err == nil {
		_ = page.Execute(w, map[string]string{"Title": "Authorized", "Message": "Thank you: the integration can now act on your behalf. You can close this window."})
		return
	}
	status, msg := http.StatusInternalServerError, "The authorization could not be completed; try again from the authorization link."
	var ce *callbackError
	if errors.As(err, &ce) {
		status, msg = ce.status, ce.msg
	} else {
		log.FromContext(r.Context()).Error(err, "Callback failed")
	}
	if grant != nil {
		c.Recorder.Eventf(controllers.EventTarget(grant), nil, corev1.EventTypeWarning, AuthorizationFailedReason, "Authorize", "Authorization callback refused: %s", msg)
	}
	w.WriteHeader(status)
	_ = page.Execute(w, map[string]string{"Title": "Not authorized", "Message": msg})
}

// handle runs one callback. It returns the grant (when known) for events.
func (c *Callback) handle(ctx context.Context, r *http.Request) (*cdv1.CDUserGrant, error) {
	q := r.URL.Query()
	st, stateErr := c.Signer.Verify(q.Get("state"), c.Clock.Now())
	if errors.Is(stateErr, ErrStateMalformed) || errors.Is(stateErr, ErrStateForged) {
		return nil, refuse(http.StatusBadRequest, stateErr.Error())
	}
	grant, err := c.grantFor(ctx, q.Get("state"), st, stateErr)
	if grant == nil || err != nil {
		return grant, err
	}
	if stateErr != nil {
		return grant, refuse(http.StatusBadRequest, stateErr.Error())
	}
	if err := c.claimState(ctx, grant, st); err != nil {
		return grant, err
	}
	if e := q.Get("error"); e != "" {
		return grant, refuse(http.StatusForbidden, "The identity server did not authorize the integration: "+oauthCode(e))
	}
	if q.Get("code") == "" {
		return grant, refuse(http.StatusBadRequest, "the callback carries no code")
	}
	return grant, c.exchange(ctx, grant, q.Get("code"), st)
}

// grantFor finds the grant a state was issued for; a deleted or recreated grant, or one
// that does not need authorizing, is refused.
func (c *Callback) grantFor(ctx context.Context, raw string, st State, stateErr error) (*cdv1.CDUserGrant, error) {
	if stateErr != nil {
		// Expired but genuine: the grant is known, for the event.
		st, _ = c.Signer.Verify(raw, time.Unix(0, 0))
	}
	grant := &cdv1.CDUserGrant{}
	err := c.APIReader.Get(ctx, types.NamespacedName{Namespace: st.Namespace, Name: st.Name}, grant)
	if apierrors.IsNotFound(err) || (err == nil && grant.UID != st.UID) {
		return nil, refuse(http.StatusNotFound, "the grant this authorization was for no longer exists")
	}
	if err != nil {
		return nil, err
	}
	if stateErr == nil && !meta.IsStatusConditionTrue(grant.Status.Conditions, cdv1.ReauthorizationRequiredCondition) {
		return grant, refuse(http.StatusConflict, "this grant is already authorized")
	}
	return grant, nil
}

// claimState records the state as used with a resourceVersion-guarded patch; a replay,
// or a second replica racing on the same callback, is refused before any exchange.
func (c *Callback) claimState(ctx context.Context, grant *cdv1.CDUserGrant, st State) error {
	if grant.Annotations[UsedStateAnnotation] == NonceHash(st) {
		return refuse(http.StatusConflict, "this authorization link was already used")
	}
	before := grant.DeepCopy()
	metav1.SetMetaDataAnnotation(&grant.ObjectMeta, UsedStateAnnotation, NonceHash(st))
	err := c.Client.Patch(ctx, grant, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
	if apierrors.IsConflict(err) {
		return refuse(http.StatusConflict, "this authorization is already being completed")
	}
	return err
}

// exchange trades the code once and stores the refresh token.
func (c *Callback) exchange(ctx context.Context, grant *cdv1.CDUserGrant, code string, st State) error {
	cred := &cdv1.CDCredential{}
	if err := c.APIReader.Get(ctx, types.NamespacedName{Namespace: grant.Namespace, Name: grant.Spec.CredentialRef.Name}, cred); err != nil {
		return refuse(http.StatusConflict, "the grant's CDCredential cannot be read")
	}
	if cred.Spec.Flow != cdv1.FlowAuthorizationCode {
		return refuse(http.StatusConflict, "the grant's CDCredential is not an AuthorizationCode credential")
	}
	ep, err := controllers.ClientEndpoint(ctx, c.Client, c.APIReader, cred)
	if err != nil {
		return refuse(http.StatusConflict, "the grant's client Secret cannot be used")
	}
	verifier := ""
	if !cred.Spec.DisablePKCE {
		verifier = c.Signer.Verifier(st)
	}
	tok, err := c.Tokens.Exchange(context.WithoutCancel(ctx), ep, code, RedirectURI(cred, c.CallbackURL), verifier)
	if err != nil {
		return refuse(http.StatusBadGateway, "the identity server refused the code: "+err.Error())
	}
	if tok.RefreshToken == "" {
		return refuse(http.StatusBadGateway, "the identity server returned no refresh token: request the offline_access scope")
	}
	if err := c.storeRefreshToken(context.WithoutCancel(ctx), grant, tok.RefreshToken); err != nil {
		return err
	}
	c.Recorder.Eventf(controllers.EventTarget(grant), nil, corev1.EventTypeNormal, CustomerAuthorizedReason, "Authorize", "The customer authorized the integration; the refresh token is stored in Secret %s", grant.Spec.RefreshTokenSecretRef.Name)
	return nil
}

// storeRefreshToken writes the customer's refresh token: into a new Secret owned by the
// grant, or replacing the dead token (and its rejection marks) in the existing one.
func (c *Callback) storeRefreshToken(ctx context.Context, grant *cdv1.CDUserGrant, rt string) error {
	ref := grant.Spec.RefreshTokenSecretRef
	key := ref.Key
	if key == "" {
		key = "refresh_token"
	}
	s := &corev1.Secret{}
	err := c.APIReader.Get(ctx, types.NamespacedName{Namespace: grant.Namespace, Name: ref.Name}, s)
	if apierrors.IsNotFound(err) {
		s = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: grant.Namespace, Name: ref.Name, Labels: map[string]string{cdv1.WatchLabel: "true", cdv1.ManagedByLabel: cdv1.ManagedByValue}},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{key: []byte(rt)},
		}
		if err := controllerutil.SetControllerReference(grant, s, c.Client.Scheme()); err != nil {
			return err
		}
		return c.Client.Create(ctx, s)
	}
	if err != nil {
		return err
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data[key] = []byte(rt)
	controllers.ClearRotationMarks(s)
	return c.Client.Update(ctx, s) // guarded by the resourceVersion just read
}

var oauthCodePattern = regexp.MustCompile(`^[a-z_]{1,64}$`)

// oauthCode shows an OAuth error code from the query only if it looks like one.
func oauthCode(s string) string {
	if oauthCodePattern.MatchString(s) {
		return s
	}
	return "an error"
}
