package controllers

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// TestAnEditedSecretTemplateReachesTheOutputSecretWhileTheTokenIsFresh: DESIGN §2.1,
// secretTemplate labels and annotations are copied onto the output Secret. An edit that
// adds, changes or removes one (a Reloader annotation, a policy label) shows on the
// Secret in the next pass, not at the next renewal hours later, and costs no token
// request: the template is not part of what is sent. A label a user put on the Secret by
// hand, and the operator's own metadata, stay; a pass with nothing to change writes
// nothing.
func TestAnEditedSecretTemplateReachesTheOutputSecretWhileTheTokenIsFresh(t *testing.T) {
	type labels = map[string]cdv1.LabelValue
	type annotations = map[string]cdv1.AnnotationValue
	edits := []struct {
		name     string
		template *cdv1.SecretTemplate
	}{
		{"a template added", &cdv1.SecretTemplate{
			Labels:      labels{"team": "pricing", "policy.example.com/tier": "gold"},
			Annotations: annotations{"reloader.stakater.com/match": "true"},
		}},
		{"a value changed, a label and the annotation removed, another annotation added", &cdv1.SecretTemplate{
			Labels:      labels{"team": "billing"},
			Annotations: annotations{"example.com/contact": "ops@example.com"},
		}},
		{"the template removed", nil},
	}
	for _, kind := range []struct {
		name     string
		output   string
		pass     func(w *world) error
		requests func(w *world) int
		edit     func(w *world, tmpl *cdv1.SecretTemplate)
	}{
		{
			name: "CDCredential", output: "pricing-token",
			pass:     func(w *world) error { _, err := w.reconcileCred("pricing"); return err },
			requests: func(w *world) int { return w.tokens.ccCount() },
			edit: func(w *world, tmpl *cdv1.SecretTemplate) {
				c := w.cred("pricing")
				w.update(c, func() { c.Spec.SecretTemplate = tmpl; c.Generation++ })
			},
		},
		{
			name: "CDUserGrant", output: "acme-token",
			pass:     func(w *world) error { _, err := w.reconcileGrant("acme"); return err },
			requests: func(w *world) int { return len(w.tokens.refreshes()) },
			edit: func(w *world, tmpl *cdv1.SecretTemplate) {
				g := w.grant("acme")
				w.update(g, func() { g.Spec.SecretTemplate = tmpl; g.Generation++ })
			},
		},
	} {
		t.Run(kind.name, func(t *testing.T) {
			w := newWorld(t)
			if err := kind.pass(w); err != nil {
				t.Fatal(err)
			}
			s := w.secret(kind.output)
			w.update(s, func() { s.Labels["mine"] = "by-hand"; s.Annotations["mine.example.com/note"] = "by-hand" })
			token, requests := string(s.Data[cdv1.AccessTokenKey]), kind.requests(w)
			for _, e := range edits {
				kind.edit(w, e.template)
				w.clock.Step(time.Minute) // well before the renewal
				if err := kind.pass(w); err != nil {
					t.Fatalf("%s: %v", e.name, err)
				}
				writes := w.takeWrites()
				if n := kind.requests(w); n != requests {
					t.Errorf("%s: %d token requests, want still %d", e.name, n, requests)
				}
				s := w.secret(kind.output)
				if got := string(s.Data[cdv1.AccessTokenKey]); got != token {
					t.Errorf("%s: access token %q, want the fresh one %q kept", e.name, got, token)
				}
				wantLabels := map[string]string{"mine": "by-hand"}
				wantAnnotations := map[string]string{"mine.example.com/note": "by-hand"}
				if e.template != nil {
					for k, v := range e.template.Labels {
						wantLabels[k] = string(v)
					}
					for k, v := range e.template.Annotations {
						wantAnnotations[k] = string(v)
					}
				}
				if diff := cmp.Diff(wantLabels, userMetadata(s.Labels)); diff != "" {
					t.Errorf("%s: labels besides the operator's (-want +got):\n%s\nwrites %v", e.name, diff, writes)
				}
				if diff := cmp.Diff(wantAnnotations, userMetadata(s.Annotations)); diff != "" {
					t.Errorf("%s: annotations besides the operator's (-want +got):\n%s\nwrites %v", e.name, diff, writes)
				}
				if s.Labels[cdv1.ManagedByLabel] != cdv1.ManagedByValue || s.Annotations[cdv1.ExpiresAtAnnotation] == "" {
					t.Errorf("%s: the operator's own metadata is gone: labels %v annotations %v", e.name, s.Labels, s.Annotations)
				}
				// Once there, the template costs no write of its own.
				w.clock.Step(time.Minute)
				if err := kind.pass(w); err != nil {
					t.Fatal(err)
				}
				if writes := w.takeWrites(); len(writes) != 0 {
					t.Errorf("%s: the pass after wrote %v, want nothing", e.name, writes)
				}
			}
		})
	}
}

// userMetadata is labels or annotations without the operator's own.
func userMetadata(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if k != cdv1.ManagedByLabel && !hasOperatorPrefix(k) {
			out[k] = v
		}
	}
	return out
}

func hasOperatorPrefix(k string) bool {
	const prefix = "cd.credops.io/"
	return len(k) >= len(prefix) && k[:len(prefix)] == prefix
}
