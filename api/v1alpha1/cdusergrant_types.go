package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CredentialReference names a CDCredential in the CDUserGrant's own namespace.
type CredentialReference struct {
	// name of an AuthorizationCode CDCredential in the CDUserGrant's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// RefreshTokenSecretReference names the Secret, in the CDUserGrant's own namespace, that
// holds the customer's current refresh token. The Secret must be opted in with the label
// cd.credops.io/secret-type=refresh-token, and is bound to the first grant that uses it.
type RefreshTokenSecretReference struct {
	// name of the Secret in the CDUserGrant's namespace, labelled
	// cd.credops.io/secret-type=refresh-token (the operator's callback creates it so).
	// The operator rewrites it on every rotation; pods never mount it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// key in the Secret that holds the refresh token.
	// +optional
	// +kubebuilder:default=refresh_token
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// DeletionPolicy says what happens to a customer's refresh token when its CDUserGrant
// is deleted.
// +kubebuilder:validation:Enum=Retain;Delete
type DeletionPolicy string

const (
	// DeletionPolicyRetain keeps the refresh-token Secret: the customer's session
	// outlives the grant (and an uninstall of the operator).
	DeletionPolicyRetain DeletionPolicy = "Retain"
	// DeletionPolicyDelete revokes the refresh token at the identity server (when the
	// credential has a revocationURL) and deletes the refresh-token Secret, if it is
	// bound to this grant (an imported Secret the grant never spent is left).
	DeletionPolicyDelete DeletionPolicy = "Delete"
)

// CDUserGrantSpec declares one Central Dispatch customer's authorization.
// +kubebuilder:validation:XValidation:rule="!has(self.secretName) || self.secretName != self.refreshTokenSecretRef.name",message="secretName must differ from refreshTokenSecretRef.name: pods would mount the customer's refresh token"
type CDUserGrantSpec struct {
	// credentialRef names the AuthorizationCode CDCredential (the app the customer
	// logged in to) in the same namespace.
	// +required
	CredentialRef CredentialReference `json:"credentialRef"`

	// refreshTokenSecretRef names the Secret holding the customer's current refresh
	// token. Refresh tokens are single-use: the operator replaces the value on every
	// rotation. The Secret is never owned by the grant, so garbage collection never
	// deletes it; only deletionPolicy Delete does.
	// +required
	RefreshTokenSecretRef RefreshTokenSecretReference `json:"refreshTokenSecretRef"`

	// secretName is the Secret that receives the access token. Default: <name>-token;
	// required when the name has over 247 characters, as <name>-token would not be a
	// valid Secret name. (A CR created without it before admission refused that keeps its
	// name: it stalls with SecretTemplateInvalid and spends nothing until this is set.)
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	SecretName string `json:"secretName,omitempty"`

	// secretTemplate is extra metadata copied onto the output Secret.
	// +optional
	SecretTemplate *SecretTemplate `json:"secretTemplate,omitempty"`

	// renewBefore is how long before expiry the token is renewed, for example "10m".
	// Default: a third of the token's lifetime plus up to 10% jitter. Never less than
	// 2 minutes unless the token lives shorter than that, and never sooner than a third
	// of the lifetime after the token was issued (at most 3 refreshes per lifetime); a
	// clamped value is said in the Ready condition's message.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="renewBefore must be a positive duration"
	RenewBefore *metav1.Duration `json:"renewBefore,omitempty"`

	// deletionPolicy says what happens to the customer's refresh token when this grant
	// is deleted: Retain (default) keeps the refresh-token Secret; Delete revokes the
	// token at the identity server (when the credential has a revocationURL) and
	// deletes the Secret, if it is bound to this grant (an imported Secret the grant
	// never spent is left, since another grant may name it).
	// +optional
	// +kubebuilder:default=Retain
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`
}

// CDUserGrantStatus is what the operator observed and did.
type CDUserGrantStatus struct {
	// observedGeneration is the spec generation the operator last acted on. Each
	// condition carries its own: Ready=True keeps that of the token it reports while the
	// token for a newer generation waits (Reconciling=True carries the newer one).
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready (always), Reconciling (while the operator works towards a
	// token or retries), Stalled (while a terminal error holds), FlowMisuse and
	// ReauthorizationRequired (always, True or False).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// expiresAt is when the current access token expires.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// renewalTime is when the operator will next rotate the refresh token.
	// +optional
	RenewalTime *metav1.Time `json:"renewalTime,omitempty"`

	// lastRotationTime is when the refresh token was last rotated.
	// +optional
	LastRotationTime *metav1.Time `json:"lastRotationTime,omitempty"`

	// rotationCount is how many times the operator has rotated the refresh token.
	// +optional
	RotationCount int64 `json:"rotationCount,omitempty"`

	// grantedScopes are the scopes the identity server granted.
	// +optional
	// +listType=atomic
	GrantedScopes []string `json:"grantedScopes,omitempty"`

	// subject is the `sub` claim of the access token when it is a JWT: who the
	// customer is. Read for display only, never trusted for a decision.
	// +optional
	Subject string `json:"subject,omitempty"`

	// authorizationURL is where the customer logs in while the grant awaits
	// authorization or a reauthorization was asked for (set when the manager's callback
	// server is enabled).
	// +optional
	AuthorizationURL string `json:"authorizationURL,omitempty"`

	// lastAuthorization is the outcome of the last customer login the callback
	// received for this grant.
	// +optional
	LastAuthorization *AuthorizationResult `json:"lastAuthorization,omitempty"`

	// lastFailure remembers the last failed refresh or write, so backoff and "refused for
	// good" survive restarts. Absent after a success.
	// +optional
	LastFailure *FailureStatus `json:"lastFailure,omitempty"`

	// secretName is the Secret that holds this CR's access token: the one to mount.
	// Empty until a token is stored, and never a Secret the token is not in: while
	// spec.secretName is held by another Secret (SecretNameConflict), it names the
	// Secret the token is still in, or none.
	// +optional
	SecretName string `json:"secretName,omitempty"`
}

// AuthorizationResult is what the operator's callback saw of one customer login.
type AuthorizationResult struct {
	// time is when the callback received the identity server's answer.
	// +required
	Time metav1.Time `json:"time"`

	// reason is CustomerAuthorized, AuthorizationDenied, AuthorizationFailed or
	// RefreshTokenSecretConflict.
	// +required
	// +kubebuilder:validation:MaxLength=128
	Reason string `json:"reason"`

	// error is the OAuth 2.0 error code of the authorization response, if any
	// (access_denied, invalid_scope, consent_required, …).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Error string `json:"error,omitempty"`

	// message says what happened and what to change. It never holds a code or token.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// answeredRequest is the value of the cd.credops.io/reauthorize annotation (the time
	// `kubectl cd reauthorize` stamped on its request, not a secret) when this login
	// completed: the request the login answered. The controller removes that annotation
	// while it still holds this value, when the callback could not; a request made since
	// has another value and is kept, whatever the clocks say. Empty when no request was
	// pending, the login failed, or the value was longer than this field allows (such a
	// request is removed by the callback only).
	// +optional
	// +kubebuilder:validation:MaxLength=128
	AnsweredRequest string `json:"answeredRequest,omitempty"`
}

// CDUserGrant is one Central Dispatch customer's authorization of an
// AuthorizationCode CDCredential. The operator keeps a fresh access token in its
// output Secret by rotating the customer's single-use refresh token.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:validation:XValidation:rule="has(self.spec.secretName) || self.spec.refreshTokenSecretRef.name != self.metadata.name + '-token'",message="the default output Secret <name>-token would overwrite the refresh-token Secret: set spec.secretName or rename the refresh-token Secret"
// +kubebuilder:validation:XValidation:rule="has(self.spec.secretName) || size(self.metadata.name) <= 247",message="a CDUserGrant named with over 247 characters needs spec.secretName: the default output Secret <name>-token would be longer than a Secret name may be (253 characters)"
// +kubebuilder:resource:shortName=cdgrant,categories=cdcredops
// +kubebuilder:printcolumn:name="Credential",type=string,JSONPath=`.spec.credentialRef.name`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Secret",type=string,JSONPath=`.status.secretName`
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=`.status.expiresAt`
// +kubebuilder:printcolumn:name="Rotations",type=integer,JSONPath=`.status.rotationCount`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type CDUserGrant struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec declares the grant.
	// +required
	Spec CDUserGrantSpec `json:"spec"`

	// status is what the operator observed.
	// +optional
	Status CDUserGrantStatus `json:"status,omitempty"`
}

// CDUserGrantList is a list of CDUserGrants.
// +kubebuilder:object:root=true
type CDUserGrantList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard list metadata.
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the CDUserGrants.
	Items []CDUserGrant `json:"items"`
}

func init() {
	SchemeBuilder.Register(&CDUserGrant{}, &CDUserGrantList{})
}
