package v1alpha1

// SecretTemplate is extra metadata the operator puts on an output Secret, for example
// labels a Reloader or a policy engine selects on. The operator's own labels and
// annotations win over these.
type SecretTemplate struct {
	// labels are copied onto the output Secret.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	Labels map[string]string `json:"labels,omitempty"`

	// annotations are copied onto the output Secret.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Keys of an output Secret (DESIGN §3). Pods mount these.
const (
	// AccessTokenKey holds the bare access token.
	AccessTokenKey = "access_token"
	// TokenTypeKey holds the token type, "Bearer".
	TokenTypeKey = "token_type"
	// ExpiresAtKey holds the token's expiry in RFC 3339 UTC.
	ExpiresAtKey = "expires_at"
	// ScopeKey holds the granted scopes, space separated.
	ScopeKey = "scope"
	// AuthorizationKey holds "Bearer <token>", ready for an Authorization header.
	AuthorizationKey = "authorization"
)

// Labels and annotations the operator sets.
const (
	// ManagedByLabel marks every Secret the operator writes.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedByValue is ManagedByLabel's value.
	ManagedByValue = "cd-credentials-operator"
	// OwnerLabel names the CR an output Secret belongs to, as "<kind>.<name>".
	OwnerLabel = "cd.credops.io/owner"
	// WatchLabel makes a Secret visible to the operator's cache, so a change to it
	// triggers a reconcile at once. The operator puts it on its output Secrets and on
	// every Secret a CR references; set it yourself on a Secret you create after the
	// CR that references it to have it picked up without waiting for a retry.
	WatchLabel = "cd.credops.io/watch"
	// ExpiresAtAnnotation repeats the expiry on the output Secret's metadata.
	ExpiresAtAnnotation = "cd.credops.io/expires-at"
	// RotationInFlightAnnotation is set on a refresh-token Secret while the token it
	// holds is being spent. Its value is a hash of that token (never the token). If it
	// is still there when the operator starts, the previous process died mid-rotation.
	RotationInFlightAnnotation = "cd.credops.io/rotation-in-flight"
	// RotationHolderAnnotation says which process set RotationInFlightAnnotation and
	// when, so a live rotation by another replica is not mistaken for a dead one.
	RotationHolderAnnotation = "cd.credops.io/rotation-holder"
	// RejectedAnnotation holds the hash of a refresh token the identity server answered
	// invalid_grant for: it is never sent again. A new token clears it.
	RejectedAnnotation = "cd.credops.io/rejected"
	// RejectedReasonAnnotation is the ReauthorizationRequired reason of that rejection.
	RejectedReasonAnnotation = "cd.credops.io/rejected-reason"
)

// DefaultIssuer is Central Dispatch's identity server.
const DefaultIssuer = "https://id.centraldispatch.com"
