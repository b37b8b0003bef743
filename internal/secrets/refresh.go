package secrets

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
)

// RefreshKey is the key of a grant's refresh token in its Secret.
func RefreshKey(grant *cdv1.CDUserGrant) string {
	return defaultString(grant.Spec.RefreshTokenSecretRef.Key, "refresh_token")
}

// GrantFingerprint identifies what a grant's access token was issued for: the endpoint,
// client and auth method (a refresh sends no scope).
func GrantFingerprint(ep Client) string {
	return fingerprint(ep.Endpoint.TokenURL, ep.Endpoint.ClientID, string(ep.Endpoint.AuthMethod))
}

// Binding is the grant a refresh-token Secret is bound to.
type Binding struct {
	Name string
	UID  types.UID
}

// BindingOf reads a refresh-token Secret's binding; the zero Binding when unbound.
func BindingOf(s *corev1.Secret) Binding {
	name, uid, ok := strings.Cut(s.Annotations[cdv1.BoundToAnnotation], "/")
	if !ok {
		return Binding{}
	}
	return Binding{Name: name, UID: types.UID(uid)}
}

// Bind binds s to grant. The caller writes s with its resourceVersion as read, so two
// grants racing for one Secret cannot both win.
func Bind(s *corev1.Secret, grant *cdv1.CDUserGrant) {
	metav1.SetMetaDataAnnotation(&s.ObjectMeta, cdv1.BoundToAnnotation, grant.Name+"/"+string(grant.UID))
}

// BoundElsewhere reports whether s is bound to a grant other than grant that still
// holds it (BindingHolds). A binding to a grant that is gone may be taken over, by the
// controller and by the callback alike: a grant deleted (its Secret retained) and
// created again under the same name, or another grant now naming the Secret, is where
// that session continues. So may one to a grant that moved off the Secret, once no
// rotation of it is out.
//
// holding reports whether the caller holds a new refresh token for s, not stored yet,
// of the bound grant (its UID); nil for a caller that cannot see held results (the
// callback), which the in-flight mark covers (BindingHolds).
//
// api must read the API server, never a cache: a manager's cache holds only its shard's
// (or namespaces') grants, and a live grant it does not hold would look gone, so another
// shard's grant would take the Secret over and spend its single-use token. Only the rare
// Secret bound to another grant costs the read.
func BoundElsewhere(ctx context.Context, api client.Reader, grant *cdv1.CDUserGrant, s *corev1.Secret, holding func(bound types.UID) bool) (bool, error) {
	b := BindingOf(s)
	if b.UID == "" || b.UID == grant.UID {
		return false, nil
	}
	other := &cdv1.CDUserGrant{}
	err := api.Get(ctx, types.NamespacedName{Namespace: grant.Namespace, Name: b.Name}, other)
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, err
	}
	return other.UID == b.UID && BindingHolds(other, s, holding != nil && holding(b.UID)), nil
}

// BindingHolds reports whether s, a refresh-token Secret, stays bound to bound, a grant
// that exists: while its spec names the Secret (under whatever key: a key edited back
// must find its session); while the Secret carries an in-flight mark (a rotation of it
// is out, or its answer was lost: another grant reaching that mark would take it for
// its own process's and send the token again, and only the bound grant's store of the
// successor clears it, in whichever process or replica holds it); or while held, a new
// refresh token of that grant not stored yet, goes into it. A Secret no grant names any
// more is otherwise free for the grant that names it now.
func BindingHolds(bound *cdv1.CDUserGrant, s *corev1.Secret, held bool) bool {
	return held || bound.Spec.RefreshTokenSecretRef.Name == s.Name || s.Annotations[cdv1.RotationInFlightAnnotation] != ""
}

// BoundTo reports whether s is bound to grant.
func BoundTo(s *corev1.Secret, grant *cdv1.CDUserGrant) bool {
	return BindingOf(s).UID == grant.UID
}

// NewRefreshSecret is a refresh-token Secret the callback creates: opted in, bound to
// grant, and owned by nobody, so neither garbage collection nor an uninstall deletes the
// customer's session. Its managed-by label does not make it an orphaned output
// (CheckOwner): no CR may write it as its output.
func NewRefreshSecret(grant *cdv1.CDUserGrant) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: grant.Namespace,
			Name:      grant.Spec.RefreshTokenSecretRef.Name,
			Labels:    map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeRefreshToken, cdv1.ManagedByLabel: cdv1.ManagedByValue},
		},
		Type: corev1.SecretTypeOpaque,
	}
	Bind(s, grant)
	return s
}

// storedHashAnnotation records a hash of the refresh-token Secret's data as the operator
// wrote it, so its own rotation does not come back as "a new refresh token appeared".
const storedHashAnnotation = "cd.credops.io/stored-hash"

// StoreRefreshToken puts a new refresh token into s (in place) and clears the in-flight
// mark: the spent token is gone for good.
func StoreRefreshToken(s *corev1.Secret, key, token string) {
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data[key] = []byte(token)
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	rotation.ClearMark(s.Annotations)
	s.Annotations[storedHashAnnotation] = dataHash(s.Data)
}

// PutBack puts token, the live refresh token a GitOps tool's write of a spent one
// replaced, back into s (in place) as the operator's own write, so its update event is no
// news. Unlike StoreRefreshToken it keeps the in-flight mark: the write-back changed the
// data alone, so a mark on s was on token. The spent list stays as it is.
func PutBack(s *corev1.Secret, key, token string) {
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data[key] = []byte(token)
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[storedHashAnnotation] = dataHash(s.Data)
}

// spentKept is how many of the latest spent tokens the spent list keeps besides the
// first: enough for a write-back of any recent state, bounded so the Secret does not grow
// with every rotation.
const spentKept = 3

// StoreSuccessor is StoreRefreshToken for the successor of spent, a token a refresh
// just spent: the same write lists spent's hash (cdv1.SpentHashesAnnotation), so
// remembering it costs no API write. A server that returned no new refresh token did not
// spend the old one: store nothing through here then.
func StoreSuccessor(s *corev1.Secret, key, spent, successor string) {
	StoreRefreshToken(s, key, successor)
	if spent == successor {
		return // echoed back: the same live token, not spent
	}
	s.Annotations[cdv1.SpentHashesAnnotation] = strings.Join(withSpent(spentHashes(s), rotation.Hash(spent)), ",")
}

// Spent reports whether hash (rotation.Hash of a refresh token) is one the operator
// spent from s and replaced: s was set back to it (a GitOps re-sync, a restore of its data from a
// backup), and sending it again would be a reuse.
func Spent(s *corev1.Secret, hash string) bool {
	return slices.Contains(spentHashes(s), hash)
}

func spentHashes(s *corev1.Secret) []string {
	v := s.Annotations[cdv1.SpentHashesAnnotation]
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// withSpent adds hash to list, keeping the first ever spent (what a GitOps tool writes
// back is the token the Secret was seeded with) and the spentKept latest.
func withSpent(list []string, hash string) []string {
	if slices.Contains(list, hash) {
		return list
	}
	if len(list) == 0 {
		return []string{hash}
	}
	rest := append(slices.Clone(list[1:]), hash)
	rest = rest[max(0, len(rest)-spentKept):]
	return append([]string{list[0]}, rest...)
}

// RefreshLife reads when the refresh token with hash (rotation.Hash) in s was issued and
// dies (cdv1.RefreshExpiresAtAnnotation), as a Schedule without a renewal time; ok is
// false when s records none for that very token (no limit, or a token put there by
// other means than a rotation or the callback, such as by hand).
func RefreshLife(s *corev1.Secret, hash string) (life rotation.Schedule, ok bool) {
	parts := strings.Fields(s.Annotations[cdv1.RefreshExpiresAtAnnotation])
	if len(parts) != 3 || parts[2] != hash {
		return rotation.Schedule{}, false
	}
	expires, err1 := time.Parse(time.RFC3339, parts[0])
	issued, err2 := time.Parse(time.RFC3339, parts[1])
	if err1 != nil || err2 != nil || !issued.Before(expires) {
		return rotation.Schedule{}, false
	}
	return rotation.Schedule{Issued: issued, ExpiresAt: expires}, true
}

// SetRefreshLife records on s (in place) when the refresh token with hash was issued and
// dies, in the write that stores it; a life without an expiry removes the record.
func SetRefreshLife(s *corev1.Secret, hash string, life rotation.Schedule) {
	if life.ExpiresAt.IsZero() {
		delete(s.Annotations, cdv1.RefreshExpiresAtAnnotation)
		return
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[cdv1.RefreshExpiresAtAnnotation] = life.ExpiresAt.UTC().Format(time.RFC3339) + " " + life.Issued.UTC().Format(time.RFC3339) + " " + hash
}

// WrittenByOperator reports whether s's data is what the operator last stored in it: an
// update event for it is the operator's own write, not news.
func WrittenByOperator(s *corev1.Secret) bool {
	return s.Annotations[storedHashAnnotation] == dataHash(s.Data)
}

// dataHash identifies a Secret's data without revealing it.
func dataHash(data map[string][]byte) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(data)) {
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write(data[k])
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}
