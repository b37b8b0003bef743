package secrets

import (
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
)

// written is the output Secret the operator writes for a token, as the API server
// stores it.
func written(token string) *corev1.Secret {
	expires := time.Date(2026, 11, 29, 18, 0, 0, 0, time.UTC)
	owner := &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Name: "acme", Namespace: "team", UID: "u1"}}
	ac := Output{
		Owner: owner, OwnerGVK: cdv1.GroupVersion.WithKind("CDUserGrant"), Name: "acme-token",
		AccessToken: token, TokenType: "Bearer", Scopes: []string{"marketplace"}, Fingerprint: "f1",
		Schedule: rotation.Schedule{ExpiresAt: expires, RenewAt: expires.Add(-time.Minute)},
	}.Apply()
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: *ac.Name, Namespace: *ac.Namespace, Labels: ac.Labels, Annotations: ac.Annotations},
		Type:       *ac.Type,
		Data:       ac.Data,
	}
}

// The cache keeps no data of a consistent output Secret (no access token, and no data
// map: memory per grant), and judges a Secret it trimmed exactly as the Secret itself: a
// hand-edited Secret is kept whole, and repaired.
func TestTheCacheKeepsNoDataAndJudgesTheSecretAsBefore(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*corev1.Secret)
		// trimmed: the data leaves the cache; consistent: Consistent's verdict on the
		// Secret as stored (and so on the cached copy).
		trimmed, consistent bool
	}{
		{name: "the operator's own write", edit: func(*corev1.Secret) {}, trimmed: true, consistent: true},
		{name: "token edited by hand", edit: func(s *corev1.Secret) { s.Data[cdv1.AccessTokenKey] = []byte("forged") }},
		{name: "authorization deleted", edit: func(s *corev1.Secret) { delete(s.Data, cdv1.AuthorizationKey) }},
		{name: "token deleted", edit: func(s *corev1.Secret) { delete(s.Data, cdv1.AccessTokenKey) }},
		{name: "token type emptied", edit: func(s *corev1.Secret) { s.Data[cdv1.TokenTypeKey] = nil }},
		{name: "authorization with the type but not the token", edit: func(s *corev1.Secret) { s.Data[cdv1.AuthorizationKey] = []byte("Bearer ") }},
		{name: "expiry edited by hand, token intact", edit: func(s *corev1.Secret) { s.Data[cdv1.ExpiresAtKey] = []byte("2030-01-01T00:00:00Z") }},
		{name: "expiry annotation edited by hand", edit: func(s *corev1.Secret) { s.Annotations[cdv1.ExpiresAtAnnotation] = "2030-01-01T00:00:00Z" }},
		{name: "renewal after the expiry", edit: func(s *corev1.Secret) { s.Annotations[renewAtAnnotation] = "2031-01-01T00:00:00Z" }},
		{
			// The marker says the data was judged, so it must not hide a later edit.
			name: "marker written onto a Secret whose expiry was edited",
			edit: func(s *corev1.Secret) {
				s.Annotations[trimmedAnnotation] = trimNonce + "x"
				s.Data[cdv1.ExpiresAtKey] = []byte("2030-01-01T00:00:00Z")
			},
		},
		{
			// Only this process's marker says the token was complete; a writer's says nothing.
			name: "marker written onto an inconsistent Secret",
			edit: func(s *corev1.Secret) {
				s.Annotations[trimmedAnnotation] = ""
				s.Data[cdv1.AccessTokenKey] = []byte("forged")
			},
		},
		{
			name: "marker written onto a Secret without a token",
			edit: func(s *corev1.Secret) {
				s.Annotations[trimmedAnnotation] = "x"
				delete(s.Data, cdv1.AccessTokenKey)
				delete(s.Data, cdv1.AuthorizationKey)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stored := written("eyJhbGciOiJIUzI1NiJ9.e30.sig")
			tc.edit(stored)
			wantSchedule, ok := Consistent(stored)
			if ok != tc.consistent {
				t.Fatalf("Consistent(stored) = %v, want %v", ok, tc.consistent)
			}

			cached := stored.DeepCopy()
			TrimForCache(cached)
			if trimmed := cached.Data == nil; trimmed != tc.trimmed {
				t.Errorf("data left the cache: %v, want %v", trimmed, tc.trimmed)
			}
			if !tc.trimmed && len(cached.Data) != len(stored.Data) {
				t.Errorf("kept %d keys of %d, want the Secret whole", len(cached.Data), len(stored.Data))
			}
			gotSchedule, ok := Consistent(cached)
			if ok != tc.consistent || gotSchedule != wantSchedule {
				t.Errorf("Consistent(cached) = %v, %v; want %v, %v", gotSchedule, ok, wantSchedule, tc.consistent)
			}
			TrimForCache(cached) // a cached copy passing through again judges the same
			if _, ok := Consistent(cached); ok != tc.consistent {
				t.Errorf("Consistent after a second trim = %v, want %v", ok, tc.consistent)
			}
		})
	}
}

// Only output Secrets are trimmed: a refresh token or a client secret is what the
// operator reads from the cache.
func TestTheCacheKeepsEveryOtherSecretWhole(t *testing.T) {
	for _, typ := range []string{cdv1.SecretTypeRefreshToken, cdv1.SecretTypeClient, ""} {
		s := written("token")
		s.Labels[cdv1.SecretTypeLabel] = typ
		before := s.DeepCopy()
		TrimForCache(s)
		if len(s.Data) != len(before.Data) || len(s.Annotations) != len(before.Annotations) {
			t.Errorf("secret-type %q: trimmed to %v, want it whole", typ, s.Data)
		}
	}
}

// A CR may write an output Secret it controls, or take over an output whose CR was
// deleted with --cascade=orphan. The operator's other Secrets carry the managed-by label
// and no owner too; taking one over would hand it to the CR's garbage collection, strip
// its opt-in label and put its value in the pods that mount the CR's output (DESIGN §8).
func TestOnlyItsOwnOutputOrAnOrphanedOneMayBeACRsOutput(t *testing.T) {
	owner := &cdv1.CDCredential{ObjectMeta: metav1.ObjectMeta{Name: "pricing", Namespace: "team", UID: "u2"}}
	orphaned := func() *corev1.Secret {
		s := written("token")
		s.OwnerReferences = nil
		return s
	}
	managedBy := map[string]string{cdv1.ManagedByLabel: cdv1.ManagedByValue}
	for _, tc := range []struct {
		name     string
		existing *corev1.Secret
		conflict bool
	}{
		{name: "no Secret of that name", existing: nil},
		{name: "its own output", existing: func() *corev1.Secret {
			s := written("token")
			s.OwnerReferences = []metav1.OwnerReference{{Kind: "CDCredential", Name: "pricing", UID: "u2", Controller: ptr.To(true)}}
			return s
		}()},
		{name: "an output whose CR was deleted with --cascade=orphan", existing: orphaned()},
		{name: "another CR's output", existing: func() *corev1.Secret {
			s := written("token")
			s.OwnerReferences = []metav1.OwnerReference{{Kind: "CDUserGrant", Name: "acme", UID: "u1", Controller: ptr.To(true)}}
			return s
		}(), conflict: true},
		{name: "a user's Secret", existing: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db"}}, conflict: true},
		{name: "a refresh-token Secret the callback created", existing: NewRefreshSecret(&cdv1.CDUserGrant{
			ObjectMeta: metav1.ObjectMeta{Name: "acme", Namespace: "team", UID: "u1"},
			Spec:       cdv1.CDUserGrantSpec{RefreshTokenSecretRef: cdv1.RefreshTokenSecretReference{Name: "acme-refresh"}},
		}), conflict: true},
		{name: "a client Secret labelled managed-by", existing: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "login-client",
			Labels: map[string]string{cdv1.ManagedByLabel: cdv1.ManagedByValue, cdv1.SecretTypeLabel: cdv1.SecretTypeClient}}}, conflict: true},
		{name: "the operator's key", existing: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cd-credentials-operator-key", Labels: managedBy}}, conflict: true},
		{name: "an orphaned output bound to a grant", existing: func() *corev1.Secret {
			s := orphaned()
			s.Annotations[cdv1.BoundToAnnotation] = "acme/u1"
			return s
		}(), conflict: true},
		{name: "an orphaned output without the managed-by label", existing: func() *corev1.Secret {
			s := orphaned()
			delete(s.Labels, cdv1.ManagedByLabel)
			return s
		}(), conflict: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckOwner(tc.existing, owner)
			if got := errors.Is(err, ErrNameConflict); got != tc.conflict || (err != nil && !got) {
				t.Errorf("CheckOwner = %v, want a name conflict: %v", err, tc.conflict)
			}
		})
	}
}

// DefaultOutputOf inverts OutputName for a spec that names no Secret: a deleted Secret of
// that name is mapped back to the CR waiting for it.
func TestDefaultOutputOfNamesTheCRWhoseDefaultOutputItIs(t *testing.T) {
	if name, ok := DefaultOutputOf(OutputName("acme", "")); !ok || name != "acme" {
		t.Errorf("DefaultOutputOf(%q) = %q, %v; want acme", OutputName("acme", ""), name, ok)
	}
	if _, ok := DefaultOutputOf("acme-output"); ok {
		t.Error("acme-output is no CR's default output")
	}
}
