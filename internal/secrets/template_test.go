package secrets

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// TestATemplatePatchSetsTheTemplateAndRemovesOnlyWhatAnEarlierTemplateSet: the patch
// that brings an edited secretTemplate onto an output Secret between tokens touches the
// template's keys and the record only; a key someone else added, or the operator's own,
// is never removed, even when the record (on the Secret, editable) names it.
func TestATemplatePatchSetsTheTemplateAndRemovesOnlyWhatAnEarlierTemplateSet(t *testing.T) {
	team := &cdv1.SecretTemplate{
		Labels:      map[string]cdv1.LabelValue{"team": "pricing", "tier": "gold"},
		Annotations: map[string]cdv1.AnnotationValue{"reloader.stakater.com/match": "true"},
	}
	billing := &cdv1.SecretTemplate{Labels: map[string]cdv1.LabelValue{"team": "billing"}}
	withTemplate := func(tmpl *cdv1.SecretTemplate) *corev1.Secret {
		s := written("tok")
		for k, v := range tmpl.Labels {
			s.Labels[k] = string(v)
		}
		for k, v := range tmpl.Annotations {
			s.Annotations[k] = string(v)
		}
		s.Annotations[templateAnnotation] = templateRecordOf(tmpl)
		s.Labels["mine"] = "by-hand"
		return s
	}
	for _, tc := range []struct {
		name   string
		secret *corev1.Secret
		tmpl   *cdv1.SecretTemplate
		want   map[string]any // the patch's metadata; nil: no patch
	}{
		{"no template, none recorded", written("tok"), nil, nil},
		{"the recorded template", withTemplate(team), team, nil},
		{"an output written before the record, carrying the template", func() *corev1.Secret {
			s := withTemplate(team)
			delete(s.Annotations, templateAnnotation)
			return s
		}(), team, nil},
		{"an output written before the record, without the template: set, nothing removed", written("tok"), billing, map[string]any{
			"labels":      map[string]any{"team": "billing"},
			"annotations": map[string]any{templateAnnotation: templateRecordOf(billing)},
		}},
		{"an edit: values set, what the old template had removed, the user's label kept", withTemplate(team), billing, map[string]any{
			"labels":      map[string]any{"team": "billing", "tier": nil},
			"annotations": map[string]any{"reloader.stakater.com/match": nil, templateAnnotation: templateRecordOf(billing)},
		}},
		{"the template removed: its keys and the record go", withTemplate(team), nil, map[string]any{
			"labels":      map[string]any{"team": nil, "tier": nil},
			"annotations": map[string]any{"reloader.stakater.com/match": nil, templateAnnotation: nil},
		}},
		{"a recorded key already gone is not sent", func() *corev1.Secret {
			s := withTemplate(team)
			delete(s.Labels, "tier")
			return s
		}(), nil, map[string]any{
			"labels":      map[string]any{"team": nil},
			"annotations": map[string]any{"reloader.stakater.com/match": nil, templateAnnotation: nil},
		}},
		{"a record naming the operator's keys removes none of them", func() *corev1.Secret {
			s := written("tok")
			s.Annotations[templateAnnotation] = `{"hash":"x","labels":["` + cdv1.ManagedByLabel + `","` + cdv1.SecretTypeLabel + `"],"annotations":["` + cdv1.ExpiresAtAnnotation + `"]}`
			return s
		}(), nil, map[string]any{
			"labels":      map[string]any{},
			"annotations": map[string]any{templateAnnotation: nil},
		}},
		{"an unreadable record removes nothing", func() *corev1.Secret {
			s := withTemplate(team)
			s.Annotations[templateAnnotation] = "edited"
			return s
		}(), billing, map[string]any{
			"labels":      map[string]any{"team": "billing"},
			"annotations": map[string]any{templateAnnotation: templateRecordOf(billing)},
		}},
		{"the Secret judged is the one patched", func() *corev1.Secret {
			s := written("tok")
			s.UID = "u-secret"
			return s
		}(), billing, map[string]any{
			"uid":         "u-secret",
			"labels":      map[string]any{"team": "billing"},
			"annotations": map[string]any{templateAnnotation: templateRecordOf(billing)},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := TemplatePatch(tc.secret, tc.tmpl)
			if tc.want == nil {
				if raw != nil {
					t.Fatalf("patch %s, want none", raw)
				}
				return
			}
			var got struct {
				Metadata map[string]any `json:"metadata"`
			}
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got.Metadata); diff != "" {
				t.Errorf("patch metadata (-want +got):\n%s", diff)
			}
		})
	}
}

// TestATokenWriteRecordsItsTemplate: the token write carries the template as before, and
// the record that makes the next pass find nothing to patch.
func TestATokenWriteRecordsItsTemplate(t *testing.T) {
	tmpl := &cdv1.SecretTemplate{Labels: map[string]cdv1.LabelValue{"team": "pricing"}}
	ac := Output{
		Owner: &cdv1.CDCredential{ObjectMeta: metav1.ObjectMeta{Name: "pricing", Namespace: "ns"}}, OwnerGVK: cdv1.GroupVersion.WithKind("CDCredential"),
		Name: "pricing-token", Template: tmpl, AccessToken: "tok", TokenType: "Bearer",
	}.Apply()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Labels: ac.Labels, Annotations: ac.Annotations}}
	if s.Labels["team"] != "pricing" {
		t.Errorf("labels %v, want the template's", s.Labels)
	}
	if p := TemplatePatch(s, tmpl); p != nil {
		t.Errorf("patch %s after a token write, want none", p)
	}
}
