package onboarding

import (
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

// DefaultStateTTL is how long an authorization link stays valid.
const DefaultStateTTL = 15 * time.Minute

// keptWhile is how long a link shown in status must still be good for to be kept: a
// customer who opens it must have time to log in.
const keptWhile = time.Minute

// MinStateTTL is the shortest validity of an authorization link. A grant shows a link
// until it has keptWhile left and comes back then for a new one: a link that lives no
// longer than keptWhile is never kept, and every pass of every grant waiting for its
// customer wrote a new one into status, a second apart. At MinStateTTL a link is kept
// for a minute.
const MinStateTTL = 2 * keptWhile

// Authorizer builds the authorization URLs put in CDUserGrant status.
type Authorizer struct {
	Signer *Signer
	// CallbackURL is where the operator's callback is reachable; it is the redirect_uri
	// unless the CDCredential declares its own redirectURL (which must point at the
	// same callback).
	CallbackURL string
	// StateTTL is how long a new link is valid: DefaultStateTTL when unset, and at
	// least MinStateTTL (the manager refuses a shorter --authorization-link-ttl).
	StateTTL time.Duration
}

// AuthorizationURL returns the URL a customer opens to authorize a grant, and when it
// stops working. current is the URL the grant already shows: its state is kept while it
// has more than a minute to live, so status does not change on every reconcile, and the
// URL is rebuilt around it so a changed credential (scopes, parameters) shows at once.
func (a *Authorizer) AuthorizationURL(grant *cdv1.CDUserGrant, cred *cdv1.CDCredential, clientID, current string, now time.Time) (string, time.Time) {
	if st, ok := a.currentState(grant, current, now); ok {
		return a.build(cred, clientID, st), time.Unix(st.Expires, 0)
	}
	ttl := a.StateTTL
	if ttl <= 0 {
		ttl = DefaultStateTTL
	}
	ttl = max(ttl, MinStateTTL)
	st := NewState(grant.Namespace, grant.Name, grant.UID, now, ttl)
	return a.build(cred, clientID, st), time.Unix(st.Expires, 0)
}

// currentState is the state of the URL a grant shows, while it is genuine, the grant's,
// good for more than a minute and not yet spent. A login claims its state on the grant
// (UsedStateAnnotation) before the code is exchanged; when that login fails (no refresh
// token, a refused code) the grant still waits, and the link it shows must be a new one:
// the spent one only answers "already used".
func (a *Authorizer) currentState(grant *cdv1.CDUserGrant, current string, now time.Time) (State, bool) {
	u, err := url.Parse(current)
	if current == "" || err != nil {
		return State{}, false
	}
	st, err := a.Signer.Verify(u.Query().Get("state"), now.Add(keptWhile))
	return st, err == nil && st.UID == grant.UID && !claimed(grant.Annotations, st)
}

// build is the authorization request (RFC 6749 §4.1.1) for one state, through x/oauth2
// so an authorize endpoint that carries its own query keeps it: client_id,
// response_type=code, grant_type=authorization_code (Central Dispatch documents it),
// redirect_uri, scope, state, PKCE S256, and the credential's authorizationParameters.
// When offline_access is requested and the credential sets no prompt, prompt=consent is
// sent: OpenID Connect Core §11 has providers ignore offline_access without it. A
// parameter with an empty value is not sent at all (`prompt: ""` turns that off).
func (a *Authorizer) build(cred *cdv1.CDCredential, clientID string, st State) string {
	conf := oauth2.Config{
		ClientID:    clientID,
		Endpoint:    oauth2.Endpoint{AuthURL: AuthorizeEndpoint(cred)},
		RedirectURL: RedirectURI(cred, a.CallbackURL),
		Scopes:      Scopes(cred),
	}
	var opts []oauth2.AuthCodeOption
	params := cred.Spec.AuthorizationParameters
	if _, set := params["prompt"]; !set && slices.Contains(conf.Scopes, "offline_access") {
		opts = append(opts, oauth2.SetAuthURLParam("prompt", "consent"))
	}
	for _, k := range slices.Sorted(maps.Keys(params)) {
		if v := params[k]; v != "" {
			opts = append(opts, oauth2.SetAuthURLParam(k, v))
		}
	}
	// After the credential's parameters, so it wins over one admitted before admission
	// refused grant_type (a later option of the same name replaces an earlier one).
	opts = append(opts, oauth2.SetAuthURLParam("grant_type", "authorization_code"))
	if !cred.Spec.DisablePKCE {
		opts = append(opts, oauth2.S256ChallengeOption(a.Signer.Verifier(st)))
	}
	return conf.AuthCodeURL(a.Signer.Sign(st), opts...)
}

// AuthorizeEndpoint is a credential's authorize endpoint.
func AuthorizeEndpoint(cred *cdv1.CDCredential) string {
	if cred.Spec.AuthorizeURL != "" {
		return cred.Spec.AuthorizeURL
	}
	return strings.TrimRight(secrets.Issuer(cred), "/") + "/connect/authorize"
}

// RedirectURI is the redirect URI registered for a credential.
func RedirectURI(cred *cdv1.CDCredential, callbackURL string) string {
	if cred.Spec.RedirectURL != "" {
		return cred.Spec.RedirectURL
	}
	return callbackURL
}

// Scopes are the scopes requested for a customer login: the credential's, or Central
// Dispatch's default [marketplace, offline_access].
func Scopes(cred *cdv1.CDCredential) []string {
	if len(cred.Spec.Scopes) > 0 {
		return cred.Spec.Scopes
	}
	return []string{"marketplace", "offline_access"}
}
