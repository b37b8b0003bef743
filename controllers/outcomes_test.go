package controllers

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
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
		{"an output Secret name the API server refuses (only the spec fixes it)", checkOutputName(strings.Repeat("a", 250) + "-token"), cdv1.SecretTemplateInvalidReason, true},
		{"an output Secret carrying too much metadata (shrinking it is an event)", fmt.Errorf("%w: Secret x", secrets.ErrOutputTooLarge), cdv1.OutputSecretTooLargeReason, true},
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

// A 404 or 405 from the token URL is a wrong spec.issuer or spec.tokenURL more often
// than anything else: the report names the URL that answered and the fields to check
// (for a grant, its CDCredential's), and does not blame the refresh token.
func TestAWrongTokenURLIsReportedWithTheFieldsToCheck(t *testing.T) {
	notFound := &tokenclient.Error{Kind: tokenclient.KindEndpointNotFound, StatusCode: 404, Description: "non-JSON response (text/plain)", Endpoint: "https://id.example.com/connect/token/connect/token"}
	const answer = "no token endpoint at https://id.example.com/connect/token/connect/token: non-JSON response (text/plain) (HTTP 404)"
	cases := map[string]struct {
		grant bool
		want  string
	}{
		"a credential": {false, "The token URL is wrong: " + answer + ". Check spec.issuer (the operator appends /connect/token to it) or spec.tokenURL"},
		"a grant":      {true, "The token URL is wrong: " + answer + ". Check the CDCredential's spec.issuer (the operator appends /connect/token to it) or spec.tokenURL"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ref, msg := refusalOf(answered{outcome: rotation.Judge(nil, notFound, false)}, tc.grant)
			if ref.reason != cdv1.TokenRequestRefusedReason {
				t.Errorf("reason %s, want %s", ref.reason, cdv1.TokenRequestRefusedReason)
			}
			if msg != tc.want {
				t.Errorf("message\n%q, want\n%q", msg, tc.want)
			}
		})
	}
}
