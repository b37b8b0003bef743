package secrets

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// TemplateFieldOwner is the field manager of a secretTemplate written onto an output
// Secret between tokens (TemplatePatch). That write cannot be an apply under FieldOwner:
// an apply without the data would take away the keys pods mount, and between renewals
// the operator holds no token to put back (the manager's cache drops it, TrimForCache).
const TemplateFieldOwner = FieldOwner + "-template"

// templateAnnotation records on an output Secret the secretTemplate last written onto it:
// a hash of it, and its keys. A pass compares it with the spec's from the cache, at no
// read of its own, and learns from it which keys a template no longer has came from
// one: a key the record does not name is someone else's and is left alone.
const templateAnnotation = "cd.credops.io/secret-template"

// templateRecord is the value of templateAnnotation.
type templateRecord struct {
	Hash        string   `json:"hash"`
	Labels      []string `json:"labels,omitempty"`
	Annotations []string `json:"annotations,omitempty"`
}

// templateRecordOf is the templateAnnotation value of t, "" when t sets nothing.
func templateRecordOf(t *cdv1.SecretTemplate) string {
	if t == nil || len(t.Labels)+len(t.Annotations) == 0 {
		return ""
	}
	whole, _ := json.Marshal(t) // map keys sorted: equal templates hash equal
	sum := sha256.Sum256(whole)
	r, _ := json.Marshal(templateRecord{
		Hash:        hex.EncodeToString(sum[:8]),
		Labels:      slices.Sorted(maps.Keys(t.Labels)),
		Annotations: slices.Sorted(maps.Keys(t.Annotations)),
	})
	return string(r)
}

// TemplatePatch is the JSON merge patch that puts secretTemplate t onto the output Secret
// s, or nil when s carries it already (its record is t's). It sets t's labels and
// annotations, removes the ones the recorded template had and t has not, and records t;
// nothing else. Not the data, so it needs no token and keeps the one there; not a key
// someone else added; never the operator's own metadata.
//
// An output written before the record existed has none: it is taken to carry t when each
// of t's keys has t's value, so an upgrade costs no write per Secret, and then nothing is
// removed, since what an earlier template had is not known.
func TemplatePatch(s *corev1.Secret, t *cdv1.SecretTemplate) []byte {
	if t == nil {
		t = &cdv1.SecretTemplate{}
	}
	want := templateRecordOf(t)
	have, recorded := s.Annotations[templateAnnotation]
	if recorded && have == want || !recorded && carries(s, t) {
		return nil
	}
	var old templateRecord
	_ = json.Unmarshal([]byte(have), &old) // unreadable (a hand edit): nothing to remove
	labels := removed(old.Labels, t.Labels, s.Labels, operatorLabel)
	annotations := removed(old.Annotations, t.Annotations, s.Annotations, operatorAnnotation)
	for k, v := range t.Labels {
		labels[k] = string(v)
	}
	for k, v := range t.Annotations {
		annotations[k] = string(v)
	}
	annotations[templateAnnotation] = nil
	if want != "" {
		annotations[templateAnnotation] = want
	}
	meta := map[string]any{"labels": labels, "annotations": annotations}
	if s.UID != "" {
		meta["uid"] = s.UID // the Secret judged, not another one made since under its name
	}
	patch, _ := json.Marshal(map[string]any{"metadata": meta})
	return patch
}

// carries reports whether s has each of t's labels and annotations with t's value.
func carries(s *corev1.Secret, t *cdv1.SecretTemplate) bool {
	for k, v := range t.Labels {
		if got, ok := s.Labels[k]; !ok || got != string(v) {
			return false
		}
	}
	for k, v := range t.Annotations {
		if got, ok := s.Annotations[k]; !ok || got != string(v) {
			return false
		}
	}
	return true
}

// removed is the part of a merge patch that deletes the keys an earlier template had
// (recorded), the template has no longer (keep), and the Secret still has (present).
// The record is on the Secret, where anyone who may edit it may write it: the
// operator's own keys are never taken from it.
func removed[V any](recorded []string, keep map[string]V, present map[string]string, own func(string) bool) map[string]any {
	patch := map[string]any{}
	for _, k := range recorded {
		_, kept := keep[k]
		_, there := present[k]
		if !kept && there && !own(k) {
			patch[k] = nil
		}
	}
	return patch
}

// operatorLabel and operatorAnnotation report whether a key is the operator's own, which
// a secretTemplate may neither set nor take away.
func operatorLabel(k string) bool { return operatorAnnotation(k) || k == cdv1.ManagedByLabel }

func operatorAnnotation(k string) bool { return strings.HasPrefix(k, "cd.credops.io/") }
