// Package metabound bounds what the manager's cache keeps of an object's labels,
// annotations, owner references and finalizers. The API server bounds annotations at
// 256 KiB and labels not at all (their number is bounded only by the object's size, about
// 1.4 MiB), and whoever may create an object the manager caches chooses them: a tenant's
// CRs, or its opted-in Secrets. Without a bound a few hundred of them take every
// replica's memory past its limit, and with it every namespace's renewals.
package metabound

import (
	"crypto/rand"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Max is the bound: 128 KiB. It holds every object the operator's users write in
// earnest, even with client-side `kubectl apply`, which copies the whole object into an
// annotation (a Secret at the 64 KiB data bound takes about 88 KiB there), and every
// output Secret the operator writes (about 86 KiB at most, with a template at the CRD's
// bounds).
const Max = 128 << 10

// marker marks an object in the manager's cache that Cut cut down. It exists only in
// memory: the operator never writes a cut object back. Its value is this process's
// nonce, so a marker someone wrote onto an object is told apart from the cache's own.
const marker = "cd.credops.io/cached-without-metadata-too-large"

// nonce is the value of this process's marker.
var nonce = rand.Text()

// Size counts what o carries in the fields its writer fills at will: labels,
// annotations, owner references and finalizers. Fields of bounded size (name, UID,
// timestamps) are left out.
func Size(o metav1.Object) int {
	n := mapSize(o.GetLabels()) + mapSize(o.GetAnnotations())
	for _, r := range o.GetOwnerReferences() {
		n += len(r.APIVersion) + len(r.Kind) + len(r.Name) + len(r.UID)
	}
	for _, f := range o.GetFinalizers() {
		n += len(f)
	}
	return n
}

func mapSize(m map[string]string) int {
	n := 0
	for k, v := range m {
		n += len(k) + len(v)
	}
	return n
}

// Cut cuts o's metadata down to a stub when it carries more than Max (Size), on its way
// into the cache: it keeps the labels named in keep (whose values are at most 63 bytes),
// the controller reference and the marker, and drops every other label, annotation,
// owner reference and finalizer. Whatever o carried could be the excess, so nothing else
// is kept. It reports whether o is a stub. Idempotent, as a cache transform must be; a
// marker someone else wrote is dropped.
//
// A stub must not be written back, nor used to compute a write of its metadata: a
// merge patch of its finalizers would drop the ones it lost. Callers refuse it (Over).
func Cut(o metav1.Object, keep ...string) bool {
	if stubbed(o) {
		return true
	}
	delete(o.GetAnnotations(), marker) // someone else's marker says nothing
	if Size(o) <= Max {
		return false
	}
	labels := map[string]string{}
	for _, k := range keep {
		if v, ok := o.GetLabels()[k]; ok {
			labels[k] = v
		}
	}
	var owners []metav1.OwnerReference
	if c := metav1.GetControllerOfNoCopy(o); c != nil {
		owners = []metav1.OwnerReference{*c}
	}
	o.SetLabels(labels)
	o.SetAnnotations(map[string]string{marker: nonce})
	o.SetOwnerReferences(owners)
	o.SetFinalizers(nil)
	return true
}

// Over reports whether o carries more than Max, or is the stub the cache keeps of such
// an object.
func Over(o metav1.Object) bool {
	return stubbed(o) || Size(o) > Max
}

// stubbed reports whether Cut in this process cut o down.
func stubbed(o metav1.Object) bool {
	v, ok := o.GetAnnotations()[marker]
	return ok && v == nonce
}
