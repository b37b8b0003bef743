package secrets

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
)

// A refresh token's stored life holds for that very token only: a token put in its
// Secret by other means (by hand) has no known expiry, and an unreadable record is
// none.
func TestARefreshTokensLifeIsReadForThatTokenOnly(t *testing.T) {
	issued := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	life := rotation.Schedule{Issued: issued, ExpiresAt: issued.Add(30 * time.Minute)}
	s := &corev1.Secret{}
	SetRefreshLife(s, rotation.Hash("rt-1"), life)
	if got, ok := RefreshLife(s, rotation.Hash("rt-1")); !ok || got != life {
		t.Errorf("RefreshLife = %+v, %v; want %+v", got, ok, life)
	}
	if got, ok := RefreshLife(s, rotation.Hash("rt-2")); ok {
		t.Errorf("another token's life read as %+v", got)
	}
	s.Annotations[cdv1.RefreshExpiresAtAnnotation] = "soon " + rotation.Hash("rt-1")
	if got, ok := RefreshLife(s, rotation.Hash("rt-1")); ok {
		t.Errorf("an unreadable record read as %+v", got)
	}
	SetRefreshLife(s, rotation.Hash("rt-1"), rotation.Schedule{})
	if v, ok := s.Annotations[cdv1.RefreshExpiresAtAnnotation]; ok {
		t.Errorf("no limit left the record %q", v)
	}
}
