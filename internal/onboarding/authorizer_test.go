package onboarding

import (
	"net/url"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// A login that claims its link but yields no refresh token (consent not forced, the code
// refused) leaves the grant waiting. The link it shows next must be a new one: the spent
// link only answers "already used", and a customer would be sent round in circles.
func TestASpentLinkIsNeverOfferedAgain(t *testing.T) {
	now := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
	signer, err := NewSigner([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	a := &Authorizer{Signer: signer, CallbackURL: "https://cd-callback.example.com/callback"}
	grant := &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme", UID: "uid-acme"}}
	cred := &cdv1.CDCredential{Spec: cdv1.CDCredentialSpec{Issuer: "https://id.example.com"}}

	first, _ := a.AuthorizationURL(grant, cred, "client", "", now)
	if kept, _ := a.AuthorizationURL(grant, cred, "client", first, now.Add(time.Minute)); kept != first {
		t.Fatalf("a link nobody used changed on the next pass: %q, then %q", first, kept)
	}
	st, err := signer.Verify(stateOf(t, first), now)
	if err != nil {
		t.Fatal(err)
	}
	// The callback claims the state before it exchanges the code.
	metav1.SetMetaDataAnnotation(&grant.ObjectMeta, UsedStateAnnotation, NonceHash(st))
	next, _ := a.AuthorizationURL(grant, cred, "client", first, now.Add(2*time.Minute))
	if stateOf(t, next) == stateOf(t, first) {
		t.Errorf("the grant offers the link whose login was spent (%s) again", first)
	}
	if again, _ := a.AuthorizationURL(grant, cred, "client", next, now.Add(3*time.Minute)); again != next {
		t.Errorf("the new link changed on the next pass: %q, then %q", next, again)
	}
}

func stateOf(t *testing.T, link string) string {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get("state")
}
