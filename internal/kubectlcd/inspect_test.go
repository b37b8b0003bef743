package kubectlcd

import (
	"bytes"
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func signedToken(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte("test-key-not-a-secret"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func outputSecret(token string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "acme-token"},
		Data: map[string][]byte{
			"access_token": []byte(token), "authorization": []byte("Bearer " + token), "token_type": []byte("Bearer"),
			"expires_at": []byte("2026-11-23T19:41:00Z"), "scope": []byte("marketplace offline_access"),
		},
	}
}

func TestSummarizeSecret(t *testing.T) {
	owner := OwnerRef{Kind: grantKind, Name: "acme"}
	jwtToken := signedToken(t, jwt.MapClaims{"sub": "dispatcher@acme.example", "exp": now.Add(41 * time.Minute).Unix(), "iss": "https://id.example.com"})
	cases := map[string]struct {
		secret     *corev1.Secret
		wantFormat string
		wantSub    string
		wantClaims []string
	}{
		"a JWT access token": {outputSecret(jwtToken), "JWT", "dispatcher@acme.example", []string{"exp", "iss", "sub"}},
		"an opaque token":    {outputSecret("opaque-token-value-123"), "opaque", "", nil},
		"no token yet":       {&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "acme-token"}}, "none", "", nil},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := summarizeSecret(tc.secret, owner, now)
			var claims []string
			for k := range s.Claims {
				claims = append(claims, k)
			}
			if s.Format != tc.wantFormat || s.Subject != tc.wantSub || !cmp.Equal(claims, tc.wantClaims, cmpSorted) {
				t.Errorf("format %q subject %q claims %v; want %q %q %v", s.Format, s.Subject, claims, tc.wantFormat, tc.wantSub, tc.wantClaims)
			}
		})
	}
}

var cmpSorted = cmp.Transformer("sort", func(in []string) []string {
	out := append([]string(nil), in...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
})

func TestPrintSecret(t *testing.T) {
	token := signedToken(t, jwt.MapClaims{"sub": "dispatcher@acme.example", "exp": now.Add(41 * time.Minute).Unix(), "scope": "marketplace"})
	s := outputSecret(token)
	var buf bytes.Buffer
	if err := printSecret(&buf, summarizeSecret(s, OwnerRef{Kind: grantKind, Name: "acme"}, now), now); err != nil {
		t.Fatal(err)
	}
	want := `
Secret:       team-a/acme-token
Owner:        CDUserGrant acme
Token type:   Bearer
Expires:      2026-11-23T19:41:00Z (in 41m)
Scopes:       marketplace offline_access
Subject:      dispatcher@acme.example
Keys:         access_token, authorization, expires_at, scope, token_type
Token:        JWT (claims decoded, signature NOT verified; the token itself is never shown)
Header:
  alg:   HS256
  typ:   JWT
Claims:
  exp:     1795462860 = 2026-11-23T19:41:00Z (in 41m)
  scope:   marketplace
  sub:     dispatcher@acme.example
`
	if diff := cmp.Diff(strings.TrimPrefix(want, "\n"), buf.String()); diff != "" {
		t.Errorf("inspect secret (-want +got):\n%s", diff)
	}
}

func TestRedactRemovesEveryFormOfTheToken(t *testing.T) {
	token := "tok/en+with=odd&chars-0123456789"
	s := outputSecret(token)
	forms := []string{token, base64.StdEncoding.EncodeToString([]byte(token)), url.QueryEscape(token), "Bearer " + token}
	out := string(redact([]byte("a "+strings.Join(forms, " b ")+" c"), s))
	for _, f := range forms {
		if strings.Contains(out, f) {
			t.Errorf("%q survived redaction: %s", f, out)
		}
	}
	if !strings.HasPrefix(out, "a <redacted> b") {
		t.Errorf("redacted output %q", out)
	}
}

func TestOutputOwner(t *testing.T) {
	ctrl := true
	cases := map[string]struct {
		meta    metav1.ObjectMeta
		want    OwnerRef
		wantOut bool
	}{
		"an output Secret of a grant": {metav1.ObjectMeta{Labels: map[string]string{"cd.credops.io/owner": "CDUserGrant.acme"}}, OwnerRef{grantKind, "acme"}, true},
		"a long owner name comes from the controller reference": {metav1.ObjectMeta{
			Labels:          map[string]string{"cd.credops.io/owner": "CDCredential.a-very-long-name-hashed-0123456789"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "cd.credops.io/v1alpha1", Kind: credentialKind, Name: "a-very-long-name", Controller: &ctrl}},
		}, OwnerRef{credentialKind, "a-very-long-name"}, true},
		"a refresh-token Secret":         {metav1.ObjectMeta{Labels: map[string]string{"cd.credops.io/secret-type": "refresh-token", "cd.credops.io/watch": "true"}}, OwnerRef{}, false},
		"an unrelated Secret":            {metav1.ObjectMeta{Labels: map[string]string{"app": "x"}}, OwnerRef{}, false},
		"an owner label of another kind": {metav1.ObjectMeta{Labels: map[string]string{"cd.credops.io/owner": "Deployment.x"}}, OwnerRef{}, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, ok := outputOwner(&metav1.PartialObjectMetadata{ObjectMeta: tc.meta})
			if ok != tc.wantOut || got != tc.want {
				t.Errorf("got %v %v, want %v %v", got, ok, tc.want, tc.wantOut)
			}
		})
	}
}
