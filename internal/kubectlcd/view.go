package kubectlcd

import (
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// Summary is what `kubectl cd status` shows of one CDCredential or CDUserGrant, and
// what -o json|yaml prints.
type Summary struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`

	// Ready is the Ready condition's status (True, False or Unknown), and Reason and
	// Message its reason and message.
	Ready   string `json:"ready"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`

	// Flow and ClientID are a CDCredential's; Credential, Rotations, Subject and
	// AuthorizationURL a CDUserGrant's.
	Flow             string `json:"flow,omitempty"`
	ClientID         string `json:"clientID,omitempty"`
	Credential       string `json:"credential,omitempty"`
	Rotations        *int64 `json:"rotations,omitempty"`
	Subject          string `json:"subject,omitempty"`
	AuthorizationURL string `json:"authorizationURL,omitempty"`
	// ReauthorizationRequested is the time `kubectl cd reauthorize` asked for a new
	// authorization, while that is pending.
	ReauthorizationRequested string `json:"reauthorizationRequested,omitempty"`

	SecretName    string       `json:"secretName,omitempty"`
	GrantedScopes []string     `json:"grantedScopes,omitempty"`
	ExpiresAt     *metav1.Time `json:"expiresAt,omitempty"`
	RenewalTime   *metav1.Time `json:"renewalTime,omitempty"`
	// LastRenewal is a credential's lastIssuedTime or a grant's lastRotationTime.
	LastRenewal *metav1.Time `json:"lastRenewal,omitempty"`

	Generation         int64              `json:"generation"`
	ObservedGeneration int64              `json:"observedGeneration"`
	Conditions         []metav1.Condition `json:"conditions,omitempty"`
	// LastFailure holds the status fields that remember failures (lastFailure…,
	// failed…), whatever the operator's version names them.
	LastFailure map[string]any `json:"lastFailure,omitempty"`
}

// ref is how the table names an object, and what `kubectl cd status` accepts back.
func (s Summary) ref() string { return strings.ToLower(s.Kind) + "/" + s.Name }

// summarize reads a CDCredential or CDUserGrant.
func summarize(u *unstructured.Unstructured) (Summary, error) {
	switch u.GetKind() {
	case credentialKind:
		c := &cdv1.CDCredential{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, c); err != nil {
			return Summary{}, fmt.Errorf("reading CDCredential %s: %w", u.GetName(), err)
		}
		return credentialSummary(c, u), nil
	case grantKind:
		g := &cdv1.CDUserGrant{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, g); err != nil {
			return Summary{}, fmt.Errorf("reading CDUserGrant %s: %w", u.GetName(), err)
		}
		return grantSummary(g, u), nil
	}
	return Summary{}, fmt.Errorf("unexpected kind %q", u.GetKind())
}

func credentialSummary(c *cdv1.CDCredential, u *unstructured.Unstructured) Summary {
	s := baseSummary(credentialKind, c.ObjectMeta, c.Status.Conditions, c.Status.ObservedGeneration, u)
	s.Flow = string(c.Spec.Flow)
	s.ClientID = c.Status.ClientID
	s.SecretName = c.Status.SecretName
	s.GrantedScopes = c.Status.GrantedScopes
	s.ExpiresAt, s.RenewalTime, s.LastRenewal = c.Status.ExpiresAt, c.Status.RenewalTime, c.Status.LastIssuedTime
	return s
}

func grantSummary(g *cdv1.CDUserGrant, u *unstructured.Unstructured) Summary {
	s := baseSummary(grantKind, g.ObjectMeta, g.Status.Conditions, g.Status.ObservedGeneration, u)
	s.Credential = g.Spec.CredentialRef.Name
	rotations := g.Status.RotationCount
	s.Rotations = &rotations
	s.Subject = g.Status.Subject
	s.AuthorizationURL = g.Status.AuthorizationURL
	s.ReauthorizationRequested = g.Annotations[cdv1.ReauthorizeAnnotation]
	s.SecretName = g.Status.SecretName
	s.GrantedScopes = g.Status.GrantedScopes
	s.ExpiresAt, s.RenewalTime, s.LastRenewal = g.Status.ExpiresAt, g.Status.RenewalTime, g.Status.LastRotationTime
	return s
}

func baseSummary(kind string, m metav1.ObjectMeta, conds []metav1.Condition, observed int64, u *unstructured.Unstructured) Summary {
	s := Summary{Kind: kind, Namespace: m.Namespace, Name: m.Name, Ready: string(metav1.ConditionUnknown),
		Generation: m.Generation, ObservedGeneration: observed, Conditions: conds, LastFailure: failureFields(u)}
	if ready := meta.FindStatusCondition(conds, cdv1.ReadyCondition); ready != nil {
		s.Ready, s.Reason, s.Message = string(ready.Status), ready.Reason, ready.Message
	}
	return s
}

// failureFields picks the status fields that remember failures, by name, so the plugin
// shows them without knowing the exact schema of the operator's version.
func failureFields(u *unstructured.Unstructured) map[string]any {
	status, _, _ := unstructured.NestedMap(u.Object, "status")
	out := map[string]any{}
	for k, v := range status {
		l := strings.ToLower(k)
		if strings.HasPrefix(l, "lastfailure") || strings.HasPrefix(l, "failed") || strings.HasPrefix(l, "failure") {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// sortSummaries orders by namespace, then credentials before grants, then name.
func sortSummaries(ss []Summary) {
	sort.SliceStable(ss, func(i, j int) bool {
		a, b := ss[i], ss[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.Name < b.Name
	})
}
