package v1alpha1

// Condition types. Ready is always present; Stalled only while a terminal error holds
// (kstatus); FlowMisuse on both kinds and ReauthorizationRequired on CDUserGrant are
// always present with True or False so `kubectl wait --for=condition=X=false` works.
const (
	// ReadyCondition is True when the output Secret holds a current token (or, for an
	// AuthorizationCode CDCredential, when its client Secret is usable).
	ReadyCondition = "Ready"

	// StalledCondition is True while a terminal error holds: the operator will not
	// retry until the spec or a referenced object changes.
	StalledCondition = "Stalled"

	// FlowMisuseCondition is True when a credential is used for a flow it was not
	// issued for: the mistake behind the incident this operator exists to prevent.
	FlowMisuseCondition = "FlowMisuse"

	// ReauthorizationRequiredCondition is True when the customer behind a CDUserGrant
	// must log in again because no usable refresh token is left.
	ReauthorizationRequiredCondition = "ReauthorizationRequired"
)

// Reasons for Ready=True.
const (
	// TokenIssuedReason is set on Ready=True when the output Secret holds a token that
	// is not yet due for renewal (ClientSharedAcrossFlowsReason takes its place while the
	// client id is also declared for the other flow). It is also the reason of the
	// TokenIssued event.
	TokenIssuedReason = "TokenIssued"

	// ClientReadyReason is set on Ready=True for an AuthorizationCode CDCredential whose
	// client Secret holds both keys: CDUserGrants can use it (ClientSharedAcrossFlowsReason
	// takes its place while the client id is also declared for the other flow).
	ClientReadyReason = "ClientReady"
)

// Reasons for Ready=False. Stalled carries the same reason as Ready when it is set.
const (
	// ReconcilingReason is set on Ready=False on an object the operator has not finished
	// a first pass on (so Ready is present from the start).
	ReconcilingReason = "Reconciling"

	// ClientSecretNotFoundReason: the Secret named by spec.clientSecretRef does not exist
	// in the CDCredential's namespace.
	ClientSecretNotFoundReason = "ClientSecretNotFound"

	// ClientSecretInvalidReason: the client Secret lacks the client id or secret key, or
	// a value is empty or not printable text.
	ClientSecretInvalidReason = "ClientSecretInvalid"

	// CredentialNotFoundReason: the CDCredential named by a CDUserGrant's
	// spec.credentialRef does not exist in its namespace.
	CredentialNotFoundReason = "CredentialNotFound"

	// CredentialNotReadyReason: the CDCredential a CDUserGrant uses is not Ready.
	CredentialNotReadyReason = "CredentialNotReady"

	// TokenRequestFailedReason: the token endpoint could not be reached or answered with
	// a server error. Transient: retried with backoff.
	TokenRequestFailedReason = "TokenRequestFailed"

	// InvalidClientReason: the token endpoint rejected the client id or secret
	// (`invalid_client`). Terminal until the client Secret or the spec changes.
	InvalidClientReason = "InvalidClient"

	// InvalidTokenResponseReason: the token endpoint answered success with a response
	// that cannot be used (no access_token, not a Bearer token, not JSON).
	InvalidTokenResponseReason = "InvalidTokenResponse"

	// TokenHostNotAllowedReason: the token endpoint's host is not on the manager's
	// --allowed-token-hosts list, or the URL is plain http to a non-loopback host.
	// Nothing is sent. Terminal until the spec changes.
	TokenHostNotAllowedReason = "TokenHostNotAllowed"

	// ProductNotAllocatedReason: the token endpoint answered HTTP 402: the subscription
	// behind this client lacks the product, or the client is the wrong credential set.
	ProductNotAllocatedReason = "ProductNotAllocated"

	// RateLimitedReason: the token endpoint answered 429 or 503 with Retry-After; the
	// operator waits as long as it was told.
	RateLimitedReason = "RateLimited"

	// OutputSecretConflictReason: the output Secret's name is taken by a Secret the
	// operator did not create. Terminal until spec.secretName or that Secret changes.
	OutputSecretConflictReason = "OutputSecretConflict"

	// AwaitingAuthorizationReason: a CDUserGrant has no refresh token yet; the customer
	// has to log in (or someone has to put a refresh token in its Secret).
	AwaitingAuthorizationReason = "AwaitingAuthorization"
)

// Reasons for FlowMisuse. When FlowMisuse is True, Ready is False with the same reason.
const (
	// FlowCorrectReason is set on FlowMisuse=False: nothing suggests a wrong flow.
	FlowCorrectReason = "FlowCorrect"

	// UserGrantOnClientCredentialsReason: a CDUserGrant names a ClientCredentials
	// CDCredential. Nothing is sent to the identity server.
	UserGrantOnClientCredentialsReason = "UserGrantOnClientCredentials"

	// GrantTypeNotAllowedReason: the identity server refused the grant type for this
	// client (unauthorized_client, unsupported_grant_type, HTTP 403, or a 400 saying the
	// grant type is not allowed): the client id belongs to the other credential set.
	GrantTypeNotAllowedReason = "GrantTypeNotAllowed"

	// ClientSharedAcrossFlowsReason: the same client id is declared by CDCredentials of
	// both flows somewhere in the cluster (the incident's root cause). Set on FlowMisuse
	// of every one of them, and on Ready=True of those that still work, so the Reason
	// column of `kubectl get cdcred` shows it.
	ClientSharedAcrossFlowsReason = "ClientSharedAcrossFlows"
)

// Reasons for ReauthorizationRequired.
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

	// RefreshTokenRejectedReason: the identity server answered invalid_grant: the
	// refresh token is spent, expired or revoked. Terminal until the Secret changes.
	RefreshTokenRejectedReason = "RefreshTokenRejected"

	// RotationInterruptedReason: a previous process died after sending the refresh
	// token and before storing its successor, and the identity server has since
	// rejected the stored token. The customer must log in again.
	RotationInterruptedReason = "RotationInterrupted"
)

// Event reasons that are not also condition reasons.
const (
	// RefreshTokenRotatedReason is the event recorded after each successful rotation.
	RefreshTokenRotatedReason = "RefreshTokenRotated"

	// FlowMisuseDetectedReason is the event recorded once per onset of FlowMisuse=True.
	FlowMisuseDetectedReason = "FlowMisuseDetected"

	// ReauthorizationRequiredReason is the event recorded once per onset of
	// ReauthorizationRequired=True.
	ReauthorizationRequiredReason = "ReauthorizationRequired"
)
