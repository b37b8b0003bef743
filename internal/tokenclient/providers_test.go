package tokenclient

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// entraBody is Microsoft Entra ID's error body: an AADSTS message with trace lines in
// error_description, and the same code in error_codes (the shape of the sample in
// MicrosoftDocs/entra-docs docs/identity-platform/reference-error-codes.md).
func entraBody(code string, aadsts int, message string) string {
	b, _ := json.Marshal(map[string]any{
		"error": code,
		"error_description": fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: 0000aaaa-11bb-cccc-dd33-eeeeee333333\r\n"+
			"Correlation ID: aaaa0000-bb11-2222-33cc-444444dddddd\r\nTimestamp: 2026-11-23 10:00:00Z", aadsts, message),
		"error_codes":    []int{aadsts},
		"timestamp":      "2026-11-23 10:00:00Z",
		"trace_id":       "0000aaaa-11bb-cccc-dd33-eeeeee333333",
		"correlation_id": "aaaa0000-bb11-2222-33cc-444444dddddd",
		"error_uri":      fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", aadsts),
	})
	return string(b)
}

// entraDescription is entraBody's description as it comes out of scrubbing.
func entraDescription(aadsts int, message string) string {
	return truncate(fmt.Sprintf("AADSTS%d: %s Trace ID: [redacted] Correlation ID: [redacted] Timestamp: 2026-11-23 10:00:00Z", aadsts, message), maxDescription)
}

// TestProviderRefusalsAreClassified feeds the classifier each provider's real answers,
// as the sources cited in wordings.go show them: status, code and description.
func TestProviderRefusalsAreClassified(t *testing.T) {
	refused := func(kind ErrorKind, status int, code, description string, scopes ...string) Error {
		return Error{Kind: kind, StatusCode: status, Code: code, Description: description, Scopes: scopes}
	}
	hydraInvalidGrant := "The provided authorization grant (e.g., authorization code, resource owner credentials) or refresh token is invalid, expired, revoked, " +
		"does not match the redirection URI used in the authorization request, or was issued to another client. The refresh token was already used."
	checkAnswers(t, map[string]answerCase{
		"cd: spent refresh token":    {400, nil, `{"error":"invalid_grant"}`, refused(KindInvalidGrant, 400, "invalid_grant", "")},
		"cd: unknown scope":          {400, nil, `{"error":"invalid_scope"}`, refused(KindInvalidScope, 400, "invalid_scope", "")},
		"cd: grant type not allowed": {400, nil, `{"error":"unauthorized_client"}`, refused(KindGrantTypeNotAllowed, 400, "unauthorized_client", "")},
		"cd: grant type unsupported": {400, nil, `{"error":"unsupported_grant_type"}`, refused(KindGrantTypeNotAllowed, 400, "unsupported_grant_type", "")},
		"cd: wrong client secret":    {401, nil, `{"error":"invalid_client"}`, refused(KindInvalidClient, 401, "invalid_client", "")},
		"oidc: interaction required": {400, nil, `{"error":"interaction_required"}`, refused(KindInvalidGrant, 400, "interaction_required", "")},
		"oidc: consent required":     {400, nil, `{"error":"consent_required"}`, refused(KindInvalidGrant, 400, "consent_required", "")},
		"oidc: login required":       {400, nil, `{"error":"login_required"}`, refused(KindInvalidGrant, 400, "login_required", "")},
		"oidc-provider: spent refresh token": {400, nil, `{"error":"invalid_grant","error_description":"grant request is invalid"}`,
			refused(KindInvalidGrant, 400, "invalid_grant", "grant request is invalid")},
		"oidc-provider: scope not allowed": {400, nil, `{"error":"invalid_scope","error_description":"requested scope is not allowed","scope":"pricing"}`,
			refused(KindInvalidScope, 400, "invalid_scope", "requested scope is not allowed", "pricing")},
		"oidc-provider: grant type not allowed": {400, nil, `{"error":"unauthorized_client","error_description":"requested grant type is not allowed for this client"}`,
			refused(KindGrantTypeNotAllowed, 400, "unauthorized_client", "requested grant type is not allowed for this client")},
		"hydra: refresh token already used": {400, nil, `{"error":"invalid_grant","error_description":"` + hydraInvalidGrant + `"}`,
			refused(KindInvalidGrant, 400, "invalid_grant", truncate(hydraInvalidGrant, maxDescription))},
		"hydra: scope not allowed": {400, nil, `{"error":"invalid_scope","error_description":"The requested scope is invalid, unknown, or malformed. The OAuth 2.0 Client is not allowed to request scope 'pricing'."}`,
			refused(KindInvalidScope, 400, "invalid_scope", "The requested scope is invalid, unknown, or malformed. The OAuth 2.0 Client is not allowed to request scope 'pricing'.", "pricing")},
		"hydra: grant type not allowed": {400, nil, `{"error":"unauthorized_client","error_description":"The client is not authorized to request a token using this method. The OAuth 2.0 Client is not allowed to use authorization grant 'client_credentials'."}`,
			refused(KindGrantTypeNotAllowed, 400, "unauthorized_client", "The client is not authorized to request a token using this method. The OAuth 2.0 Client is not allowed to use authorization grant 'client_credentials'.")},
		"dex: spent refresh token": {400, nil, `{"error":"invalid_request","error_description":"Refresh token is invalid or has already been claimed by another client."}`,
			refused(KindInvalidGrant, 400, "invalid_request", "Refresh token is invalid or has already been claimed by another client.")},
		"dex: refresh token of another client": {400, nil, `{"error":"invalid_grant","error_description":"Refresh token is invalid or has already been claimed by another client."}`,
			refused(KindInvalidGrant, 400, "invalid_grant", "Refresh token is invalid or has already been claimed by another client.")},
		"dex: expired refresh token": {400, nil, `{"error":"invalid_request","error_description":"Refresh token expired."}`,
			refused(KindInvalidGrant, 400, "invalid_request", "Refresh token expired.")},
		"dex: unrecognized scopes": {400, nil, `{"error":"invalid_scope","error_description":"Unrecognized scope(s) [\"pricing\" \"billing\"]"}`,
			refused(KindInvalidScope, 400, "invalid_scope", `Unrecognized scope(s) ["pricing" "billing"]`, "pricing", "billing")},
		"dex: unauthorized scope on a refresh": {400, nil, `{"error":"invalid_request","error_description":"Requested scopes contain unauthorized scope(s): [\"pricing\"]."}`,
			refused(KindInvalidScope, 400, "invalid_request", `Requested scopes contain unauthorized scope(s): ["pricing"].`, "pricing")},
		"dex: grant type disabled": {400, nil, `{"error":"unsupported_grant_type"}`, refused(KindGrantTypeNotAllowed, 400, "unsupported_grant_type", "")},
		"keycloak: token is not active": {400, nil, `{"error":"invalid_grant","error_description":"Token is not active"}`,
			refused(KindInvalidGrant, 400, "invalid_grant", "Token is not active")},
		"keycloak: stale token": {400, nil, `{"error":"invalid_grant","error_description":"Stale token"}`, refused(KindInvalidGrant, 400, "invalid_grant", "Stale token")},
		"keycloak: refresh token reuse exceeded": {400, nil, `{"error":"invalid_grant","error_description":"Maximum allowed refresh token reuse exceeded"}`,
			refused(KindInvalidGrant, 400, "invalid_grant", "Maximum allowed refresh token reuse exceeded")},
		"keycloak: session not active": {400, nil, `{"error":"invalid_grant","error_description":"Session not active"}`,
			refused(KindInvalidGrant, 400, "invalid_grant", "Session not active")},
		"keycloak: consent taken back": {400, nil, `{"error":"invalid_scope","error_description":"Client no longer has requested consent from user"}`,
			refused(KindInvalidGrant, 400, "invalid_scope", "Client no longer has requested consent from user")},
		"keycloak: invalid scopes": {400, nil, `{"error":"invalid_scope","error_description":"Invalid scopes: marketplace pricing"}`,
			refused(KindInvalidScope, 400, "invalid_scope", "Invalid scopes: marketplace pricing", "marketplace", "pricing")},
		"keycloak: service accounts disabled": {401, nil, `{"error":"unauthorized_client","error_description":"Client not enabled to retrieve service account"}`,
			refused(KindGrantTypeNotAllowed, 401, "unauthorized_client", "Client not enabled to retrieve service account")},
		"keycloak: standard flow disabled": {400, nil, `{"error":"invalid_grant","error_description":"Client not allowed to exchange code"}`,
			refused(KindGrantTypeNotAllowed, 400, "invalid_grant", "Client not allowed to exchange code")},
		"keycloak: wrong client secret": {401, nil, `{"error":"unauthorized_client","error_description":"Invalid client or Invalid client credentials"}`,
			refused(KindInvalidClient, 401, "unauthorized_client", "Invalid client or Invalid client credentials")},
		"entra: refresh token inactive (AADSTS700082)": {400, nil, entraBody("invalid_grant", 700082, "The refresh token has expired due to inactivity. The token was issued on 2026-05-03T12:11:26.5799126Z and was inactive for 90.00:00:00."),
			refused(KindInvalidGrant, 400, "invalid_grant", entraDescription(700082, "The refresh token has expired due to inactivity. The token was issued on 2026-05-03T12:11:26.5799126Z and was inactive for 90.00:00:00."))},
		"entra: grant expired or revoked (AADSTS70008)": {400, nil, entraBody("invalid_grant", 70008, "The provided authorization code or refresh token has expired due to inactivity."),
			refused(KindInvalidGrant, 400, "invalid_grant", entraDescription(70008, "The provided authorization code or refresh token has expired due to inactivity."))},
		"entra: grant revoked (AADSTS50173)": {400, nil, entraBody("invalid_grant", 50173, "The provided grant has expired due to it being revoked, and a fresh auth token is needed."),
			refused(KindInvalidGrant, 400, "invalid_grant", entraDescription(50173, "The provided grant has expired due to it being revoked, and a fresh auth token is needed."))},
		"entra: code already redeemed (AADSTS54005)": {400, nil, entraBody("invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token."),
			refused(KindInvalidGrant, 400, "invalid_grant", entraDescription(54005, "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token."))},
		"entra: client request loop (AADSTS50196) is a throttle of five minutes": {400, nil, entraBody("invalid_grant", 50196, "The server terminated an operation because it encountered a client request loop. Please contact your app vendor."),
			func() Error {
				e := refused(KindRateLimited, 400, "invalid_grant", entraDescription(50196, "The server terminated an operation because it encountered a client request loop. Please contact your app vendor."))
				e.RetryAfter, e.RetryAfterGuessed = 5*time.Minute, true
				return e
			}()},
		"entra: MFA required (AADSTS50076)": {400, nil, entraBody("interaction_required", 50076, "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication."),
			refused(KindInvalidGrant, 400, "interaction_required", entraDescription(50076, "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication."))},
		"entra: invalid scope (AADSTS70011)": {400, nil, entraBody("invalid_scope", 70011, "The provided value for the input parameter 'scope' isn't valid. The scope https://example.contoso.com/activity.read isn't valid."),
			refused(KindInvalidScope, 400, "invalid_scope", entraDescription(70011, "The provided value for the input parameter 'scope' isn't valid. The scope https://example.contoso.com/activity.read isn't valid."), "https://example.contoso.com/activity.read")},
		"entra: client unknown to the tenant (AADSTS700011)": {400, nil, entraBody("unauthorized_client", 700011, "Application with identifier 'app-1' was not found in the directory 'contoso'."),
			refused(KindInvalidClient, 400, "unauthorized_client", entraDescription(700011, "Application with identifier 'app-1' was not found in the directory 'contoso'."))},
		// The body as captured in microsoft/AzureMonitorAddonForSplunk#114: unauthorized_client
		// here is a client unknown to the tenant, not a grant type the client may not use.
		"entra: application not found in the tenant (AADSTS700016)": {400, nil, entraBody("unauthorized_client", 700016, "Application with identifier 'app-1' was not found in the directory 'contoso'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."),
			refused(KindInvalidClient, 400, "unauthorized_client", entraDescription(700016, "Application with identifier 'app-1' was not found in the directory 'contoso'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."))},
		"okta: refresh token invalid or expired": {400, nil, `{"error":"invalid_grant","error_description":"The refresh token is invalid or expired."}`,
			refused(KindInvalidGrant, 400, "invalid_grant", "The refresh token is invalid or expired.")},
		"okta: scope not configured": {400, nil, `{"error":"invalid_scope","error_description":"One or more scopes are not configured for the authorization server resource."}`,
			refused(KindInvalidScope, 400, "invalid_scope", "One or more scopes are not configured for the authorization server resource.")},
		"okta: grant type not allowed": {400, nil, `{"error":"unauthorized_client","error_description":"The client is not authorized to use the provided grant type. Configured grant types: [authorization_code, refresh_token]."}`,
			refused(KindGrantTypeNotAllowed, 400, "unauthorized_client", "The client is not authorized to use the provided grant type. Configured grant types: [authorization_code, refresh_token].")},
		"auth0: spent refresh token": {403, nil, `{"error":"invalid_grant","error_description":"Unknown or invalid refresh token."}`,
			refused(KindInvalidGrant, 403, "invalid_grant", "Unknown or invalid refresh token.")},
		"auth0: scope not granted": {403, nil, `{"error":"access_denied","error_description":"Client has not been granted scopes: read:users, read:clients"}`,
			refused(KindInvalidScope, 403, "access_denied", "Client has not been granted scopes: read:users, read:clients", "read:users", "read:clients")},
		"auth0: grant type not allowed": {403, nil, `{"error":"unauthorized_client","error_description":"Grant type 'client_credentials' not allowed for the client.","error_uri":"https://auth0.com/docs/clients/client-grant-types"}`,
			refused(KindGrantTypeNotAllowed, 403, "unauthorized_client", "Grant type 'client_credentials' not allowed for the client.")},
		"google: token expired or revoked": {400, nil, `{"error":"invalid_grant","error_description":"Token has been expired or revoked."}`,
			refused(KindInvalidGrant, 400, "invalid_grant", "Token has been expired or revoked.")},
		"google: invalid scope": {400, nil, `{"error":"invalid_scope","error_description":"Some requested scopes were invalid. {valid=[openid, https://www.googleapis.com/auth/userinfo.email], invalid=[marketplace]}","error_uri":"http://code.google.com/apis/accounts/docs/OAuth2.html"}`,
			refused(KindInvalidScope, 400, "invalid_scope", "Some requested scopes were invalid. {valid=[openid, https://www.googleapis.com/auth/userinfo.email], invalid=[marketplace]}", "marketplace")},
		"google: grant type not supported": {400, nil, `{"error":"unsupported_grant_type","error_description":"Invalid grant_type: client_credentials"}`,
			refused(KindGrantTypeNotAllowed, 400, "unsupported_grant_type", "Invalid grant_type: client_credentials")},
	})
}

func TestScopesNamed(t *testing.T) {
	cases := map[string]struct {
		description, body string
		want              []string
	}{
		"no description":                              {"", "", nil},
		"a shape it does not know names nothing":      {"scope pricing is not permitted", "", nil},
		"oidc-provider's scope member wins":           {"requested scope is not allowed", `{"scope":"pricing billing"}`, []string{"pricing", "billing"}},
		"a scope member that is not a string":         {"requested scope is not allowed", `{"scope":["pricing"]}`, nil},
		"dex's quoted list":                           {`Unrecognized scope(s) ["a" "b:c"]`, "", []string{"a", "b:c"}},
		"dex's openid requirement":                    {`Missing required scope(s) ["openid"].`, "", []string{"openid"}},
		"google's invalid list, not the valid one":    {"Some requested scopes were invalid. {valid=[openid], invalid=[a, https://x.example.com/y]}", "", []string{"a", "https://x.example.com/y"}},
		"auth0's list":                                {"Client has not been granted scopes: read:users, write:users", "", []string{"read:users", "write:users"}},
		"keycloak's list":                             {"Invalid scopes: openid marketplace", "", []string{"openid", "marketplace"}},
		"hydra's quoted name":                         {"The OAuth 2.0 Client is not allowed to request scope 'pricing'.", "", []string{"pricing"}},
		"entra's name, across a line break":           {"AADSTS70011: The provided value for the input parameter 'scope' isn't valid. The scope api://x/.default isn't valid.\r\nTrace ID: 1", "", []string{"api://x/.default"}},
		"a name repeated counts once":                 {"Invalid scopes: a a b", "", []string{"a", "b"}},
		"a name with a quote or backslash is dropped": {`Invalid scopes: a"b c\d e`, "", []string{"e"}},
		"a secret-looking name is dropped":            {"Invalid scopes: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl read", "", []string{"read"}},
		"a name longer than any scope is dropped":     {"Invalid scopes: " + longName(129) + " ok", "", []string{"ok"}},
		"at most 16 names":                            {"Invalid scopes: s1 s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 s12 s13 s14 s15 s16 s17", "", []string{"s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14", "s15", "s16"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := scopesNamed(tc.description, []byte(tc.body), newRedactor(Endpoint{ClientSecret: testSecret}))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("scopes (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("the request's secret named as a scope is dropped", func(t *testing.T) {
		got := scopesNamed("Invalid scopes: "+testSecret+" read", nil, newRedactor(Endpoint{ClientSecret: testSecret}))
		if diff := cmp.Diff([]string{"read"}, got); diff != "" {
			t.Errorf("scopes (-want +got):\n%s", diff)
		}
	})
	t.Run("ScopesIn reads a callback's description", func(t *testing.T) {
		if diff := cmp.Diff([]string{"openid"}, ScopesIn(`Missing required scope(s) ["openid"].`)); diff != "" {
			t.Errorf("scopes (-want +got):\n%s", diff)
		}
	})
}

// longName is a valid scope token n characters long that does not look like a token
// to the scrubber (it has dots every 8 characters).
func longName(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a'
		if i%8 == 7 {
			b[i] = '.'
		}
	}
	return string(b)
}
