// Package secrets is the operator's contract with Secrets: which ones it may read (only
// those opted in with cd.credops.io/secret-type), how a client Secret becomes a token
// endpoint, how a refresh-token Secret is bound to one grant and rewritten, and what an
// output Secret looks like (DESIGN §3, §8). Both the controllers and the onboarding
// callback use it, so the rules exist once.
package secrets

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/metabound"
)

// NotOptedInError says a referenced Secret exists but is not opted in for the use a CR
// makes of it. Nothing was read from it but its labels.
type NotOptedInError struct {
	Namespace, Name string
	// Want is the cd.credops.io/secret-type value the use requires; Got the one it has.
	Want, Got string
}

func (e *NotOptedInError) Error() string {
	cmd := fmt.Sprintf("kubectl -n %s label secret %s %s=%s", e.Namespace, e.Name, cdv1.SecretTypeLabel, e.Want)
	if e.Got != "" {
		return fmt.Sprintf("Secret %s is labelled %s=%s, not %s; nothing was read from it. If it really holds this value, run: %s --overwrite", e.Name, cdv1.SecretTypeLabel, e.Got, e.Want, cmd)
	}
	return fmt.Sprintf("Secret %s is not opted in for the operator, so nothing was read from it. If it holds what this CR needs, run: %s", e.Name, cmd)
}

// Readers are the two ways to read a Secret: through the manager's cache, which holds
// only opted-in Secrets, and around it.
type Readers struct {
	Cache client.Reader
	API   client.Reader
}

// Get returns the Secret key if it is opted in as want. A cache miss is confirmed around
// the cache with a metadata-only read, which tells a missing Secret (NotFound) from one
// that is not opted in (*NotOptedInError) without reading its data; a Secret the informer
// has not caught up with yet is then read directly.
func (r Readers) Get(ctx context.Context, key types.NamespacedName, want string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	err := r.Cache.Get(ctx, key, s)
	if err == nil {
		return s, usable(s, want)
	}
	if !apierrors.IsNotFound(err) {
		return nil, err
	}
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := r.API.Get(ctx, key, m); err != nil {
		return nil, err
	}
	if err := optedIn(m.ObjectMeta, want); err != nil {
		return nil, err
	}
	if err := r.API.Get(ctx, key, s); err != nil {
		return nil, err
	}
	return s, usable(s, want)
}

// usable is why s may not be read as a Secret of type want: not opted in as that (then
// nothing but its labels was looked at), or over MaxData.
func usable(s *corev1.Secret, want string) error {
	if err := optedIn(s.ObjectMeta, want); err != nil {
		return err
	}
	return tooLarge(s)
}

// MaxData bounds the data of an opted-in Secret the operator keeps in its cache and
// reads: 64 KiB, where a client Secret or a refresh-token Secret needs a few keys of at
// most MaxValue each, and the operator's own output a few more. Whoever may create
// Secrets in a namespace may label them opted in, and the manager caches every one
// (DESIGN §8): without a bound, a few hundred Secrets of 1 MiB from one namespace would
// take every replica's memory past its limit, and with it every namespace's renewals.
const MaxData = 64 << 10

// tooLargeAnnotation marks a Secret in the manager's cache whose data capData dropped.
// Like trimmedAnnotation it exists only in memory, and only this process's nonce says
// anything.
const tooLargeAnnotation = "cd.credops.io/cached-without-data-too-large"

// capData drops the data of a Secret over MaxData on its way into the cache, and marks
// it: Get refuses it (tooLarge), so nothing is read from it and nothing written back
// over it from the cache. Idempotent, as a transform must be.
func capData(s *corev1.Secret) {
	if cappedHere(s) {
		return
	}
	delete(s.Annotations, tooLargeAnnotation) // someone else's marker says nothing
	if dataSize(s) <= MaxData {
		return
	}
	s.Data = nil
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[tooLargeAnnotation] = trimNonce
}

// cappedHere reports whether capData in this process dropped s's data.
func cappedHere(s *corev1.Secret) bool {
	v, ok := s.Annotations[tooLargeAnnotation]
	return ok && v == trimNonce
}

func dataSize(s *corev1.Secret) int {
	n := 0
	for k, v := range s.Data {
		n += len(k) + len(v)
	}
	return n
}

// tooLarge returns an *InvalidError for a Secret over MaxData or metabound.Max, whether
// read from the cache (capData or capMetadata cut it down) or around it.
func tooLarge(s *corev1.Secret) error {
	if metabound.Over(s) {
		return &InvalidError{msg: fmt.Sprintf("Secret %s carries more than %d KiB of labels, annotations, owner references and finalizers, so the operator reads nothing from it: remove what was added to it", s.Name, metabound.Max>>10)}
	}
	if cappedHere(s) || dataSize(s) > MaxData {
		return &InvalidError{msg: fmt.Sprintf("Secret %s holds more than %d KiB of data, so the operator reads nothing from it (a client or refresh-token Secret needs a few keys of at most %d bytes): keep other data in another Secret", s.Name, MaxData>>10, MaxValue)}
	}
	return nil
}

// capMetadata cuts a Secret over metabound.Max down to a stub on its way into the cache
// (metabound.Cut): it keeps its type and owner labels (an output's CR still finds it by
// them) and its controller reference, and no data. Get refuses the stub (tooLarge), an
// output Secret cut down is refused as one (CheckOutputSize), and nothing is written back
// over it from the cache. Unlike a Secret over MaxData, which keeps its metadata, a
// Secret over this bound is not the operator's to make smaller: what it carries beyond
// the operator's few annotations is someone else's.
func capMetadata(s *corev1.Secret) {
	if metabound.Cut(s, cdv1.SecretTypeLabel, cdv1.OwnerLabel) {
		s.Data = nil
	}
}

func optedIn(m metav1.ObjectMeta, want string) error {
	if got := m.Labels[cdv1.SecretTypeLabel]; got != want {
		return &NotOptedInError{Namespace: m.Namespace, Name: m.Name, Want: want, Got: got}
	}
	return nil
}

// MaxValue bounds a credential read from a Secret: anything longer is a mistake (a
// whole file pasted in), and would be sent to the identity server on every request.
const MaxValue = 4096

// Value reads one credential from a Secret, trimming the whitespace a shell `echo` or
// an editor leaves, and refusing values that cannot be a credential. Errors name the
// key, never the value.
func Value(s *corev1.Secret, key string) (string, error) {
	raw, ok := s.Data[key]
	if !ok {
		return "", errors.New("key " + key + " is missing")
	}
	v := strings.TrimSpace(string(raw))
	switch {
	case v == "":
		return "", errors.New("key " + key + " is empty")
	case len(v) > MaxValue:
		return "", errors.New("key " + key + " is longer than 4096 bytes")
	case strings.IndexFunc(v, func(r rune) bool { return !unicode.IsPrint(r) || r == unicode.ReplacementChar }) >= 0:
		return "", errors.New("key " + key + " holds characters that are not printable text")
	}
	return v, nil
}
