package metabound

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// An object one byte over Max, in whichever field, is cut down to what the operator
// reads of it; one at Max is kept whole. A second pass changes nothing.
func TestAnObjectOverMaxIsCutDownToAStub(t *testing.T) {
	controller := metav1.OwnerReference{APIVersion: "cd.credops.io/v1alpha1", Kind: "CDUserGrant", Name: "acme", UID: "u-1", Controller: ptr.To(true)}
	base := func() *metav1.ObjectMeta {
		return &metav1.ObjectMeta{
			Namespace: "ns", Name: "acme", UID: "u-2", ResourceVersion: "7", Generation: 3,
			Labels:          map[string]string{"keep": "me", "team": "pricing"},
			Annotations:     map[string]string{"note": "x"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "cm", UID: "u-3"}, controller},
			Finalizers:      []string{"example.com/hold"},
		}
	}
	room := Max - Size(base())
	for name, add := range map[string]func(m *metav1.ObjectMeta, n int){
		"annotations": func(m *metav1.ObjectMeta, n int) { m.Annotations["pad"] = strings.Repeat("x", n-len("pad")) },
		"labels (the API server has no bound on them)": func(m *metav1.ObjectMeta, n int) {
			for i := 0; n > 0; i++ {
				k := fmt.Sprintf("pad-%06d", i)
				size := min(63, n-len(k))
				if left := n - len(k) - size; left > 0 && left < len(k) {
					size -= len(k) - left // leave room for one more key
				}
				m.Labels[k] = strings.Repeat("v", size)
				n -= len(k) + size
			}
		},
		"owner references": func(m *metav1.ObjectMeta, n int) {
			m.OwnerReferences = append(m.OwnerReferences, metav1.OwnerReference{Name: strings.Repeat("x", n)})
		},
		"finalizers": func(m *metav1.ObjectMeta, n int) { m.Finalizers = append(m.Finalizers, strings.Repeat("x", n)) },
	} {
		t.Run(name, func(t *testing.T) {
			at := base()
			add(at, room)
			if Size(at) != Max {
				t.Fatalf("padded to %d bytes, want %d", Size(at), Max)
			}
			kept := at.DeepCopy()
			if Cut(kept, "keep") || Over(kept) || !cmp.Equal(at, kept) {
				t.Errorf("an object at Max was cut: %s", cmp.Diff(at, kept))
			}

			over := base()
			add(over, room+1)
			if !Cut(over, "keep") || !Over(over) {
				t.Fatalf("an object of %d bytes was not cut", Size(base())+room+1)
			}
			want := base()
			want.Labels = map[string]string{"keep": "me"}
			want.Annotations = over.Annotations
			want.OwnerReferences = []metav1.OwnerReference{controller}
			want.Finalizers = nil
			if diff := cmp.Diff(want, over); diff != "" || len(over.Annotations) != 1 {
				t.Errorf("the stub (-want +got):\n%s\nannotations %v, want the marker alone", diff, over.Annotations)
			}
			again := over.DeepCopy()
			if !Cut(again, "keep") || !cmp.Equal(over, again) {
				t.Errorf("a second pass changed the stub: %s", cmp.Diff(over, again))
			}
		})
	}
}

// The marker is the cache's own: one somebody wrote on an object neither makes it a
// stub nor survives the transform.
func TestAWrittenMarkerSaysNothing(t *testing.T) {
	m := &metav1.ObjectMeta{Name: "acme", Annotations: map[string]string{marker: "forged", "team": "pricing"}, Finalizers: []string{"example.com/hold"}}
	if Over(m) {
		t.Error("an object with a forged marker is taken for a stub")
	}
	if Cut(m) {
		t.Error("an object with a forged marker was cut")
	}
	if diff := cmp.Diff(&metav1.ObjectMeta{Name: "acme", Annotations: map[string]string{"team": "pricing"}, Finalizers: []string{"example.com/hold"}}, m); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
