package onboarding

import (
	"net/url"
	"strings"
	"time"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// DefaultStateTTL is how long an authorization link stays valid.
const DefaultStateTTL = 15 * time.Minute

// Authorizer builds the authorization URLs put in CDUserGrant status.
type Authorizer struct {
	Signer *Signer
	// CallbackURL is where the operator's callback is reachable; it is the redirect_uri
	// unless the CDCredential declares its own redirectURL (which must point at the
	// same callback).
	CallbackURL string
	StateTTL    time.Duration
}

// AuthorizationURL returns the URL a customer opens to authorize a grant, and when it
// stops working. current is the URL the grant already shows; it is kept while it has
// more than a minute to live, so status does not change on every reconcile.
func (a *Authorizer) AuthorizationURL(grant *cdv1.CDUserGrant, cred *cdv1.CDCredential, clientID, current string, now time.Time) (string, time.Time) {
	if current != "" {
		if u, err := url.Parse(current); err == nil {
			if exp := ExpiresAt(u.Query().Get("state")); exp.After(now.Add(time.Minute)) {
				if st, err := a.Signer.Verify(u.Query().Get("state"), now); err == nil && st.UID == grant.UID {
					return current, exp
				}
			}
		}
	}
	ttl := a.StateTTL
	if ttl <= 0 {
		ttl = DefaultStateTTL
	}
	st := NewState(grant.Namespace, grant.Name, grant.UID, now, ttl)
	q := url.Values{
		"client_id":     {clientID},
		"response_type": {"code"},
		"grant_type":    {"authorization_code"}, // Central Dispatch documents it
		"redirect_uri":  {RedirectURI(cred, a.CallbackURL)},
		"scope":         {strings.Join(Scopes(cred), " ")},
		"state":         {a.Signer.Sign(st)},
	}
	if !cred.Spec.DisablePKCE {
		q.Set("code_challenge", Challenge(a.Signer.Verifier(st)))
		q.Set("code_challenge_method", "S256")
	}
	return AuthorizeEndpoint(cred) + "?" + q.Encode(), time.Unix(st.Expires, 0)
}

// AuthorizeEndpoint is a credential's authorize endpoint.
func AuthorizeEndpoint(cred *cdv1.CDCredential) string {
	if cred.Spec.AuthorizeURL != "" {
		return cred.Spec.AuthorizeURL
	}
	issuer := cred.Spec.Issuer
	if issuer == "" {
		issuer = cdv1.DefaultIssuer
	}
	return strings.TrimRight(issuer, "/") + "/connect/authorize"
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
