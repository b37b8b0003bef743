package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SecretTemplate is extra metadata the operator puts on an output Secret, for example
// labels a Reloader or a policy engine selects on. Keys must be valid Kubernetes label and
// annotation keys outside the operator's own cd.credops.io/ prefix and
// app.kubernetes.io/managed-by; the API server refuses anything else, so a bad template is
// caught at `kubectl apply` instead of costing a token.
type SecretTemplate struct {
	// labels are copied onto the output Secret.
	// +optional
	// +kubebuilder:validation:MaxProperties=16
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && !k.startsWith('cd.credops.io/') && k != 'app.kubernetes.io/managed-by')",message="label keys must be valid Kubernetes label keys ([prefix/]name, the name at most 63 characters), outside the operator's own cd.credops.io/ prefix and app.kubernetes.io/managed-by"
	Labels map[string]LabelValue `json:"labels,omitempty"`

	// annotations are copied onto the output Secret.
	// +optional
	// +kubebuilder:validation:MaxProperties=16
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && !k.startsWith('cd.credops.io/'))",message="annotation keys must be valid Kubernetes annotation keys ([prefix/]name, the name at most 63 characters), outside the operator's own cd.credops.io/ prefix"
	Annotations map[string]AnnotationValue `json:"annotations,omitempty"`
}

// LabelValue is a Kubernetes label value: at most 63 characters, letters, digits, '-',
// '_' and '.', starting and ending with a letter or digit.
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`
type LabelValue string

// AnnotationValue is an annotation value the operator copies onto an output Secret.
// +kubebuilder:validation:MaxLength=4096
type AnnotationValue string

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

// Labels and annotations the operator reads and sets.
const (
	// SecretTypeLabel opts a Secret in: the operator reads only Secrets carrying it, with
	// the value saying what the Secret is for (SecretTypeClient, SecretTypeRefreshToken),
	// and puts it on the Secrets it writes (SecretTypeAccessToken). A CR that names a
	// Secret without it gets Ready=False, SecretNotOptedIn, and nothing is read from it, so
	// whoever may create CRs in a namespace cannot make the operator disclose or spend the
	// values of the namespace's other Secrets. It is also the label the operator's cache
	// selects on, so its memory does not grow with the cluster's other Secrets.
	SecretTypeLabel = "cd.credops.io/secret-type"
	// SecretTypeClient marks a Secret holding an OAuth client secret (and, optionally,
	// its client id) that CDCredentials may use.
	SecretTypeClient = "client"
	// SecretTypeRefreshToken marks a Secret holding one customer's refresh token that one
	// CDUserGrant may use. The operator's callback sets it on the Secrets it creates.
	SecretTypeRefreshToken = "refresh-token"
	// SecretTypeAccessToken marks an output Secret the operator writes for pods to mount.
	SecretTypeAccessToken = "access-token"

	// ManagedByLabel marks every Secret the operator writes.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedByValue is ManagedByLabel's value.
	ManagedByValue = "cd-credentials-operator"
	// OwnerLabel names the CR an output Secret belongs to, as "<kind>.<name>".
	OwnerLabel = "cd.credops.io/owner"
	// ExpiresAtAnnotation repeats the expiry on the output Secret's metadata.
	ExpiresAtAnnotation = "cd.credops.io/expires-at"

	// BoundToAnnotation binds a refresh-token Secret to the one CDUserGrant that may
	// spend it, as "<grant name>/<grant UID>". The operator writes it in the same
	// resourceVersion-guarded update that marks the token in flight (the callback, in the
	// one that stores a new login), so before it sends anything; another grant naming the Secret
	// gets Ready=False, RefreshTokenSecretInUse and sends nothing. A binding to a grant
	// that no longer exists may be taken over, and so may one to a grant whose spec names
	// another Secret once no rotation of this one is out (no in-flight mark on it).
	BoundToAnnotation = "cd.credops.io/bound-to"
	// RotationInFlightAnnotation is set on a refresh-token Secret while the token it
	// holds is being spent. Its value is a hash of that token (never the token). If it
	// is still there when the operator starts, the previous process died mid-rotation.
	RotationInFlightAnnotation = "cd.credops.io/rotation-in-flight"
	// RotationHolderAnnotation says which process set RotationInFlightAnnotation and
	// when, as "<process>@<RFC 3339 time>", so a live rotation by another replica is not
	// mistaken for a dead one.
	RotationHolderAnnotation = "cd.credops.io/rotation-holder"
	// RotationAttemptAnnotation counts the presentations of the marked token whose answer
	// never arrived. The operator presents such a token once more (DESIGN §6.5), and
	// never a third time.
	RotationAttemptAnnotation = "cd.credops.io/rotation-attempt"
	// RotationSentToAnnotation says where the marked token was sent, as "<RFC 3339 time
	// of the mark> <hash of token URL and client id> <CDCredential> <client id>" (the
	// client id is public; no secret). A token whose answer was lost is sent again to
	// that client only. Marks written before it existed have none.
	RotationSentToAnnotation = "cd.credops.io/rotation-sent-to"
	// SpentHashesAnnotation lists, comma-separated, hashes (never the tokens) of refresh
	// tokens the operator spent from this Secret and replaced with a successor: the
	// first one ever spent (the seed a GitOps tool writes back) and the last three. It is
	// written in the update that stores the successor. A Secret set back to a token on the
	// list is never sent: at a provider with reuse detection that would revoke the
	// customer's whole session. The live token is put back when the running manager saw
	// it replaced (RefreshTokenRestored); otherwise ReauthorizationRequired=True,
	// RefreshTokenSpent. A restore of the whole Secret brings back its old list with it,
	// and is not caught.
	SpentHashesAnnotation = "cd.credops.io/spent-hashes"
	// RefreshExpiresAtAnnotation says when the refresh token in a refresh-token Secret
	// dies, as "<RFC 3339 expiry> <RFC 3339 issuance> <hash of that token>" (never the
	// token), for identity servers that answer with refresh_expires_in (Keycloak's SSO
	// Session Idle). It is written in the write that stores the token, by a rotation or
	// by the callback's login, and holds only for the token whose hash it names: a token
	// put in the Secret by other means (by hand, a GitOps tool) has no known expiry. Retries, a lost answer's resend and edits are held to no later than 2
	// minutes before the earlier of this expiry and the access token's.
	RefreshExpiresAtAnnotation = "cd.credops.io/refresh-expires-at"
	// ReauthorizeAnnotation on a CDUserGrant asks for a new customer login (its value is
	// the time of the request, RFC 3339), even while the grant works: the operator puts a
	// fresh authorizationURL in status, and the callback removes the annotation once the
	// customer has logged in (the controller does, when status.lastAuthorization is a
	// successful login whose answeredRequest is this very value but the annotation is
	// still there). `kubectl cd reauthorize` sets it.
	ReauthorizeAnnotation = "cd.credops.io/reauthorize"
)

// DefaultIssuer is Central Dispatch's identity server.
const DefaultIssuer = "https://id.centraldispatch.com"

// FailureStatus is the operator's memory of failed token requests, kept in status so it
// survives restarts: the next attempt waits out an exponential backoff with jitter (at
// most a third of the lifetime of the token being renewed), a
// request refused for good is not sent again until it changes (a new client secret,
// refresh token, endpoint, client or scopes), and a request changed by an edit of the
// spec waits a third of the token lifetime after the failure.
type FailureStatus struct {
	// request identifies what was sent, never the values themselves: a hash of what the
	// spec decides (endpoint, client, auth method, scopes, the Secrets it names) and one
	// of what those Secrets hold (client id, secret, refresh token). An edit of a field
	// that is not sent (secretTemplate, renewBefore) leaves it as it was.
	// +required
	// +kubebuilder:validation:MaxLength=64
	Request string `json:"request"`

	// reason is the Ready reason the failure was reported with.
	// +required
	// +kubebuilder:validation:MaxLength=128
	Reason string `json:"reason"`

	// lastFailureTime is when the last attempt failed.
	// +required
	LastFailureTime metav1.Time `json:"lastFailureTime"`

	// failedAttempts counts the consecutive failed attempts at request.
	// +required
	// +kubebuilder:validation:Minimum=1
	FailedAttempts int32 `json:"failedAttempts"`

	// retryTime is when the operator tries again. Absent while the failure is terminal:
	// nothing is sent until request changes (or recheckTime).
	// +optional
	RetryTime *metav1.Time `json:"retryTime,omitempty"`

	// recheckTime is when a terminal refusal that the identity server alone may fix (a
	// grant type, scope, client secret or product refused, or a token host off the
	// manager's allow-list) is asked again all the same: a third of the token lifetime
	// later (10 minutes when unknown, the request budget's pace), so the CR recovers once it is
	// fixed there. Absent for a refusal no retry can fix (a
	// rejected refresh token).
	// +optional
	RecheckTime *metav1.Time `json:"recheckTime,omitempty"`
}
