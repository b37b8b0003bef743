package onboarding

import (
	"regexp"
	"strings"
	"unicode"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// authorizationError is how the callback reports an OAuth error in an authorization
// response (RFC 6749 §4.1.2.1, OpenID Connect Core §3.1.2.6): the grant's reason, and
// what the customer or the platform team can do about it.
type authorizationError struct {
	reason string
	advice string
}

// authorizationErrors are the error codes of RFC 6749 and OpenID Connect, with what to
// change. The link stays valid for all of them: the state is spent only by a code
// exchange, so the customer can try again once the cause is fixed.
var authorizationErrors = map[string]authorizationError{
	"access_denied":              {cdv1.AuthorizationDeniedReason, "The customer declined, or the identity server refused them. They can try again from the same link."},
	"invalid_scope":              {cdv1.AuthorizationFailedReason, "The identity server refused a requested scope. Check spec.scopes of the CDCredential (some providers, Dex for one, require openid in every login)."},
	"consent_required":           {cdv1.AuthorizationFailedReason, "The identity server needs the customer to consent interactively: do not send prompt=none in spec.authorizationParameters."},
	"login_required":             {cdv1.AuthorizationFailedReason, "The identity server needs the customer to log in interactively: do not send prompt=none in spec.authorizationParameters."},
	"interaction_required":       {cdv1.AuthorizationFailedReason, "The identity server needs the customer to interact (consent, multi-factor): do not send prompt=none in spec.authorizationParameters."},
	"account_selection_required": {cdv1.AuthorizationFailedReason, "The identity server needs the customer to choose an account: do not send prompt=none in spec.authorizationParameters."},
	"unauthorized_client":        {cdv1.AuthorizationFailedReason, "This client may not use the authorization-code flow: is the CDCredential's client the authorization-code credential set?"},
	"unsupported_response_type":  {cdv1.AuthorizationFailedReason, "The identity server does not allow response_type=code for this client: check the client's registration."},
	"invalid_request":            {cdv1.AuthorizationFailedReason, "The identity server found the authorization request malformed: check spec.authorizeURL, spec.redirectURL and spec.authorizationParameters."},
	"server_error":               {cdv1.AuthorizationFailedReason, "The identity server failed. The customer can try again from the same link."},
	"temporarily_unavailable":    {cdv1.AuthorizationFailedReason, "The identity server is temporarily unavailable. The customer can try again from the same link."},
}

var oauthCodePattern = regexp.MustCompile(`^[a-z_]{1,64}$`)

// errorCodeSyntax is RFC 6749 §4.1.2.1's syntax of an error code (printable ASCII but
// the double quote and the backslash), at most as long as lastAuthorization.error holds.
// Providers use more than the standard's lower-case codes (upper case, digits, hyphens).
var errorCodeSyntax = regexp.MustCompile(`^[\x20\x21\x23-\x5B\x5D-\x7E]{1,64}$`)

// errorCode is the code of an authorization response's error as status keeps it
// (lastAuthorization.error): the code when it has the standard's syntax, else none. The
// redirect is anyone's to forge, and a value the field cannot hold would make the API
// server refuse the whole status write.
func errorCode(code string) string {
	if errorCodeSyntax.MatchString(code) {
		return code
	}
	return ""
}

// describeError is the reason of an authorization response's error, the message
// recorded on the grant and the one the customer's page shows. The description is the
// server's (or whoever forged the redirect's) words: a namespace user holds a genuine
// state of a grant of their own and can send anyone a redirect with it, so the
// description goes only to the grant's owner (status, event), cut short and cleaned,
// never onto the page, which is served from a domain every tenant's customers trust.
func describeError(code, description string) (reason, message, page string) {
	if !oauthCodePattern.MatchString(code) {
		code = "unknown_error"
	}
	e, ok := authorizationErrors[code]
	if !ok {
		e = authorizationError{cdv1.AuthorizationFailedReason, "The identity server did not authorize the integration."}
	}
	message = "The identity server answered " + code
	page = message + ". " + e.advice
	if d := cleanDescription(description); d != "" {
		message += " (" + d + ")"
	}
	return e.reason, message + ". " + e.advice, page
}

// cleanDescription keeps a description printable and short: it ends up in status, an
// event and `kubectl cd status`. Control characters (C0, DEL, C1) become spaces; format
// characters (bidi overrides and isolates, zero-width ones) go, since they reorder or
// hide what a reader sees.
func cleanDescription(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r < 0x20, r >= 0x7f && r <= 0x9f:
			return ' '
		case unicode.Is(unicode.Cf, r):
			return -1
		}
		return r
	}, s)
	return truncate(strings.Join(strings.Fields(s), " "), 200)
}

func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}
