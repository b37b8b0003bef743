package v1alpha1

// Condition types. Ready is always present; Reconciling and Stalled follow kstatus:
// Reconciling is present while the operator works towards a token or retries a failure
// that may pass, Stalled while a terminal error holds. FlowMisuse (both kinds) and
// ReauthorizationRequired (CDUserGrant) are always present with True or False, so
// `kubectl wait --for=condition=X=false` works.
const (
	// ReadyCondition is True when the output Secret holds a current token (or, for an
	// AuthorizationCode CDCredential, when its client is usable).
	ReadyCondition = "Ready"

	// ReconcilingCondition is True while the operator is still working towards Ready: a
	// first pass, a token being stored, a failure it retries with backoff.
	ReconcilingCondition = "Reconciling"

	// StalledCondition is True while a terminal error holds: the operator will not
	// retry until the spec or a referenced object changes, except that a refusal the
	// identity server alone may fix is asked again at status.lastFailure.recheckTime.
	StalledCondition = "Stalled"

	// FlowMisuseCondition is True when a credential is used for a flow it was not
	// issued for: the mistake behind the incident this operator exists to prevent.
	FlowMisuseCondition = "FlowMisuse"

	// ReauthorizationRequiredCondition is True when the customer behind a CDUserGrant
	// must log in again because no usable refresh token is left (or a new login was
	// asked for).
	ReauthorizationRequiredCondition = "ReauthorizationRequired"
)

// Reasons for Ready=True.
const (
	// TokenIssuedReason is set on Ready=True when the output Secret holds a token that
	// is not yet due for renewal (ClientSharedAcrossFlowsReason takes its place while the
	// client is also declared for the other flow). It is also the reason of the event
	// recorded when a CR gets its first token, or its first after a failure.
	TokenIssuedReason = "TokenIssued"

	// ClientReadyReason is set on Ready=True for an AuthorizationCode CDCredential whose
	// client id and secret are usable (ClientSharedAcrossFlowsReason takes its place
	// while the client is also declared for the other flow).
	ClientReadyReason = "ClientReady"
)

// Reasons for Ready=False (and Reconciling or Stalled, which carry Ready's reason).
const (
	// ReconcilingReason is set on Ready=False on an object the operator has not finished
	// a first pass on (so Ready is present from the start).
	ReconcilingReason = "Reconciling"

	// TokenRequestsThrottledReason is set on Reconciling=True of a CR whose token request
	// waits for its turn: the operator's token requests are split among the namespaces
	// asking for them (--token-requests-per-second,
	// --token-requests-per-namespace-per-second), and its namespace has used its part
	// for now. Ready keeps its reason meanwhile (Reconciling on a first pass), and
	// Stalled goes. A CR whose Ready=True stands on its current generation's token
	// writes nothing while it waits: its token still works.
	TokenRequestsThrottledReason = "TokenRequestsThrottled"

	// ClientSecretNotFoundReason: the Secret named by spec.clientSecretRef does not exist
	// in the CDCredential's namespace. Waiting: its creation brings the CR back.
	ClientSecretNotFoundReason = "ClientSecretNotFound"

	// ClientSecretInvalidReason: the client Secret lacks the client secret (or the
	// client id, when spec.clientID is unset), or a value is empty or not printable text.
	// Terminal until the Secret or the spec changes.
	ClientSecretInvalidReason = "ClientSecretInvalid"

	// SecretNotOptedInReason: a referenced Secret exists but lacks the
	// cd.credops.io/secret-type label with the expected value, so nothing is read from it.
	// The message gives the `kubectl label` command. Terminal until the Secret or the
	// spec changes.
	SecretNotOptedInReason = "SecretNotOptedIn"

	// CredentialNotFoundReason: the CDCredential named by a CDUserGrant's
	// spec.credentialRef does not exist in its namespace, or (on a sharded manager, as
	// the message says) exists without the grant's shard label.
	CredentialNotFoundReason = "CredentialNotFound"

	// CredentialNotReadyReason: the CDCredential a CDUserGrant uses is not Ready.
	CredentialNotReadyReason = "CredentialNotReady"

	// TokenRequestFailedReason: the token endpoint could not be reached, timed out or
	// answered with a server error. Transient: retried with exponential backoff.
	TokenRequestFailedReason = "TokenRequestFailed"

	// TokenRequestRefusedReason: the token endpoint refused a client-credentials request
	// with an answer no known provider uses for a specific error. It is tried twice more
	// with backoff, then Stalled until the spec or the client Secret changes. Also set,
	// for a credential or a grant, when the token URL answered 404 or 405 (no token
	// endpoint there: spec.issuer or spec.tokenURL is wrong): Stalled at once, asked
	// again at status.lastFailure.recheckTime.
	TokenRequestRefusedReason = "TokenRequestRefused"

	// InvalidClientReason: the token endpoint rejected the client id or secret
	// (`invalid_client`). Terminal until the client Secret or the spec changes, and
	// rechecked (status.lastFailure.recheckTime): a rotated secret may not be live at
	// the identity server yet.
	InvalidClientReason = "InvalidClient"

	// InvalidTokenResponseReason: the token endpoint answered success with a response
	// that cannot be used (no access_token, not a Bearer token, not JSON, a token with
	// characters a header or a Secret must not hold), or with a token that expired
	// before it could be stored. Retried with backoff.
	InvalidTokenResponseReason = "InvalidTokenResponse"

	// TokenHostNotAllowedReason: the token endpoint's host is not on the manager's
	// --allowed-token-hosts list, or the URL is plain http to a non-loopback host.
	// Nothing is sent. Terminal until the spec changes, rechecked (a manager restarted
	// with another allow-list).
	TokenHostNotAllowedReason = "TokenHostNotAllowed"

	// ProductNotAllocatedReason: the token endpoint answered HTTP 402: the subscription
	// behind this client lacks the product, or the client is the wrong credential set.
	// Terminal until the spec or the client Secret changes, rechecked (the product may be
	// allocated).
	ProductNotAllocatedReason = "ProductNotAllocated"

	// ScopeNotAllowedReason: the identity server refused a requested scope. The message
	// names the requested scopes and any the server named. Terminal until the spec
	// changes, rechecked (the client's registration may gain the scope).
	ScopeNotAllowedReason = "ScopeNotAllowed"

	// RateLimitedReason: the token endpoint answered 429 or 503 with Retry-After; the
	// operator waits as long as it was told.
	RateLimitedReason = "RateLimited"

	// SecretNameConflictReason: the output Secret's name is taken by a Secret this CR
	// does not own. Nothing is requested while it is. Not terminal: the CR takes the name
	// once that Secret is deleted (at once for a Secret carrying
	// cd.credops.io/secret-type, such as another CR's output; within 5 minutes for
	// another Secret) or spec.secretName changes.
	SecretNameConflictReason = "SecretNameConflict"

	// SecretTemplateInvalidReason: spec.secretTemplate would make the output Secret
	// invalid (bad keys, values, or too much metadata), or its name is no valid Secret
	// name (the default <name>-token of a CR named with over 247 characters, created
	// before admission refused that). Nothing is requested until the spec changes.
	SecretTemplateInvalidReason = "SecretTemplateInvalid"

	// OutputSecretTooLargeReason: the CR's output Secret carries more than 128 KiB of
	// labels, annotations, owner references and finalizers (someone added them: the
	// operator's own are a few hundred bytes, and a template's at most about 77 KiB). The
	// operator's cache keeps only a stub of such a Secret, and its writes would not make
	// it smaller, so nothing is requested or written until it is made smaller or deleted;
	// either is an event for the CR, which then goes on at once.
	OutputSecretTooLargeReason = "OutputSecretTooLarge"

	// MetadataTooLargeReason: the CR itself carries more than 128 KiB of labels,
	// annotations, owner references and finalizers. The operator's cache keeps only a
	// stub of such a CR, so the operator does nothing for it: no token is requested, and
	// no finalizer added or removed (a CR being deleted waits). What a rotation left
	// unstored (a grant's new refresh token) is still stored. It goes on at once when the
	// CR is made smaller.
	MetadataTooLargeReason = "MetadataTooLarge"

	// SecretWriteFailedReason: the API server refused to store a token (forbidden,
	// invalid, too large, a quota, an admission policy). The message carries the API
	// server's reason and message, never a value. The token already issued is held in
	// memory and written again (every 5-6 s while it is a new refresh token whose
	// predecessor is spent); no new token is requested before the held access token
	// expires. A refresh-token Secret made immutable while its token was out is named,
	// with the one fix (delete it: the operator creates it again with the new token);
	// an immutable output Secret of the CR's own is replaced instead of reported. On a
	// CDUserGrant it is also set when the API server refuses the in-flight mark on the
	// refresh-token Secret for good (an admission policy, RBAC): the mark comes before the
	// refresh token is sent, so nothing is sent and the access token is not renewed; the
	// grant tries again with backoff, and at once when the Secret changes.
	SecretWriteFailedReason = "SecretWriteFailed"

	// AwaitingAuthorizationReason: a CDUserGrant has no refresh token yet; the customer
	// has to log in (or someone has to put a refresh token in its Secret). Without the
	// callback server no login link is ever published: the message then says
	// NoLoginLinkMessage and how to turn the callback on.
	AwaitingAuthorizationReason = "AwaitingAuthorization"

	// AuthorizationDeniedReason: the customer (or the identity server on their behalf)
	// declined the authorization (`error=access_denied` on the callback). The link in
	// status stays valid: the customer can try again.
	AuthorizationDeniedReason = "AuthorizationDenied"

	// AuthorizationFailedReason: the callback received an OAuth error other than a
	// denial (`invalid_scope`, `consent_required`, `login_required`, …), or the code
	// exchange failed. The message names the error and what to change.
	AuthorizationFailedReason = "AuthorizationFailed"

	// RefreshTokenSecretInUseReason: the refresh-token Secret is bound to another
	// CDUserGrant, which the message names. Nothing is sent. Not terminal: the grant
	// takes the Secret over once that grant is deleted (at once when this manager watches
	// it; within 5 minutes for a grant of another shard), or names another Secret and no
	// rotation of this one is out (no in-flight mark on it; within 5 minutes), or spends
	// its own once the spec names another Secret.
	RefreshTokenSecretInUseReason = "RefreshTokenSecretInUse"

	// RefreshTokenSecretImmutableReason: the refresh-token Secret is immutable
	// (`immutable: true`, set by a user or an admission policy). Every rotation writes the
	// new refresh token into it, which the API server refuses for an immutable Secret, and
	// `immutable` cannot be unset: so nothing is sent (a token sent would be spent, its
	// successor held in memory only). Terminal until the Secret is created again without
	// `immutable` (opted in, with the current refresh token).
	RefreshTokenSecretImmutableReason = "RefreshTokenSecretImmutable"

	// NotInShardReason (Ready=Unknown): the CR's labels no longer match the shard of the
	// manager that served it (--shard-label-selector): unless another manager's shard
	// selects it, nothing renews its token. Written by the shard it left; replaced by the
	// first pass of a shard that selects it.
	NotInShardReason = "NotInShard"

	// RefreshTokenSecretConflictReason: a customer logged in, but the grant's
	// refresh-token Secret exists and is not one the callback may write (not opted in,
	// or bound to another grant), so the code was not exchanged. When another grant
	// created or bound the Secret while the customer logged in (two grants naming one
	// Secret), the code was exchanged: the refresh token was not stored and is revoked
	// at the CDCredential's revocationURL, which the message confirms.
	RefreshTokenSecretConflictReason = "RefreshTokenSecretConflict"
)

// Reasons for FlowMisuse. When FlowMisuse is True, Ready is False with the same reason
// (except ClientSharedAcrossFlows on a credential that still works).
const (
	// FlowCorrectReason is set on FlowMisuse=False: nothing suggests a wrong flow.
	FlowCorrectReason = "FlowCorrect"

	// UserGrantOnClientCredentialsReason: a CDUserGrant names a ClientCredentials
	// CDCredential. Nothing is sent to the identity server.
	UserGrantOnClientCredentialsReason = "UserGrantOnClientCredentials"

	// GrantTypeNotAllowedReason: the identity server refused the grant type for this
	// client (unauthorized_client, unsupported_grant_type, HTTP 403, or a 400 saying the
	// grant type is not allowed): the client id belongs to the other credential set.
	// Terminal until the spec or the client Secret changes, rechecked (the client may be
	// given the grant type).
	GrantTypeNotAllowedReason = "GrantTypeNotAllowed"

	// ClientSharedAcrossFlowsReason: the same client (id and secret) is declared by
	// CDCredentials of both flows somewhere in the cluster (the incident's root cause).
	// Set on FlowMisuse of every one of them, and on Ready=True of those that still
	// work, so the Reason column of `kubectl get cdcred` shows it.
	ClientSharedAcrossFlowsReason = "ClientSharedAcrossFlows"
)

// Reasons for ReauthorizationRequired. When it is True, Ready is False with the same
// reason, except for RefreshTokenMissing (Ready is AwaitingAuthorization: no token yet)
// and ReauthorizationRequested (the grant keeps working meanwhile).
const (
	// RefreshTokenValidReason is set on ReauthorizationRequired=False: the grant holds a
	// refresh token the identity server last accepted.
	RefreshTokenValidReason = "RefreshTokenValid"

	// RefreshTokenNotCheckedReason is set on ReauthorizationRequired=False before the
	// operator has got as far as reading the refresh token (the credential is missing or
	// not ready), so the condition is present from the start.
	RefreshTokenNotCheckedReason = "RefreshTokenNotChecked"

	// RefreshTokenMissingReason: the refresh-token Secret or its key does not exist.
	RefreshTokenMissingReason = "RefreshTokenMissing"

	// RefreshTokenRejectedReason: the identity server refused the refresh token for good
	// (invalid_grant, or a provider's own words for a spent, expired or revoked token).
	// Terminal until the Secret holds a new refresh token.
	RefreshTokenRejectedReason = "RefreshTokenRejected"

	// RefreshTokenRefusedReason: the identity server refused the refresh token three
	// times with an answer no known provider uses for a specific error. The operator
	// stops rather than loop on one token; the message carries the provider's words.
	RefreshTokenRefusedReason = "RefreshTokenRefused"

	// RefreshTokenSpentReason: the refresh-token Secret was set back to a refresh token
	// this operator already spent and replaced (SpentHashesAnnotation): a GitOps tool
	// re-synced it from Git, or its data was restored from a backup (a restore of the
	// whole Secret brings back its old list, and is not caught). Nothing is sent (a reused
	// token makes a provider with reuse detection revoke the whole session). Set only when
	// the live token could not be put back (RefreshTokenRestoredReason: this process did
	// not see the update that replaced a token it had stored). Terminal until the Secret
	// holds another token: the customer logs in again, or the current token is put back.
	RefreshTokenSpentReason = "RefreshTokenSpent"

	// RotationInterruptedReason: a rotation was cut short after the refresh token was
	// sent (the process died, or the answer was lost), and the identity server has since
	// rejected the stored token, or it was sent twice without an answer. The customer
	// must log in again.
	RotationInterruptedReason = "RotationInterrupted"

	// RotationPendingAtOtherClientReason: a refresh got no answer, and before its one
	// resend spec.credentialRef was pointed at another client (another client id or
	// token URL). The token may be live and belongs to the client it was sent to, so it
	// is not sent to the other, and the resend is not counted. Terminal until the grant
	// points back at that client (the resend then goes there) or a new login replaces
	// the token.
	RotationPendingAtOtherClientReason = "RotationPendingAtOtherClient"

	// ReauthorizationRequestedReason: someone asked for a new customer login (the
	// cd.credops.io/reauthorize annotation, `kubectl cd reauthorize`). The grant keeps
	// rotating its current token until the customer logs in.
	ReauthorizationRequestedReason = "ReauthorizationRequested"
)

// Event reasons that are not also condition reasons.
const (
	// FlowMisuseDetectedReason is the event recorded once per onset of FlowMisuse=True.
	FlowMisuseDetectedReason = "FlowMisuseDetected"

	// ReauthorizationRequiredReason is the event recorded once per onset of
	// ReauthorizationRequired=True.
	ReauthorizationRequiredReason = "ReauthorizationRequired"

	// CustomerAuthorizedReason is the event recorded when the callback stored a
	// customer's refresh token.
	CustomerAuthorizedReason = "CustomerAuthorized"

	// RefreshTokenRestoredReason is the Warning event recorded when the refresh-token
	// Secret was set back to a refresh token this operator already spent (a GitOps tool
	// re-synced its data from Git) and the operator put the live token back: the one it
	// had stored there itself, seen in the update that replaced it and remembered by
	// this process only. The grant goes on; the tool must create the Secret once and
	// never re-sync its data. After a restart nothing is remembered, and the grant stops
	// with RefreshTokenSpent instead.
	RefreshTokenRestoredReason = "RefreshTokenRestored"

	// RefreshTokenRevokedReason is the event recorded when a deleted grant's refresh
	// token was revoked at the identity server (deletionPolicy Delete).
	RefreshTokenRevokedReason = "RefreshTokenRevoked"

	// RevocationFailedReason is the event recorded when revoking a deleted grant's
	// refresh token failed; the Secret is deleted all the same.
	RevocationFailedReason = "RevocationFailed"

	// RefreshTokenNotRevokedReason is the Warning recorded when a grant's refresh token
	// could not even be sent for revocation (deletionPolicy Delete, or a new refresh
	// token with nowhere to go): the CDCredential is gone or has no revocationURL, or
	// the refresh-token Secret was deleted before the grant (with its namespace, or by
	// hand). The message says which; the session stays valid at the identity server
	// until it expires. The deletion goes on all the same.
	RefreshTokenNotRevokedReason = "RefreshTokenNotRevoked"

	// AnotherInstallReason is the Warning event recorded when another operator install,
	// holding another key, wrote a CDCredential this manager reconciles (its
	// status.clientSecretHash names another key id): two installs select the same
	// objects, which they must never do. Recorded once per such write; no condition,
	// which the two installs would flip back and forth.
	AnotherInstallReason = "AnotherInstall"
)

// NoLoginLinkMessage is in the message of Ready=False AwaitingAuthorization (and of
// ReauthorizationRequired=True RefreshTokenMissing, or ReauthorizationRequested for a
// reauthorization asked of such a manager) when the manager runs without its
// callback server (no --callback-bind-address and --callback-url; the chart's
// callback.enabled false): status.authorizationURL will never be set, so a tool that
// waits for a link (`kubectl cd authorize`) stops at once instead. It is kept stable
// for such tools: the reason alone does not tell the two waits apart.
const NoLoginLinkMessage = "this manager offers no login link"
