package tokenclient

import (
	"strings"
	"time"
)

// codeKinds are the OAuth error codes whose meaning is settled: RFC 6749 §5.2 for the
// token endpoint, and OpenID Connect Core §3.1.2.6 for the ones that say a person must
// take part again (Microsoft Entra ID answers a refresh with interaction_required when
// Conditional Access or MFA wants the user; see the Entra row below). invalid_request
// and access_denied are not here: they say nothing about the grant, so the description
// or the status decides. server_error and temporarily_unavailable say the server is at
// fault: kindFor places them (serverConditions).
var codeKinds = map[string]ErrorKind{
	"invalid_client":             KindInvalidClient,
	"invalid_grant":              KindInvalidGrant,
	"unauthorized_client":        KindGrantTypeNotAllowed,
	"unsupported_grant_type":     KindGrantTypeNotAllowed,
	"invalid_scope":              KindInvalidScope,
	"interaction_required":       KindInvalidGrant,
	"login_required":             KindInvalidGrant,
	"consent_required":           KindInvalidGrant,
	"account_selection_required": KindInvalidGrant,
}

// wording is one provider's known refusal: an OAuth error code and a phrase of its
// error_description, lower-cased with runs of white space as one space. A row applies
// first to answers with its code, where it may overrule the code (Dex says
// invalid_request for a spent refresh token); then, for 4xx answers nothing else
// placed, to the phrase under any code.
type wording struct {
	provider, code, phrase string
	kind                   ErrorKind
}

// throttleWindows are how long a provider's throttle lasts when its KindRateLimited
// answer names no wait (no Retry-After or reset header).
var throttleWindows = map[string]time.Duration{
	// Entra counts identical requests over five minutes (reference-breaking-changes.md,
	// below): a retry sooner lands in the same window.
	"entra": 5 * time.Minute,
}

// wait is how long the throttle w describes lasts, 0 when unknown or not a throttle.
func (w wording) wait() time.Duration {
	if w.kind != KindRateLimited {
		return 0
	}
	return throttleWindows[w.provider]
}

// wordings are the refusals of widely used identity servers, each confirmed in the
// source named above its row. Descriptions are for developers and may change; the rows
// only sharpen what the code and the status already say.
var wordings = []wording{
	// Duende IdentityServer (Central Dispatch's server) answers every refusal with a bare
	// code (invalid_grant, unauthorized_client, invalid_scope) and no description:
	// github.com/DuendeSoftware/IdentityServer src/IdentityServer/Validation/Default/TokenRequestValidator.cs.
	// codeKinds places them.

	// panva/node-oidc-provider lib/helpers/errors.js (InvalidGrant's description)
	{"oidc-provider", "invalid_grant", "grant request is invalid", KindInvalidGrant},
	// panva/node-oidc-provider lib/actions/grants/client_credentials.js (and the `scope`
	// member the error body carries, lib/helpers/err_out.js)
	{"oidc-provider", "invalid_scope", "requested scope is not allowed", KindInvalidScope},
	// panva/node-oidc-provider lib/actions/token.js (allowedGrantTypeCheck)
	{"oidc-provider", "unauthorized_client", "requested grant type is not allowed for this client", KindGrantTypeNotAllowed},

	// ory/fosite handler/oauth2/flow_refresh.go (Ory Hydra's refresh-token reuse hint)
	{"hydra", "invalid_grant", "the refresh token was already used", KindInvalidGrant},
	// ory/fosite handler/oauth2/flow_refresh.go (expired refresh token hint)
	{"hydra", "invalid_grant", "the refresh token expired", KindInvalidGrant},
	// ory/fosite handler/oauth2/flow_client_credentials.go (invalid_scope hint)
	{"hydra", "invalid_scope", "is not allowed to request scope", KindInvalidScope},
	// ory/fosite handler/oauth2/flow_client_credentials.go, flow_refresh.go (grant type hint)
	{"hydra", "unauthorized_client", "is not allowed to use authorization grant", KindGrantTypeNotAllowed},

	// dexidp/dex server/grants/refresh.go (refreshLookupError); github.com/dexidp/dex/issues/2613
	{"dex", "invalid_request", "refresh token is invalid or has already been claimed by another client", KindInvalidGrant},
	// dexidp/dex server/grants/refresh.go (refreshLookupError, expired refresh token)
	{"dex", "invalid_request", "refresh token expired", KindInvalidGrant},
	// dexidp/dex server/refreshhandlers.go (getRefreshScopes)
	{"dex", "invalid_request", "requested scopes contain unauthorized scope(s)", KindInvalidScope},
	// dexidp/dex server/grants/grants.go (validateScopes)
	{"dex", "invalid_scope", "unrecognized scope(s)", KindInvalidScope},
	// dexidp/dex server/grants/grants.go, server/authflow/request.go (openid required)
	{"dex", "invalid_scope", "missing required scope(s)", KindInvalidScope},

	// github.com/keycloak/keycloak/issues/37961 (400 invalid_grant "Token is not active")
	{"keycloak", "invalid_grant", "token is not active", KindInvalidGrant},
	// keycloak/keycloak services/src/main/java/org/keycloak/protocol/oidc/TokenManager.java
	{"keycloak", "invalid_grant", "stale token", KindInvalidGrant},
	// keycloak/keycloak services/src/main/java/org/keycloak/protocol/oidc/TokenManager.java
	{"keycloak", "invalid_grant", "maximum allowed refresh token reuse exceeded", KindInvalidGrant},
	// keycloak/keycloak services/src/main/java/org/keycloak/protocol/oidc/TokenManager.java
	// ("Session not active", "Offline session not active")
	{"keycloak", "invalid_grant", "session not active", KindInvalidGrant},
	// keycloak/keycloak services/src/main/java/org/keycloak/protocol/oidc/grants/AuthorizationCodeGrantType.java:
	// invalid_grant for a client whose standard flow is off, which is a grant type refusal
	{"keycloak", "invalid_grant", "client not allowed to exchange code", KindGrantTypeNotAllowed},
	// keycloak/keycloak services/src/main/java/org/keycloak/protocol/oidc/TokenManager.java:
	// invalid_scope on a refresh when the user took back consent, which only a new
	// authorization mends
	{"keycloak", "invalid_scope", "client no longer has requested consent from user", KindInvalidGrant},
	// github.com/keycloak/keycloak/issues/33185 ("Invalid scopes: read")
	{"keycloak", "invalid_scope", "invalid scopes:", KindInvalidScope},
	// keycloak/keycloak services/src/main/java/org/keycloak/protocol/oidc/grants/ClientCredentialsGrantType.java (HTTP 401)
	{"keycloak", "unauthorized_client", "client not enabled to retrieve service account", KindGrantTypeNotAllowed},
	// github.com/keycloak/keycloak/issues/16923: Keycloak says unauthorized_client (401)
	// when the client secret is wrong
	{"keycloak", "unauthorized_client", "invalid client or invalid client credentials", KindInvalidClient},
	// github.com/code-specialist/fastapi-keycloak/issues/65 (older Keycloak releases)
	{"keycloak", "unauthorized_client", "invalid client secret", KindInvalidClient},
	// github.com/keycloak/keycloak/issues/16124
	{"keycloak", "unauthorized_client", "client secret not provided in request", KindInvalidClient},

	// MicrosoftDocs/entra-docs docs/identity-platform/reference-error-codes.md: AADSTS70008
	// ExpiredOrRevokedGrant, AADSTS700082 ExpiredOrRevokedGrantInactiveToken, AADSTS50173
	// FreshTokenNeeded, AADSTS54005 code already redeemed, AADSTS70011 InvalidScope,
	// AADSTS700011 UnauthorizedClientAppNotFoundInOrgIdTenant and AADSTS700016
	// UnauthorizedClient_DoesNotMatchRequest (an unknown client id, or the wrong tenant)
	{"entra", "invalid_grant", "aadsts70008:", KindInvalidGrant},
	{"entra", "invalid_grant", "aadsts700082:", KindInvalidGrant},
	{"entra", "invalid_grant", "aadsts50173:", KindInvalidGrant},
	{"entra", "invalid_grant", "aadsts54005:", KindInvalidGrant},
	{"entra", "invalid_scope", "aadsts70011:", KindInvalidScope},
	{"entra", "unauthorized_client", "aadsts700011:", KindInvalidClient},
	{"entra", "unauthorized_client", "aadsts700016:", KindInvalidClient},
	// MicrosoftDocs/entra-docs docs/identity-platform/reference-breaking-changes.md
	// ("Looping clients will be interrupted": more than 15 identical requests in 5
	// minutes get invalid_grant AADSTS50196 "client request loop"); MSAL.NET calls the
	// code AadThrottledErrorCode. The grant and the client are fine: it is a throttle,
	// with no Retry-After, so the wait outlasts Entra's five-minute window.
	{"entra", "invalid_grant", "aadsts50196:", KindRateLimited},

	// github.com/okta/okta-react-native/issues/109
	{"okta", "invalid_grant", "the refresh token is invalid or expired", KindInvalidGrant},
	// github.com/okta/okta-aspnet/issues/51; github.com/okta-samples/okta-express-sample/issues/6
	{"okta", "invalid_scope", "one or more scopes are not configured for the authorization server resource", KindInvalidScope},
	// help.okta.com/oie/en-us/content/topics/settings/embedded-sign-in-support.htm
	// ("the client isn't authorized to use the provided grant type"); the body reads
	// "The client is not authorized to use the provided grant type. Configured grant types: […]."
	{"okta", "unauthorized_client", "the client is not authorized to use the provided grant type", KindGrantTypeNotAllowed},

	// support.auth0.com "Troubleshoot Refresh Token Unknown or Invalid Before Expiry
	// '403: Unknown or invalid refresh token'"; github.com/auth0/Auth0.swift/issues/819
	{"auth0", "invalid_grant", "unknown or invalid refresh token", KindInvalidGrant},
	// sandrinodimattia/auth0-session-events packages/demo-cli/README.md (403 access_denied)
	{"auth0", "access_denied", "client has not been granted scopes", KindInvalidScope},
	// github.com/auth0/ruby-auth0/issues/190; github.com/auth0/auth0-java/issues/165 (403)
	{"auth0", "unauthorized_client", "not allowed for the client", KindGrantTypeNotAllowed},

	// github.com/GeneralTask/task-manager/pull/2169; github.com/porjo/youtubeuploader/issues/181
	{"google", "invalid_grant", "token has been expired or revoked", KindInvalidGrant},
	// github.com/bergercookie/syncall/pull/18 ("{invalid=[…]}" at the token endpoint)
	{"google", "invalid_scope", "some requested scopes were invalid", KindInvalidScope},
	// github.com/android/play-billing-samples/issues/471 ("Invalid grant_type: password")
	{"google", "unsupported_grant_type", "invalid grant_type", KindGrantTypeNotAllowed},
}

// normalizeDescription prepares an error_description for phrase matching.
func normalizeDescription(description string) string {
	return strings.Join(strings.Fields(strings.ToLower(strings.Map(dropControl, description))), " ")
}

// wordingFor finds the first row whose phrase the description contains, among the rows
// with the given code, or among all rows when anyCode is set.
func wordingFor(code, description string, anyCode bool) (wording, bool) {
	if description == "" {
		return wording{}, false
	}
	for _, w := range wordings {
		if (anyCode || w.code == code) && strings.Contains(description, w.phrase) {
			return w, true
		}
	}
	return wording{}, false
}
