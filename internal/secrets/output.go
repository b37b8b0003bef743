package secrets

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/metabound"
	"github.com/credops/cd-credentials-operator/internal/rotation"
)

// FieldOwner is the server-side apply field manager of everything the operator writes
// into an output Secret. Keys, labels and annotations other managers add are left alone.
// It is the operator's one name: its managed-by label value, and the first word of its
// user agent.
const FieldOwner = cdv1.ManagedByValue

// Annotations of an output Secret that let the operator judge it after a restart
// without minting a new token.
const (
	// renewAtAnnotation: when the token is due for renewal.
	renewAtAnnotation = "cd.credops.io/renew-at"
	// fingerprintAnnotation: what the token was requested for (Client.Fingerprint).
	fingerprintAnnotation = "cd.credops.io/token-request"
)

// defaultOutputSuffix names a CR's output Secret when its spec names none.
const defaultOutputSuffix = "-token"

// OutputName is the Secret a CR's access token goes to.
func OutputName(crName, specName string) string {
	if specName != "" {
		return specName
	}
	return crName + defaultOutputSuffix
}

// DefaultOutputOf is the CR whose default output Secret (the one OutputName gives when
// the spec names none) secretName would be; ok is false when it is no such name.
func DefaultOutputOf(secretName string) (crName string, ok bool) {
	return strings.CutSuffix(secretName, defaultOutputSuffix)
}

// Output is the desired state of one CR's output Secret.
type Output struct {
	Owner       client.Object
	OwnerGVK    schema.GroupVersionKind
	Name        string
	Template    *cdv1.SecretTemplate
	AccessToken string
	TokenType   string
	Scopes      []string
	Schedule    rotation.Schedule
	Fingerprint string
}

// Apply is the server-side apply configuration of o: the keys pods mount (DESIGN §3), the
// operator's labels and annotations over the template's, and a controller reference.
func (o Output) Apply() *corev1ac.SecretApplyConfiguration {
	labels := map[string]string{}
	annotations := map[string]string{}
	if t := o.Template; t != nil {
		for k, v := range t.Labels {
			labels[k] = string(v)
		}
		for k, v := range t.Annotations {
			annotations[k] = string(v)
		}
	}
	maps.Copy(labels, map[string]string{
		cdv1.ManagedByLabel:  cdv1.ManagedByValue,
		cdv1.OwnerLabel:      ownerLabelValue(o.OwnerGVK.Kind, o.Owner.GetName()),
		cdv1.SecretTypeLabel: cdv1.SecretTypeAccessToken,
	})
	expires := o.Schedule.ExpiresAt.UTC().Format(time.RFC3339)
	maps.Copy(annotations, map[string]string{
		cdv1.ExpiresAtAnnotation: expires,
		renewAtAnnotation:        o.Schedule.RenewAt.UTC().Format(time.RFC3339),
		fingerprintAnnotation:    o.Fingerprint,
	})
	if r := templateRecordOf(o.Template); r != "" {
		annotations[templateAnnotation] = r // what TemplatePatch compares the spec's with
	}
	return corev1ac.Secret(o.Name, o.Owner.GetNamespace()).
		WithType(corev1.SecretTypeOpaque).
		WithLabels(labels).
		WithAnnotations(annotations).
		WithOwnerReferences(metav1ac.OwnerReference().
			WithAPIVersion(o.OwnerGVK.GroupVersion().String()).
			WithKind(o.OwnerGVK.Kind).
			WithName(o.Owner.GetName()).
			WithUID(o.Owner.GetUID()).
			WithController(true).
			WithBlockOwnerDeletion(true)).
		WithData(map[string][]byte{
			cdv1.AccessTokenKey:   []byte(o.AccessToken),
			cdv1.TokenTypeKey:     []byte(o.TokenType),
			cdv1.ExpiresAtKey:     []byte(expires),
			cdv1.ScopeKey:         []byte(strings.Join(o.Scopes, " ")),
			cdv1.AuthorizationKey: []byte(o.TokenType + " " + o.AccessToken),
		})
}

// Schedule reads the schedule of the token in an output Secret issued for fingerprint.
// ok is false when the Secret is missing, not a complete and self-consistent output of
// this operator (deleted keys, a hand-edited token or expiry), or was issued for another
// request: such a Secret is repaired with a new token.
func Schedule(s *corev1.Secret, fingerprint string) (rotation.Schedule, bool) {
	if s == nil || s.Annotations[fingerprintAnnotation] != fingerprint {
		return rotation.Schedule{}, false
	}
	return Consistent(s)
}

// Consistent reads the schedule of an output Secret's token when the Secret is complete
// and self-consistent; the operator's own writes always are, a hand edit seldom. It
// judges a Secret from the manager's cache (TrimForCache) as it would the Secret itself.
func Consistent(s *corev1.Secret) (rotation.Schedule, bool) {
	if trimmedHere(s) {
		// TrimForCache found this very version consistent before it dropped the data.
		return annotatedSchedule(s)
	}
	if !tokenComplete(s.Data) || s.Annotations[cdv1.ExpiresAtAnnotation] != string(s.Data[cdv1.ExpiresAtKey]) {
		return rotation.Schedule{}, false
	}
	return annotatedSchedule(s)
}

// annotatedSchedule reads the schedule from an output Secret's annotations; ok is false
// when either time is unreadable or the renewal falls after the expiry.
func annotatedSchedule(s *corev1.Secret) (rotation.Schedule, bool) {
	expires, err := time.Parse(time.RFC3339, s.Annotations[cdv1.ExpiresAtAnnotation])
	if err != nil {
		return rotation.Schedule{}, false
	}
	renew, err := time.Parse(time.RFC3339, s.Annotations[renewAtAnnotation])
	if err != nil || renew.After(expires) {
		return rotation.Schedule{}, false
	}
	return rotation.Schedule{ExpiresAt: expires, RenewAt: renew}, true
}

// tokenComplete reports whether an output Secret's data holds a token, its type, and the
// Authorization value made of the two.
func tokenComplete(d map[string][]byte) bool {
	token, typ := d[cdv1.AccessTokenKey], d[cdv1.TokenTypeKey]
	rest, ok := bytes.CutPrefix(d[cdv1.AuthorizationKey], typ)
	rest, space := bytes.CutPrefix(rest, []byte(" "))
	return len(token) > 0 && len(typ) > 0 && ok && space && bytes.Equal(rest, token)
}

// trimmedAnnotation marks an output Secret in the manager's cache whose data TrimForCache
// dropped. It exists only in the manager's memory (the operator never writes a cached
// output Secret back), and its value is this process's trimNonce, so a marker someone
// wrote onto a Secret is told apart from the cache's own.
const trimmedAnnotation = "cd.credops.io/cached-without-data"

// trimNonce is the value of this process's trimmedAnnotation.
var trimNonce = rand.Text()

// trimmedHere reports whether TrimForCache in this process trimmed s.
func trimmedHere(s *corev1.Secret) bool {
	v, ok := s.Annotations[trimmedAnnotation]
	return ok && v == trimNonce
}

// TrimForCache drops the data of a consistent output Secret on its way into the manager's
// cache, and marks it so that Consistent still finds it consistent. The operator writes an
// output from the token response that carried it, never from a Secret, and reads nothing
// of a cached output but its verdict and schedule (the annotations keep the schedule). So
// the cache holds no customer's access token (an Entra ID or Okta token runs to 1-2 KB,
// twice over with the Authorization value), and no data map at all: about 0.4 KiB of
// live heap per grant at 10,000 (the bench's settled heap profile). A Secret that is
// incomplete or inconsistent (a hand edit) is kept whole, so it is judged exactly as
// before and repaired.
//
// Then any opted-in Secret whose data is still over MaxData loses it (capData), and one
// over metabound.Max is cut down to a stub (capMetadata).
func TrimForCache(s *corev1.Secret) {
	if s.Labels[cdv1.SecretTypeLabel] == cdv1.SecretTypeAccessToken {
		trimOutput(s)
	}
	capData(s)
	capMetadata(s)
}

// ErrOutputTooLarge says an output Secret carries more than metabound.Max besides its
// data.
var ErrOutputTooLarge = errors.New("the output Secret carries too much metadata")

// CheckOutputSize returns ErrOutputTooLarge (wrapped, with the name and the fix) for an
// output Secret over metabound.Max. The operator's writes would not make it smaller (what
// it carries beyond the operator's few annotations is someone else's), and the cache
// keeps only a stub of it, which a token write would leave looking incomplete: each
// pass would request a token to repair it.
func CheckOutputSize(s *corev1.Secret) error {
	if !metabound.Over(s) {
		return nil
	}
	return fmt.Errorf("%w: Secret %s carries more than %d KiB of labels, annotations, owner references and finalizers, which the operator does not write over; remove what was added to it", ErrOutputTooLarge, s.Name, metabound.Max>>10)
}

// trimOutput is TrimForCache for an output Secret.
func trimOutput(s *corev1.Secret) {
	if trimmedHere(s) {
		return // passed through again (a transform must be idempotent)
	}
	// Whoever writes the Secret could set the marker; only this process's says anything.
	delete(s.Annotations, trimmedAnnotation)
	if _, ok := Consistent(s); !ok {
		return
	}
	s.Data = nil
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[trimmedAnnotation] = trimNonce
}

// ErrNameConflict says the output Secret's name is taken by a Secret the CR does not
// control: a user's Secret, another CR's output, or one of the operator's Secrets that is
// not an output (a refresh-token or client Secret, the operator's key).
var ErrNameConflict = errors.New("the output Secret's name is taken")

// CheckOwner returns ErrNameConflict (wrapped, with the name) unless existing is nil,
// controlled by owner, or an orphaned output.
func CheckOwner(existing *corev1.Secret, owner client.Object) error {
	if existing == nil {
		return nil
	}
	ctrl := metav1.GetControllerOf(existing)
	if ctrl != nil && ctrl.UID == owner.GetUID() || orphanedOutput(existing) {
		return nil
	}
	return fmt.Errorf("%w: Secret %s exists and is not managed by this CR; choose another spec.secretName or delete that Secret", ErrNameConflict, existing.Name)
}

// orphanedOutput reports whether s is an output of this operator left without a
// controller (its CR was deleted with --cascade=orphan), which a CR may take over. The
// managed-by label alone does not say so: refresh-token Secrets and the operator's key
// carry it too and are never owned, and taking one over would hand it to a CR's garbage
// collection and its value to the pods that mount that CR's output (DESIGN §8).
func orphanedOutput(s *corev1.Secret) bool {
	_, bound := s.Annotations[cdv1.BoundToAnnotation]
	return metav1.GetControllerOf(s) == nil && !bound &&
		s.Labels[cdv1.ManagedByLabel] == cdv1.ManagedByValue &&
		s.Labels[cdv1.SecretTypeLabel] == cdv1.SecretTypeAccessToken
}

// ValidateTemplate checks, before any token is requested, that a secretTemplate makes a
// valid Secret: the API server would refuse it after the token was spent otherwise.
// Admission (CEL) catches most of this; this also covers what CEL cannot express, such as
// the total size of the annotations.
func ValidateTemplate(t *cdv1.SecretTemplate) error {
	if t == nil {
		return nil
	}
	path := field.NewPath("spec", "secretTemplate")
	labels := map[string]string{}
	for k, v := range t.Labels {
		labels[k] = string(v)
	}
	annotations := map[string]string{}
	for k, v := range t.Annotations {
		annotations[k] = string(v)
	}
	errs := metavalidation.ValidateLabels(labels, path.Child("labels"))
	errs = append(errs, apivalidation.ValidateAnnotations(annotations, path.Child("annotations"))...)
	for k := range labels {
		if operatorLabel(k) {
			errs = append(errs, field.Forbidden(path.Child("labels").Key(k), "the operator's own label"))
		}
	}
	for k := range annotations {
		if operatorAnnotation(k) {
			errs = append(errs, field.Forbidden(path.Child("annotations").Key(k), "the operator's own annotation"))
		}
	}
	return errs.ToAggregate()
}

// OutputLabels select the output Secrets written for the CR of kind with name (a label
// does not prove ownership: check the controller reference too).
func OutputLabels(kind, name string) map[string]string {
	return map[string]string{cdv1.OwnerLabel: ownerLabelValue(kind, name), cdv1.SecretTypeLabel: cdv1.SecretTypeAccessToken}
}

// ownerLabelValue is "<kind>.<name>", shortened with a hash when it would not fit in a
// label value (63 characters; the README says how).
func ownerLabelValue(kind, name string) string {
	v := kind + "." + name
	if len(v) <= 63 {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return strings.TrimRight(v[:52], ".-_") + "-" + hex.EncodeToString(sum[:])[:10]
}
