package cdsandbox

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Profile names the identity server the sandbox imitates: a spent refresh token, an
// unknown scope and a grant type the client may not use are answered with that
// server's status code and body, and refresh tokens rotate as that server rotates them
// (Rotation). Everything else (codes, PKCE, Stats) stays the sandbox's own.
type Profile string

const (
	// ProfileCD is Central Dispatch (Duende IdentityServer), the default.
	ProfileCD Profile = "cd"
	// ProfileDex is Dex, which also requires the openid scope at login.
	ProfileDex Profile = "dex"
	// ProfileKeycloak is Keycloak with refresh-token rotation on (revokeRefreshToken,
	// refreshTokenMaxReuse 0); Keycloak's default, with it off, keeps old tokens valid
	// as Entra does.
	ProfileKeycloak Profile = "keycloak"
	// ProfileEntra is Microsoft Entra ID, which rotates refresh tokens without revoking
	// the old ones.
	ProfileEntra Profile = "entra"
	// ProfileOkta is Okta (a custom authorization server) with refresh-token rotation
	// and its default 30 s grace period.
	ProfileOkta Profile = "okta"
	// ProfileAuth0 is Auth0, which answers refusals with 403.
	ProfileAuth0 Profile = "auth0"
	// ProfileGoogle is Google, which issues a refresh token only for
	// access_type=offline, and again only after prompt=consent, and never rotates it.
	ProfileGoogle Profile = "google"
)

// Profiles lists every profile, the default first.
func Profiles() []Profile {
	return []Profile{ProfileCD, ProfileDex, ProfileKeycloak, ProfileEntra, ProfileOkta, ProfileAuth0, ProfileGoogle}
}

// ParseProfile reads a profile name; "" is the default.
func ParseProfile(name string) (Profile, error) {
	if name == "" {
		return ProfileCD, nil
	}
	if p := Profile(name); slices.Contains(Profiles(), p) {
		return p, nil
	}
	names := make([]string, 0, len(Profiles()))
	for _, p := range Profiles() {
		names = append(names, string(p))
	}
	return "", fmt.Errorf("unknown profile %q: want one of %s", name, strings.Join(names, ", "))
}

// Rotation is what a server does with the refresh token a refresh presents.
type Rotation int

const (
	// RotateSingleUse: a new refresh token with every refresh, and the one presented is
	// spent; a spent one presented again revokes the grant, its newest token included.
	// Central Dispatch, Dex, Keycloak with Revoke Refresh Token on, Auth0 with rotation.
	RotateSingleUse Rotation = iota
	// RotateWithGrace: RotateSingleUse, but a spent token presented again within
	// RotationGrace of its first use is honoured: Okta's "Grace period for token
	// rotation".
	RotateWithGrace
	// RotateKeepOld: a new refresh token with every refresh, and the one presented stays
	// valid: Entra, Keycloak with Revoke Refresh Token off.
	RotateKeepOld
	// NoRotation: no refresh token in a refresh answer; the one presented stays valid:
	// Google.
	NoRotation
)

// RotationGrace is how long a spent refresh token stays valid under RotateWithGrace:
// Okta's default (0 to 60 s may be set).
const RotationGrace = 30 * time.Second

// profileRotations are the profiles that do not rotate single-use tokens.
var profileRotations = map[Profile]Rotation{
	// developer.okta.com/docs/guides/refresh-tokens ("Grace period for token rotation",
	// 30 s by default; "Refresh token reuse detection" invalidates the most recent
	// refresh token after that).
	ProfileOkta: RotateWithGrace,
	// MicrosoftDocs/entra-docs v2-oauth2-auth-code-flow.md ("Refresh the access token"):
	// "Refresh tokens aren't revoked when used to acquire new access tokens."
	ProfileEntra: RotateKeepOld,
	// developers.google.com/identity/protocols/oauth2/web-server ("Refreshing an access
	// token"): the answer has access_token, expires_in, scope and token_type, no
	// refresh_token; the same refresh token serves every refresh.
	ProfileGoogle: NoRotation,
}

// Rotation is how the profile's server rotates refresh tokens.
func (p Profile) Rotation() Rotation { return profileRotations[p] }

// profileRefreshTTLs are the profiles whose servers give a refresh token a lifetime of
// its own, shorter than the customer's grant, and say it in refresh_expires_in.
var profileRefreshTTLs = map[Profile]time.Duration{
	// keycloak/keycloak TokenManager.java (refresh_expires_in, "Token is not active"
	// for a refresh token past it); the realm's SSO Session Idle, 30 minutes by
	// default, however long the access token lives. Offline tokens answer 0.
	ProfileKeycloak: 30 * time.Minute,
}

// RefreshTokenTTL is the default lifetime of the profile's refresh tokens
// (Options.RefreshTokenTTL); 0 when its server sends no refresh_expires_in.
func (p Profile) RefreshTokenTTL() time.Duration { return profileRefreshTTLs[p] }

// profileSessionMaxes are the profiles whose servers end a login's session a fixed time
// after it, however often it is refreshed.
var profileSessionMaxes = map[Profile]time.Duration{
	// The realm's SSO Session Max, 10 hours by default: keycloak/keycloak TokenManager.java
	// gives a refresh token the lesser of SSO Session Idle and what is left of the
	// session, and refuses a refresh after it with "Session not active". Offline
	// sessions (offline_access) are not limited by it.
	ProfileKeycloak: 10 * time.Hour,
}

// SessionMax is the default lifetime of a login's session at the profile
// (Options.SessionMax); 0 when its server sets none.
func (p Profile) SessionMax() time.Duration { return profileSessionMaxes[p] }

// refusals are how one identity server words the answers a profile changes. The
// wordings are confirmed in the sources named beside them (the same ones the token
// client's classifier cites, but this table is written apart from it on purpose: the
// sandbox is a witness of what the servers say, not of what the classifier expects).
type refusals struct {
	// spentRefreshToken answers a refresh token presented again; the grant is revoked.
	spentRefreshToken func(now time.Time) tokenResult
	// rejectedRefreshToken answers any other refused refresh token: unknown, of a
	// revoked grant, or issued to another client.
	rejectedRefreshToken func(now time.Time) tokenResult
	// expiredRefreshToken answers a refresh token presented after its own expiry
	// (Profile.RefreshTokenTTL); nil for servers that give it none.
	expiredRefreshToken func(now time.Time) tokenResult
	// sessionEnded answers a refresh token presented after its session ended
	// (Profile.SessionMax); nil for servers that end none.
	sessionEnded func(now time.Time) tokenResult
	// unknownScope answers a token request for scopes the client may not have.
	unknownScope func(now time.Time, requested, unknown []string) tokenResult
	// grantTypeRefused answers a grant type the client is not registered for; known is
	// false for a grant type the sandbox does not implement at all.
	grantTypeRefused func(now time.Time, grantType string, known bool, registered []string) tokenResult
	// authorizeScope is the error_description of an authorization request refused for
	// its scopes ("" sends none), or page: the server shows an error page instead of
	// redirecting.
	authorizeScope func(requested, unknown []string) (description string, page bool)
	// rateLimited answers a request the server will not serve now (a FaultStatus with
	// RetryAfter, in seconds); nil answers RFC 6749's temporarily_unavailable with
	// Retry-After.
	rateLimited func(now time.Time, status int, retryAfter string) tokenResult
	// requireOpenID refuses an authorization request without the openid scope.
	requireOpenID bool
	// requireAuthorizationCodeGrantType refuses an authorization request whose
	// grant_type is not authorization_code (checkGrantType).
	requireAuthorizationCodeGrantType bool
	// errorRedirect is the status of a redirect that carries an error.
	errorRedirect int
}

// profileRefusals holds every profile's refusals.
var profileRefusals = map[Profile]refusals{
	// Central Dispatch runs Duende IdentityServer, which answers with bare codes
	// (DuendeSoftware/IdentityServer src/IdentityServer/Validation/Default/TokenRequestValidator.cs);
	// the sandbox has always added its own reuse description.
	ProfileCD: {
		spentRefreshToken:    fixed(oauthError(http.StatusBadRequest, "invalid_grant", "refresh token reuse detected: the grant is revoked")),
		rejectedRefreshToken: fixed(oauthError(http.StatusBadRequest, "invalid_grant", "")),
		unknownScope: func(time.Time, []string, []string) tokenResult {
			return oauthError(http.StatusBadRequest, "invalid_scope", "")
		},
		grantTypeRefused: func(_ time.Time, grantType string, known bool, _ []string) tokenResult {
			if !known {
				return oauthError(http.StatusBadRequest, "unsupported_grant_type", "")
			}
			return oauthError(http.StatusBadRequest, "unauthorized_client", "The client is not authorized to use the "+grantType+" grant type")
		},
		authorizeScope: rfcScopeRefusal,
		// Central Dispatch documents grant_type as a required parameter of the
		// authorization request, "This field should always contain the value
		// authorization_code" (its Authorization Code Flow page). RFC 6749 has no such
		// parameter and tells servers to ignore ones they do not know (§3.1), which is
		// what the other profiles' servers do: only this one checks it.
		requireAuthorizationCodeGrantType: true,
		errorRedirect:                     http.StatusFound,
	},
	// dexidp/dex server/grants/refresh.go (refreshLookupError), server/grants/grants.go
	// (validateScopes, unsupported grant types), server/authflow/request.go (openid
	// required, errors redirected with 303 See Other).
	ProfileDex: {
		spentRefreshToken:    fixed(oauthError(http.StatusBadRequest, "invalid_request", "Refresh token is invalid or has already been claimed by another client.")),
		rejectedRefreshToken: fixed(oauthError(http.StatusBadRequest, "invalid_request", "Refresh token is invalid or has already been claimed by another client.")),
		unknownScope: func(_ time.Time, _, unknown []string) tokenResult {
			return oauthError(http.StatusBadRequest, "invalid_scope", fmt.Sprintf("Unrecognized scope(s) %q", unknown))
		},
		grantTypeRefused: func(time.Time, string, bool, []string) tokenResult {
			return oauthError(http.StatusBadRequest, "unsupported_grant_type", "")
		},
		authorizeScope: func(_, unknown []string) (string, bool) {
			return fmt.Sprintf("Unrecognized scope(s) %q", unknown), false
		},
		requireOpenID: true,
		errorRedirect: http.StatusSeeOther,
	},
	// keycloak/keycloak services/src/main/java/org/keycloak/protocol/oidc/TokenManager.java
	// (reuse, "Session not active", clients that do not match),
	// .../grants/ClientCredentialsGrantType.java (401), .../grants/AuthorizationCodeGrantType.java;
	// keycloak/keycloak#33185 ("Invalid scopes: …", also redirected from the
	// authorization endpoint: devopskube/redmine_openid_connect#73).
	ProfileKeycloak: {
		spentRefreshToken:    fixed(oauthError(http.StatusBadRequest, "invalid_grant", "Maximum allowed refresh token reuse exceeded")),
		rejectedRefreshToken: fixed(oauthError(http.StatusBadRequest, "invalid_grant", "Session not active")),
		expiredRefreshToken:  fixed(oauthError(http.StatusBadRequest, "invalid_grant", "Token is not active")),
		sessionEnded:         fixed(oauthError(http.StatusBadRequest, "invalid_grant", "Session not active")),
		unknownScope: func(_ time.Time, requested, _ []string) tokenResult {
			return oauthError(http.StatusBadRequest, "invalid_scope", "Invalid scopes: "+strings.Join(requested, " "))
		},
		grantTypeRefused: func(_ time.Time, grantType string, _ bool, _ []string) tokenResult {
			switch grantType {
			case "client_credentials":
				return oauthError(http.StatusUnauthorized, "unauthorized_client", "Client not enabled to retrieve service account")
			case "authorization_code":
				return oauthError(http.StatusBadRequest, "invalid_grant", "Client not allowed to exchange code")
			case "refresh_token":
				return oauthError(http.StatusBadRequest, "invalid_grant", "Invalid refresh token. Token client and authorized client don't match")
			}
			return oauthError(http.StatusBadRequest, "unsupported_grant_type", "")
		},
		authorizeScope: func(requested, _ []string) (string, bool) {
			return "Invalid scopes: " + strings.Join(requested, " "), false
		},
		errorRedirect: http.StatusFound,
	},
	// MicrosoftDocs/entra-docs docs/identity-platform/reference-error-codes.md: the body
	// shape (error_codes, trace_id, …), AADSTS50173 FreshTokenNeeded, AADSTS70011
	// InvalidScope (its sample wording), AADSTS70003 UnsupportedGrantType (the table's
	// wording; Entra lets any confidential client use any grant, so this refusal is the
	// closest it has).
	ProfileEntra: {
		spentRefreshToken:    entraRevokedGrant,
		rejectedRefreshToken: entraRevokedGrant,
		unknownScope: func(now time.Time, _, unknown []string) tokenResult {
			return entraError(now, http.StatusBadRequest, "invalid_scope", 70011, entraScopeMessage(unknown))
		},
		grantTypeRefused: func(now time.Time, _ string, _ bool, _ []string) tokenResult {
			return entraError(now, http.StatusBadRequest, "unsupported_grant_type", 70003, "The app returned an unsupported grant type.")
		},
		authorizeScope: func(_, unknown []string) (string, bool) { return "AADSTS70011: " + entraScopeMessage(unknown), false },
		errorRedirect:  http.StatusFound,
	},
	// okta/okta-react-native#109 (refresh), okta/okta-aspnet#51 and
	// okta-samples/okta-express-sample#6 (scopes, also at the authorization endpoint),
	// help.okta.com embedded-sign-in-support (grant type; the body lists the client's
	// configured grant types).
	ProfileOkta: {
		spentRefreshToken:    fixed(oauthError(http.StatusBadRequest, "invalid_grant", "The refresh token is invalid or expired.")),
		rejectedRefreshToken: fixed(oauthError(http.StatusBadRequest, "invalid_grant", "The refresh token is invalid or expired.")),
		unknownScope: func(time.Time, []string, []string) tokenResult {
			return oauthError(http.StatusBadRequest, "invalid_scope", oktaScopeMessage)
		},
		grantTypeRefused: func(_ time.Time, _ string, _ bool, registered []string) tokenResult {
			return oauthError(http.StatusBadRequest, "unauthorized_client",
				"The client is not authorized to use the provided grant type. Configured grant types: ["+strings.Join(registered, ", ")+"].")
		},
		authorizeScope: func([]string, []string) (string, bool) { return oktaScopeMessage, false },
		errorRedirect:  http.StatusFound,
		rateLimited:    oktaRateLimited,
	},
	// support.auth0.com "Troubleshoot Refresh Token Unknown or Invalid Before Expiry
	// '403: Unknown or invalid refresh token'", sandrinodimattia/auth0-session-events
	// packages/demo-cli/README.md (scopes, 403 access_denied), auth0/ruby-auth0#190 and
	// auth0/auth0-java#165 (grant type, 403). How Auth0 joins several scope names, and
	// what its authorization endpoint says of an unknown scope, are not confirmed: the
	// sandbox joins with ", " and redirects RFC 6749's bare invalid_scope.
	ProfileAuth0: {
		spentRefreshToken:    fixed(oauthError(http.StatusForbidden, "invalid_grant", "Unknown or invalid refresh token.")),
		rejectedRefreshToken: fixed(oauthError(http.StatusForbidden, "invalid_grant", "Unknown or invalid refresh token.")),
		unknownScope: func(_ time.Time, _, unknown []string) tokenResult {
			return oauthError(http.StatusForbidden, "access_denied", "Client has not been granted scopes: "+strings.Join(unknown, ", "))
		},
		grantTypeRefused: func(_ time.Time, grantType string, _ bool, _ []string) tokenResult {
			res := oauthError(http.StatusForbidden, "unauthorized_client", "Grant type '"+grantType+"' not allowed for the client.")
			res.body["error_uri"] = "https://auth0.com/docs/clients/client-grant-types"
			return res
		},
		authorizeScope: rfcScopeRefusal,
		errorRedirect:  http.StatusFound,
	},
	// GeneralTask/task-manager#2169 (refresh), bergercookie/syncall#18 and
	// Grive/grive#7 (scopes: a JSON error at the token endpoint, an error page at the
	// authorization endpoint), android/play-billing-samples#471 (grant type).
	ProfileGoogle: {
		spentRefreshToken:    fixed(oauthError(http.StatusBadRequest, "invalid_grant", "Token has been expired or revoked.")),
		rejectedRefreshToken: fixed(oauthError(http.StatusBadRequest, "invalid_grant", "Token has been expired or revoked.")),
		unknownScope: func(_ time.Time, requested, unknown []string) tokenResult {
			res := oauthError(http.StatusBadRequest, "invalid_scope", googleScopeMessage(requested, unknown))
			res.body["error_uri"] = "http://code.google.com/apis/accounts/docs/OAuth2.html"
			return res
		},
		grantTypeRefused: func(_ time.Time, grantType string, _ bool, _ []string) tokenResult {
			return oauthError(http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type: "+grantType)
		},
		authorizeScope: func(requested, unknown []string) (string, bool) { return googleScopeMessage(requested, unknown), true },
		errorRedirect:  http.StatusFound,
	},
}

const oktaScopeMessage = "One or more scopes are not configured for the authorization server resource."

func fixed(res tokenResult) func(time.Time) tokenResult {
	return func(time.Time) tokenResult {
		body := make(map[string]any, len(res.body))
		for k, v := range res.body {
			body[k] = v
		}
		res.body = body
		return res
	}
}

// rfcScopeRefusal is RFC 6749 §4.1.2.1's invalid_scope redirect, with no description.
func rfcScopeRefusal([]string, []string) (string, bool) { return "", false }

func entraRevokedGrant(now time.Time) tokenResult {
	return entraError(now, http.StatusBadRequest, "invalid_grant", 50173, "The provided grant has expired due to it being revoked, and a fresh auth token is needed.")
}

func entraScopeMessage(unknown []string) string {
	return "The provided value for the input parameter 'scope' isn't valid. The scope " + strings.Join(unknown, " ") + " isn't valid."
}

// entraError is Microsoft Entra ID's error body: the AADSTS message and trace lines in
// error_description, the code again in error_codes.
func entraError(now time.Time, status int, code string, aadsts int, message string) tokenResult {
	trace, correlation, stamp := uuid(), uuid(), now.UTC().Format("2006-01-02 15:04:05Z")
	return tokenResult{status: status, body: map[string]any{
		"error":             code,
		"error_description": fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s", aadsts, message, trace, correlation, stamp),
		"error_codes":       []int{aadsts},
		"timestamp":         stamp,
		"trace_id":          trace,
		"correlation_id":    correlation,
		"error_uri":         fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", aadsts),
	}}
}

func googleScopeMessage(requested, unknown []string) string {
	var valid []string
	for _, s := range requested {
		if !slices.Contains(unknown, s) {
			valid = append(valid, s)
		}
	}
	lists := "invalid=[" + strings.Join(unknown, ", ") + "]"
	if len(valid) > 0 {
		lists = "valid=[" + strings.Join(valid, ", ") + "], " + lists
	}
	return "Some requested scopes were invalid. {" + lists + "}"
}

func uuid() string {
	h := randomString(16)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// oktaRateLimited is Okta's 429: no Retry-After, the window's end as X-Rate-Limit-Reset
// in Unix seconds, and Okta's own error body (developer.okta.com rate-limits overview
// and its best-practices page, error E0000047).
func oktaRateLimited(now time.Time, status int, retryAfter string) tokenResult {
	res := tokenResult{status: status, body: map[string]any{
		"errorCode":    "E0000047",
		"errorSummary": "API call exceeded rate limit due to too many requests.",
		"errorLink":    "E0000047",
		"errorCauses":  []any{},
	}}
	secs, err := strconv.Atoi(retryAfter)
	if err != nil {
		secs = 60
	}
	res.header = map[string]string{
		"X-Rate-Limit-Limit":     "600",
		"X-Rate-Limit-Remaining": "0",
		"X-Rate-Limit-Reset":     strconv.FormatInt(now.Add(time.Duration(secs)*time.Second).Unix(), 10),
	}
	return res
}
