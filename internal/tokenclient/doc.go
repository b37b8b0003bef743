// Package tokenclient asks an OAuth 2.0 token endpoint for tokens: client credentials, a
// refresh, or an authorization-code exchange. It wraps golang.org/x/oauth2 with the
// settings that Central Dispatch's single-use refresh tokens need.
//
// The client authentication style is always explicit. x/oauth2's auto-detect
// (AuthStyleAutoDetect) sends the form with the secret in a Basic header and, on any
// error, sends the same form again with the secret in the body. For a refresh that
// second request spends the refresh token twice; Central Dispatch answers the reuse with
// invalid_grant and may revoke the customer's whole grant, so a human has to log in
// again. An unknown AuthMethod is therefore an error, never a guess.
//
// A refresh is never retried, here or below. x/oauth2 sends one request when the style
// is explicit; redirects are not followed (a redirect would replay the form at another
// URL); and each request goes through a transport that refuses to be called twice and
// takes away the request's GetBody, so that net/http cannot re-send the form (it would
// after an HTTP/2 stream reset, though the server had the whole request). The transport
// sends a request once more itself only when the server provably did not process it:
// nothing of it went out, or a graceful HTTP/2 GOAWAY refused its stream. Whether to try again is the caller's decision, made from the
// typed *Error: Ambiguous says the server may already have processed the request, so a
// refresh token may be spent even though no answer arrived.
//
// Every refusal becomes one ErrorKind, whatever the provider's words: the OAuth error
// code (RFC 6749 §5.2) first, then the known wordings of widely used identity servers
// (wordings.go, each row citing its source: Dex answers a spent refresh token with
// invalid_request, Auth0 with 403, Keycloak says "unauthorized_client" for a wrong
// secret), then the status: a 404 or 405 is KindEndpointNotFound, a URL that is no token
// endpoint, named in the error. A 4xx nothing places is KindRefused, never KindTransient:
// the server answered, and the caller bounds its retries. Tokens that could split a
// header or a Secret (RFC 6750 b64token, RFC 6749 appendix A.17) are refused before
// the caller sees them. Revoke speaks RFC 7009 with the same guarantees as a token
// request.
//
// Secrets are only sent to hosts on an allow-list, over https (http only to loopback),
// so whoever can create a custom resource cannot point the operator at their own server
// and collect a client secret. Nothing a server says is trusted to be free of secrets
// either: error descriptions are scrubbed before they reach a condition, an event or a
// log line. The package itself never logs.
package tokenclient
