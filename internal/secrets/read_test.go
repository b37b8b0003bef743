package secrets

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/metabound"
)

func clientSecretOf(size int) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c", Labels: map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeClient}},
		Data:       map[string][]byte{"client_id": []byte("id"), "client_secret": []byte("secret")},
	}
	if pad := size - dataSize(s) - len("padding"); pad >= 0 {
		s.Data["padding"] = []byte(strings.Repeat("x", pad))
	}
	return s
}

// bothWays are the two ways Get finds a Secret: from the cache, which holds cached, and
// around it, from the API server, which holds full.
func bothWays(cached, full *corev1.Secret) map[string]Readers {
	return map[string]Readers{
		"from the cache":   {Cache: fake.NewClientBuilder().WithObjects(cached).Build(), API: fake.NewClientBuilder().Build()},
		"around the cache": {Cache: fake.NewClientBuilder().Build(), API: fake.NewClientBuilder().WithObjects(full).Build()},
	}
}

// A Secret over MaxData enters the cache without its data, and Get refuses it whether it
// comes from the cache or from around it; one at MaxData is kept and read whole.
func TestASecretOverMaxDataIsCachedWithoutItsDataAndRefused(t *testing.T) {
	key := types.NamespacedName{Namespace: "ns", Name: "c"}
	for _, tc := range []struct {
		size    int
		refused bool
	}{{MaxData, false}, {MaxData + 1, true}, {1 << 20, true}} {
		full := clientSecretOf(tc.size)
		cached := full.DeepCopy()
		TrimForCache(cached)
		if dropped := cached.Data == nil; dropped != tc.refused {
			t.Errorf("%d bytes: data dropped in the cache %v, want %v", tc.size, dropped, tc.refused)
		}
		again := cached.DeepCopy()
		TrimForCache(again)
		if len(again.Data) != len(cached.Data) || again.Annotations[tooLargeAnnotation] != cached.Annotations[tooLargeAnnotation] {
			t.Errorf("%d bytes: a second pass through the transform changed the Secret", tc.size)
		}
		for name, r := range bothWays(cached, full) {
			s, err := r.Get(t.Context(), key, cdv1.SecretTypeClient)
			var invalid *InvalidError
			if refused := errors.As(err, &invalid); refused != tc.refused {
				t.Errorf("%d bytes, %s: err %v, want refused %v", tc.size, name, err, tc.refused)
			}
			if !tc.refused && string(s.Data["client_secret"]) != "secret" {
				t.Errorf("%d bytes, %s: data not read", tc.size, name)
			}
			if tc.refused && !strings.Contains(err.Error(), "more than 64 KiB") {
				t.Errorf("%d bytes, %s: %q does not say why", tc.size, name, err)
			}
		}
	}
}

// The marker is the cache's own: one somebody wrote on a Secret neither drops its data
// nor makes Get refuse it.
func TestAWrittenTooLargeMarkerSaysNothing(t *testing.T) {
	s := clientSecretOf(100)
	s.Annotations = map[string]string{tooLargeAnnotation: "forged"}
	TrimForCache(s)
	if _, ok := s.Annotations[tooLargeAnnotation]; ok || s.Data == nil {
		t.Fatalf("a forged marker kept (%v) or the data dropped", s.Annotations)
	}
	r := Readers{Cache: fake.NewClientBuilder().WithObjects(s).Build(), API: fake.NewClientBuilder().Build()}
	if _, err := r.Get(t.Context(), types.NamespacedName{Namespace: "ns", Name: "c"}, cdv1.SecretTypeClient); err != nil {
		t.Errorf("err %v", err)
	}
}

// A Secret opted in as another type says only that: nothing but its labels is looked at,
// its size included.
func TestASecretOfAnotherTypeIsRefusedForItsTypeAlone(t *testing.T) {
	s := clientSecretOf(MaxData + 1)
	s.Labels[cdv1.SecretTypeLabel] = cdv1.SecretTypeRefreshToken
	TrimForCache(s)
	r := Readers{Cache: fake.NewClientBuilder().WithObjects(s).Build(), API: fake.NewClientBuilder().Build()}
	_, err := r.Get(t.Context(), types.NamespacedName{Namespace: "ns", Name: "c"}, cdv1.SecretTypeClient)
	var notOptedIn *NotOptedInError
	if !errors.As(err, &notOptedIn) || strings.Contains(err.Error(), "KiB") {
		t.Errorf("err %v, want the type refused alone", err)
	}
}

// Finding (review, 2026-12-03): MaxData bounded only the data. The API server bounds
// annotations at 256 KiB and labels only by the object's size, so an opted-in Secret
// still took up to 1.4 MiB of the manager's memory. A Secret over metabound.Max of
// labels, annotations, owner references or finalizers is cached as a stub, and Get
// refuses it whether it comes from the cache or from around it; one at the bound is kept
// and read whole.
func TestASecretOverMaxMetadataIsCachedAsAStubAndRefused(t *testing.T) {
	key := types.NamespacedName{Namespace: "ns", Name: "c"}
	owner := metav1.OwnerReference{APIVersion: "cd.credops.io/v1alpha1", Kind: "CDCredential", Name: "pricing", UID: "u-1", Controller: ptr.To(true)}
	base := clientSecretOf(100)
	base.OwnerReferences = []metav1.OwnerReference{owner}
	base.Labels[cdv1.ManagedByLabel] = cdv1.ManagedByValue
	base.Labels[cdv1.OwnerLabel] = "CDCredential.pricing"
	room := metabound.Max - metabound.Size(base)
	for _, tc := range []struct {
		name    string
		add     func(s *corev1.Secret)
		refused bool
	}{
		{"annotations at the bound", func(s *corev1.Secret) { s.Annotations = map[string]string{"pad": strings.Repeat("x", room-len("pad"))} }, false},
		{"annotations a byte over", func(s *corev1.Secret) {
			s.Annotations = map[string]string{"pad": strings.Repeat("x", room+1-len("pad"))}
		}, true},
		{"1 MiB of labels (the API server has no bound on them)", func(s *corev1.Secret) {
			for i := 0; i < 1<<20/73; i++ {
				s.Labels[fmt.Sprintf("pad-%06d", i)] = strings.Repeat("x", 63)
			}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			full := base.DeepCopy()
			tc.add(full)
			cached := full.DeepCopy()
			TrimForCache(cached)
			if stub := cached.Data == nil; stub != tc.refused {
				t.Errorf("cut down %v, want %v", stub, tc.refused)
			}
			if tc.refused {
				want := metav1.ObjectMeta{
					Namespace: "ns", Name: "c",
					// Its CR still lists it by these (leftoverOutputs).
					Labels:          map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeClient, cdv1.OwnerLabel: "CDCredential.pricing"},
					Annotations:     cached.Annotations, // the cache's marker alone
					OwnerReferences: []metav1.OwnerReference{owner},
				}
				if diff := cmp.Diff(want, cached.ObjectMeta); diff != "" || len(cached.Annotations) != 1 || !metabound.Over(cached) {
					t.Errorf("the cache keeps annotations %v and (-want +got):\n%s", cached.Annotations, diff)
				}
			}
			again := cached.DeepCopy()
			TrimForCache(again)
			if diff := cmp.Diff(cached, again); diff != "" {
				t.Errorf("a second pass through the transform changed the Secret:\n%s", diff)
			}
			for name, r := range bothWays(cached, full) {
				_, err := r.Get(t.Context(), key, cdv1.SecretTypeClient)
				var invalid *InvalidError
				if refused := errors.As(err, &invalid); refused != tc.refused {
					t.Errorf("%s: err %v, want refused %v", name, err, tc.refused)
				}
				if tc.refused && !strings.Contains(err.Error(), "more than 128 KiB of labels, annotations") {
					t.Errorf("%s: %q does not say why", name, err)
				}
			}
			if err := CheckOutputSize(cached); errors.Is(err, ErrOutputTooLarge) != tc.refused {
				t.Errorf("as an output: %v, want refused %v", err, tc.refused)
			}
		})
	}
}

// The largest output Secret the operator can write stays under metabound.Max, so the
// cache never cuts down one of its own: a template at the CRD's bounds (16 labels and
// 16 annotations, keys of 317 bytes, annotation values of 4 KiB), with the record of its
// keys and the operator's own labels and annotations.
func TestTheLargestOutputTheOperatorWritesIsKeptWhole(t *testing.T) {
	tmpl := &cdv1.SecretTemplate{Labels: map[string]cdv1.LabelValue{}, Annotations: map[string]cdv1.AnnotationValue{}}
	for i := range 16 {
		key := fmt.Sprintf("%s/%s%02d", strings.Repeat("p", 253), strings.Repeat("n", 61), i)
		tmpl.Labels[key] = cdv1.LabelValue(strings.Repeat("v", 63))
		tmpl.Annotations[key] = cdv1.AnnotationValue(strings.Repeat("v", 4096))
	}
	owner := &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: strings.Repeat("g", 253), UID: "u-1"}}
	ac := Output{Owner: owner, OwnerGVK: cdv1.GroupVersion.WithKind("CDUserGrant"), Name: strings.Repeat("s", 253), Template: tmpl,
		AccessToken: "at", TokenType: "Bearer", Fingerprint: strings.Repeat("f", 64)}.Apply()
	meta := &metav1.ObjectMeta{Labels: ac.Labels, Annotations: ac.Annotations}
	for _, o := range ac.OwnerReferences {
		meta.OwnerReferences = append(meta.OwnerReferences, metav1.OwnerReference{APIVersion: *o.APIVersion, Kind: *o.Kind, Name: *o.Name, UID: *o.UID})
	}
	if n := metabound.Size(meta); n > metabound.Max {
		t.Errorf("the largest output carries %d bytes besides its data, over metabound.Max (%d)", n, metabound.Max)
	} else {
		t.Logf("the largest output carries %d bytes besides its data (metabound.Max %d)", n, metabound.Max)
	}
}
