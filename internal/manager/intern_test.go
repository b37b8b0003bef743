package manager

import (
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// decoded is a grant's output Secret as an informer decodes it: every string its own
// copy.
func decoded(grant string) *corev1.Secret {
	c := strings.Clone
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: c(grant + "-token"), Namespace: c("team"),
			Labels:          map[string]string{c(cdv1.SecretTypeLabel): c(cdv1.SecretTypeAccessToken), c(cdv1.OwnerLabel): c("CDUserGrant." + grant)},
			Annotations:     map[string]string{c(cdv1.ExpiresAtAnnotation): c("2026-11-29T18:00:00Z")},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: c("cd.credops.io/v1alpha1"), Kind: c("CDUserGrant"), Name: c(grant), UID: types.UID("u-" + grant)}},
		},
		Type: corev1.SecretType(c("Opaque")),
		Data: map[string][]byte{c(cdv1.TokenTypeKey): []byte("Bearer"), c(cdv1.ScopeKey): []byte("marketplace")},
	}
}

func sameCopy(a, b string) bool { return a == b && unsafe.StringData(a) == unsafe.StringData(b) }

// keyOf returns m's key equal to k, as stored.
func keyOf[V any](m map[string]V, k string) string {
	for key := range m {
		if key == k {
			return key
		}
	}
	return ""
}

// Two grants' cached Secrets share the strings that repeat, and read exactly as before.
func TestCachedObjectsShareTheStringsThatRepeat(t *testing.T) {
	a, b := decoded("acme"), decoded("zeta")
	wantA, wantB := a.DeepCopy(), b.DeepCopy()
	for _, s := range []*corev1.Secret{a, b} {
		if _, err := trimForCache(s); err != nil { // the cache's transform
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff(wantA, a); diff != "" {
		t.Errorf("interning changed the object (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantB, b); diff != "" {
		t.Errorf("interning changed the object (-want +got):\n%s", diff)
	}
	for name, pair := range map[string][2]string{
		"namespace":         {a.Namespace, b.Namespace},
		"label key":         {keyOf(a.Labels, cdv1.SecretTypeLabel), keyOf(b.Labels, cdv1.SecretTypeLabel)},
		"label value":       {a.Labels[cdv1.SecretTypeLabel], b.Labels[cdv1.SecretTypeLabel]},
		"annotation key":    {keyOf(a.Annotations, cdv1.ExpiresAtAnnotation), keyOf(b.Annotations, cdv1.ExpiresAtAnnotation)},
		"owner kind":        {a.OwnerReferences[0].Kind, b.OwnerReferences[0].Kind},
		"owner API version": {a.OwnerReferences[0].APIVersion, b.OwnerReferences[0].APIVersion},
		"data key":          {keyOf(a.Data, cdv1.ScopeKey), keyOf(b.Data, cdv1.ScopeKey)},
		"type":              {string(a.Type), string(b.Type)},
	} {
		if !sameCopy(pair[0], pair[1]) {
			t.Errorf("%s %q: two copies", name, pair[0])
		}
	}
	if sameCopy(a.Name, b.Name) || a.Name == b.Name {
		t.Fatal("the fixture's names must differ")
	}

	g1, g2 := &cdv1.CDUserGrant{}, &cdv1.CDUserGrant{}
	for _, g := range []*cdv1.CDUserGrant{g1, g2} {
		g.Status.Conditions = []metav1.Condition{{Type: strings.Clone("Ready"), Status: "True", Reason: strings.Clone("TokenIssued"), Message: strings.Clone("The grant uses an AuthorizationCode credential")}}
		if _, err := trimForCache(g); err != nil {
			t.Fatal(err)
		}
	}
	if c1, c2 := g1.Status.Conditions[0], g2.Status.Conditions[0]; !sameCopy(c1.Message, c2.Message) || !sameCopy(c1.Reason, c2.Reason) {
		t.Error("two grants' identical conditions keep two copies")
	}
}

// The table is bounded: strings that stop repeating age out, and one that keeps
// repeating keeps its copy.
func TestTheStringTableIsBounded(t *testing.T) {
	in := &interner{cur: map[string]string{}}
	kept := in.intern(strings.Clone("cd.credops.io/secret-type"))
	for i := range 5 * internGeneration {
		in.intern("one-off-" + strconv.Itoa(i))
		if got := in.intern(strings.Clone("cd.credops.io/secret-type")); !sameCopy(got, kept) {
			t.Fatalf("after %d one-off strings a repeating one got a new copy", i)
		}
	}
	if n := len(in.cur) + len(in.old); n > 2*internGeneration {
		t.Errorf("the table holds %d strings, want at most %d", n, 2*internGeneration)
	}
	long := strings.Repeat("x", maxInterned+1)
	in.intern(long)
	if _, ok := in.cur[long]; ok {
		t.Error("a string longer than maxInterned was kept")
	}
}
