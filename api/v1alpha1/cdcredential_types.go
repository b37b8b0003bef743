package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Flow is the OAuth 2.0 flow Central Dispatch issued a client for. Central Dispatch
// hands every integrator one client per flow and, since it enforced the split, refuses
// a client used for the other flow.
// +kubebuilder:validation:Enum=ClientCredentials;AuthorizationCode
type Flow string

const (
	// FlowClientCredentials is the server-to-server flow: Market Intelligence (pricing)
	// and Marketplace (listings).
	FlowClientCredentials Flow = "ClientCredentials"
	// FlowAuthorizationCode is the customer-login flow: dispatch, documents, carrier
	// search on behalf of a customer, kept alive with single-use refresh tokens.
	FlowAuthorizationCode Flow = "AuthorizationCode"
)

// ClientAuthMethod is how the client authenticates at the token endpoint. It is never
// auto-detected: probing re-sends the request, which would spend a single-use refresh
// token twice.
// +kubebuilder:validation:Enum=ClientSecretPost;ClientSecretBasic
type ClientAuthMethod string

const (
	// ClientSecretPost sends client_id and client_secret in the form body, as Central
	// Dispatch documents.
	ClientSecretPost ClientAuthMethod = "ClientSecretPost"
	// ClientSecretBasic sends them in an HTTP Basic Authorization header.
	ClientSecretBasic ClientAuthMethod = "ClientSecretBasic"
)

// ClientSecretReference names the Secret, in the CDCredential's own namespace, that
// holds the client secret (and the client id, when spec.clientID is unset). The Secret
// must be opted in with the label cd.credops.io/secret-type=client; the operator reads no
// other Secret.
// +kubebuilder:validation:XValidation:rule="(has(self.clientIDKey) ? self.clientIDKey : 'client_id') != (has(self.clientSecretKey) ? self.clientSecretKey : 'client_secret')",message="clientIDKey and clientSecretKey must name different keys: the client id is published in status.clientID and in login links, the client secret never"
type ClientSecretReference struct {
	// name of the Secret in the CDCredential's namespace, labelled
	// cd.credops.io/secret-type=client. Secrets in other namespaces cannot be referenced.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// clientIDKey is the key in the Secret that holds the client id, read only when
	// spec.clientID is unset. Prefer spec.clientID: a client id is public. Its value is
	// published in status.clientID and in login links, so it must not be
	// clientSecretKey, and a value equal to the client secret is refused.
	// +optional
	// +kubebuilder:default=client_id
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	ClientIDKey string `json:"clientIDKey,omitempty"`

	// clientSecretKey is the key in the Secret that holds the client secret.
	// +optional
	// +kubebuilder:default=client_secret
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	ClientSecretKey string `json:"clientSecretKey,omitempty"`
}

// CDCredentialSpec declares one Central Dispatch API client.
// +kubebuilder:validation:XValidation:rule="!has(self.redirectURL) || self.flow == 'AuthorizationCode'",message="redirectURL is only valid with flow AuthorizationCode"
// +kubebuilder:validation:XValidation:rule="!has(self.authorizeURL) || self.flow == 'AuthorizationCode'",message="authorizeURL is only valid with flow AuthorizationCode"
// +kubebuilder:validation:XValidation:rule="!has(self.secretName) || self.flow == 'ClientCredentials'",message="secretName is only valid with flow ClientCredentials: an AuthorizationCode credential mints no token of its own (its CDUserGrants do)"
// +kubebuilder:validation:XValidation:rule="!has(self.secretName) || self.secretName != self.clientSecretRef.name",message="secretName must differ from clientSecretRef.name: the operator would overwrite the client secret with a token"
// +kubebuilder:validation:XValidation:rule="!has(self.authorizationParameters) || self.flow == 'AuthorizationCode'",message="authorizationParameters is only valid with flow AuthorizationCode"
// +kubebuilder:validation:XValidation:rule="!has(self.requireIssuerInResponse) || !self.requireIssuerInResponse || self.flow == 'AuthorizationCode'",message="requireIssuerInResponse is only valid with flow AuthorizationCode"
type CDCredentialSpec struct {
	// flow is the flow Central Dispatch issued this client for: ClientCredentials
	// (server-to-server: pricing, listings) or AuthorizationCode (customer logins:
	// dispatch, documents, carrier search). Using a client for the other flow is
	// reported in the FlowMisuse condition.
	// +required
	Flow Flow `json:"flow"`

	// clientID is the client's public id (OAuth 2.0 client ids are not secret). When
	// unset, it is read from the client Secret's clientIDKey.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[ -~]+$`
	ClientID string `json:"clientID,omitempty"`

	// clientSecretRef names the opted-in Secret holding the client secret.
	// +required
	ClientSecretRef ClientSecretReference `json:"clientSecretRef"`

	// issuer is the identity server's base URL; the token endpoint is
	// <issuer>/connect/token and the authorize endpoint <issuer>/connect/authorize.
	// Must be https:// (http:// only to a loopback host). The manager refuses to send
	// a secret to a host outside its --allowed-token-hosts list.
	// +optional
	// +kubebuilder:default="https://id.centraldispatch.com"
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (url(self).getScheme() == 'https' || (url(self).getScheme() == 'http' && (url(self).getHostname() == 'localhost' || url(self).getHostname() == '::1' || url(self).getHostname().startsWith('127.'))))",message="must be an https:// URL (http:// only to a loopback host)"
	Issuer string `json:"issuer,omitempty"`

	// tokenURL overrides the token endpoint derived from issuer, for providers whose
	// endpoints are laid out differently. Same URL rules as issuer.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (url(self).getScheme() == 'https' || (url(self).getScheme() == 'http' && (url(self).getHostname() == 'localhost' || url(self).getHostname() == '::1' || url(self).getHostname().startsWith('127.'))))",message="must be an https:// URL (http:// only to a loopback host)"
	TokenURL string `json:"tokenURL,omitempty"`

	// authorizeURL overrides the authorize endpoint derived from issuer
	// (AuthorizationCode only). Same URL rules as issuer.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (url(self).getScheme() == 'https' || (url(self).getScheme() == 'http' && (url(self).getHostname() == 'localhost' || url(self).getHostname() == '::1' || url(self).getHostname().startsWith('127.'))))",message="must be an https:// URL (http:// only to a loopback host)"
	AuthorizeURL string `json:"authorizeURL,omitempty"`

	// clientAuthMethod is how the client authenticates at the token endpoint:
	// ClientSecretPost (form body, what Central Dispatch documents) or
	// ClientSecretBasic (HTTP Basic). Never auto-detected.
	// +optional
	// +kubebuilder:default=ClientSecretPost
	ClientAuthMethod ClientAuthMethod `json:"clientAuthMethod,omitempty"`

	// scopes are the scopes to request. For AuthorizationCode the default is
	// [marketplace, offline_access]; for ClientCredentials none are sent by default.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=128
	// +kubebuilder:validation:items:Pattern=`^[!#-\[\]-~]+$`
	Scopes []string `json:"scopes,omitempty"`

	// redirectURL is the redirect URI registered at the identity server for this
	// client (AuthorizationCode only); customer logins come back to it.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (url(self).getScheme() == 'https' || (url(self).getScheme() == 'http' && (url(self).getHostname() == 'localhost' || url(self).getHostname() == '::1' || url(self).getHostname().startsWith('127.'))))",message="must be an https:// URL (http:// only to a loopback host)"
	RedirectURL string `json:"redirectURL,omitempty"`

	// authorizationParameters are extra parameters added to every authorization URL the
	// operator builds for this client's CDUserGrants (AuthorizationCode only), for
	// providers that need them: `prompt: consent`, Google's `access_type: offline`, a
	// tenant or audience. The parameters the operator owns (client_id, redirect_uri,
	// response_type, grant_type, scope, state, code_challenge, code_challenge_method)
	// are refused, and
	// so is response_mode: the callback reads the code from the redirect's query, where a
	// form_post or fragment response never puts it.
	// When offline_access is requested and prompt is not set here, the operator sends
	// prompt=consent (OpenID Connect Core §11: providers drop offline access without
	// it); set `prompt: ""` to send no prompt at all.
	// +optional
	// +kubebuilder:validation:MaxProperties=16
	// +kubebuilder:validation:XValidation:rule="self.all(k, !(k in ['client_id', 'redirect_uri', 'response_type', 'grant_type', 'scope', 'state', 'code_challenge', 'code_challenge_method']))",message="client_id, redirect_uri, response_type, grant_type, scope, state, code_challenge and code_challenge_method are set by the operator"
	// +kubebuilder:validation:XValidation:rule="!('response_mode' in self)",message="response_mode cannot be set: the callback reads the code from the redirect's query, so form_post or fragment responses would fail every login"
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 64 && size(self[k]) <= 512)",message="parameter names are limited to 64 characters and values to 512"
	AuthorizationParameters map[string]string `json:"authorizationParameters,omitempty"`

	// requireIssuerInResponse makes the callback refuse an authorization response
	// without the RFC 9207 `iss` parameter (AuthorizationCode only). An `iss` that is
	// present must always equal the issuer, whatever this says.
	// +optional
	RequireIssuerInResponse bool `json:"requireIssuerInResponse,omitempty"`

	// revocationURL is the RFC 7009 token revocation endpoint. When set, deleting a
	// CDUserGrant with deletionPolicy Delete revokes its refresh token there first.
	// Same URL rules as issuer, and its host must be on --allowed-token-hosts.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (url(self).getScheme() == 'https' || (url(self).getScheme() == 'http' && (url(self).getHostname() == 'localhost' || url(self).getHostname() == '::1' || url(self).getHostname().startsWith('127.'))))",message="must be an https:// URL (http:// only to a loopback host)"
	RevocationURL string `json:"revocationURL,omitempty"`

	// disablePKCE leaves PKCE (S256 code_challenge) out of the authorization URLs the
	// operator builds for this client's CDUserGrants, for providers that reject it
	// (AuthorizationCode only). PKCE is on by default.
	// +optional
	DisablePKCE bool `json:"disablePKCE,omitempty"`

	// secretName is the Secret that receives the access token (ClientCredentials
	// only). Default: <name>-token; required when the name has over 247 characters, as
	// <name>-token would not be a valid Secret name. (A CR created without it before
	// admission refused that keeps its name: it stalls with SecretTemplateInvalid and
	// requests nothing until this is set.)
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
	// 2 minutes (kubelet needs that long to refresh a mounted Secret) unless the token
	// lives shorter than that, and never sooner than a third of the lifetime after the
	// token was issued (at most 3 token requests per lifetime); a clamped value is said
	// in the Ready condition's message.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="renewBefore must be a positive duration"
	RenewBefore *metav1.Duration `json:"renewBefore,omitempty"`
}

// CDCredentialStatus is what the operator observed and did.
type CDCredentialStatus struct {
	// observedGeneration is the spec generation the operator last acted on. Each
	// condition carries its own: Ready=True keeps that of the token it reports while the
	// token for a newer generation waits (Reconciling=True carries the newer one).
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready (always), Reconciling (while the operator works towards a token
	// or retries), Stalled (while a terminal error holds) and FlowMisuse (always, True or
	// False).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// clientID is the public client id in use (spec.clientID, or the client Secret's),
	// so two flows sharing one id are visible.
	// +optional
	ClientID string `json:"clientID,omitempty"`

	// clientSecretHash is a keyed hash (HMAC-SHA256 under a key only the operator
	// holds) of the client secret, "hmac-sha256:<key id>:<hash>": equal for
	// CDCredentials that hold the same secret under one key, and of no use to anyone
	// without the key. With clientID it detects one client used for both flows
	// (ClientSharedAcrossFlows). The key id (a fingerprint of the operator's key, which
	// reveals nothing of it) tells apart the writes of two installs that select the
	// same object, which they must not (the AnotherInstall event). A value of an
	// earlier version, "hmac-sha256:<hash>", is written anew once.
	// +optional
	ClientSecretHash string `json:"clientSecretHash,omitempty"`

	// lastFailure remembers the last failed token request, so backoff and "refused for
	// good" survive restarts. Absent after a success. Kept when spec.flow is switched to
	// AuthorizationCode, so switching back and forth buys no new attempts.
	// +optional
	LastFailure *FailureStatus `json:"lastFailure,omitempty"`

	// expiresAt is when the current access token expires (ClientCredentials only).
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// renewalTime is when the operator will request the next token (ClientCredentials
	// only).
	// +optional
	RenewalTime *metav1.Time `json:"renewalTime,omitempty"`

	// lastIssuedTime is when the current access token was issued (ClientCredentials
	// only).
	// +optional
	LastIssuedTime *metav1.Time `json:"lastIssuedTime,omitempty"`

	// grantedScopes are the scopes the identity server granted (ClientCredentials
	// only).
	// +optional
	// +listType=atomic
	GrantedScopes []string `json:"grantedScopes,omitempty"`

	// secretName is the Secret that holds this CR's access token: the one to mount.
	// Empty until a token is stored, and never a Secret the token is not in: while
	// spec.secretName is held by another Secret (SecretNameConflict), it names the
	// Secret the token is still in, or none.
	// +optional
	SecretName string `json:"secretName,omitempty"`
}

// CDCredential is one Central Dispatch API client. A ClientCredentials CDCredential
// keeps a fresh access token in its output Secret; an AuthorizationCode CDCredential
// mints nothing itself and is what CDUserGrants use.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:validation:XValidation:rule="self.spec.flow != 'ClientCredentials' || has(self.spec.secretName) || self.spec.clientSecretRef.name != self.metadata.name + '-token'",message="the default output Secret <name>-token would overwrite the client Secret: set spec.secretName or rename the client Secret"
// +kubebuilder:validation:XValidation:rule="self.spec.flow != 'ClientCredentials' || has(self.spec.secretName) || size(self.metadata.name) <= 247",message="a ClientCredentials CDCredential named with over 247 characters needs spec.secretName: the default output Secret <name>-token would be longer than a Secret name may be (253 characters)"
// +kubebuilder:resource:shortName=cdcred,categories=cdcredops
// +kubebuilder:printcolumn:name="Flow",type=string,JSONPath=`.spec.flow`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Secret",type=string,JSONPath=`.status.secretName`
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=`.status.expiresAt`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type CDCredential struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec declares the client.
	// +required
	Spec CDCredentialSpec `json:"spec"`

	// status is what the operator observed.
	// +optional
	Status CDCredentialStatus `json:"status,omitempty"`
}

// CDCredentialList is a list of CDCredentials.
// +kubebuilder:object:root=true
type CDCredentialList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard list metadata.
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the CDCredentials.
	Items []CDCredential `json:"items"`
}

func init() {
	SchemeBuilder.Register(&CDCredential{}, &CDCredentialList{})
}
