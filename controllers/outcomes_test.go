package controllers

import (
	"errors"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

// A terminal error is never requeued: only a blocker whose end is an event for the CR
// (its spec, a Secret it references and the cache holds) may stall it. A name held by a
// user's Secret, or a refresh-token Secret bound to a grant of another shard, can be
// freed without one; stalled on them, a CR would stay stuck after the fix its message
// asks for.
func TestABlockedPassStallsOnlyWhenAnEventEndsIt(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		reason   string
		terminal bool
	}{
		{"a Secret that is not opted in (labelling it is an event)", &secrets.NotOptedInError{}, cdv1.SecretNotOptedInReason, true},
		{"an invalid client Secret (fixing it is an event)", &secrets.InvalidError{}, cdv1.ClientSecretInvalidReason, true},
		{"an invalid secret template (only the spec fixes it)", wrapTemplate(errors.New("bad label")), cdv1.SecretTemplateInvalidReason, true},
		{"the output name taken by another Secret", fmt.Errorf("%w: Secret x", secrets.ErrNameConflict), cdv1.SecretNameConflictReason, false},
		{"the refresh-token Secret bound to another live grant", errBoundElsewhere, cdv1.RefreshTokenSecretInUseReason, false},
		{"a missing Secret", apierrors.NewNotFound(corev1.Resource("secrets"), "x"), cdv1.ClientSecretNotFoundReason, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reason, terminal := blockedReason(tc.err)
			if reason != tc.reason || terminal != tc.terminal {
				t.Errorf("blockedReason = %s, terminal %v; want %s, terminal %v", reason, terminal, tc.reason, tc.terminal)
			}
		})
	}
}
