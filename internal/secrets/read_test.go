package secrets

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
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
		for name, r := range map[string]Readers{
			"from the cache":   {Cache: fake.NewClientBuilder().WithObjects(cached).Build(), API: fake.NewClientBuilder().Build()},
			"around the cache": {Cache: fake.NewClientBuilder().Build(), API: fake.NewClientBuilder().WithObjects(full).Build()},
		} {
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
