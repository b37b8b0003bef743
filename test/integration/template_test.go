package integration

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// TestAnEditedSecretTemplateReachesTheOutputSecretAtOnceAndKeepsTheToken proves against a
// real API server what the fake client's server-side apply cannot: the template's keys,
// first written by the token's apply, are changed and removed between tokens by the
// operator's template field manager; the data the apply owns (the token) stays; a label
// a user added by hand stays; a key the template write added and a later token apply
// took co-ownership of is still removed when the template drops it. Token requests:
// only the one repair the test asks for.
func TestAnEditedSecretTemplateReachesTheOutputSecretAtOnceAndKeepsTheToken(t *testing.T) {
	type labels = map[string]cdv1.LabelValue
	type annotations = map[string]cdv1.AnnotationValue
	first := &cdv1.SecretTemplate{
		Labels:      labels{"team": "pricing", "policy.example.com/tier": "gold"},
		Annotations: annotations{"reloader.stakater.com/match": "true"},
	}
	for _, kind := range []struct {
		name  string
		setup func(t *testing.T) (ns, cr, output string, requests func() int, obj client.Object, set func(*cdv1.SecretTemplate))
	}{
		{"CDCredential", func(t *testing.T) (string, string, string, func() int, client.Object, func(*cdv1.SecretTemplate)) {
			ns, idp := setupClientCredentials(t, 30*time.Minute, func(c *cdv1.CDCredential) { c.Spec.SecretTemplate = first })
			eventually(t, 20*time.Second, "Ready", credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
			c := &cdv1.CDCredential{}
			return ns, "pricing", "pricing-token", func() int { return idp.Stats().TokenRequests["client_credentials"] },
				c, func(t *cdv1.SecretTemplate) { c.Spec.SecretTemplate = t }
		}},
		{"CDUserGrant", func(t *testing.T) (string, string, string, func() int, client.Object, func(*cdv1.SecretTemplate)) {
			f := newGrantFixture(t, 30*time.Minute)
			startManager(t, f.opts)
			rt := f.idp.SeedGrant(loginClientID, "acme@carrier.example", []string{"marketplace", "offline_access"})
			create(t, refreshSecret(f.ns, "acme-refresh", rt))
			g := userGrant(f.ns, "acme", "login", "acme-refresh")
			g.Spec.SecretTemplate = first
			create(t, g)
			eventually(t, 20*time.Second, "Ready", f.rotations("acme", 1))
			g = &cdv1.CDUserGrant{}
			return f.ns, "acme", "acme-token", f.refreshCount, g, func(t *cdv1.SecretTemplate) { g.Spec.SecretTemplate = t }
		}},
	} {
		t.Run(kind.name, func(t *testing.T) {
			ns, cr, output, requests, obj, set := kind.setup(t)
			ctx := context.Background()
			key := types.NamespacedName{Namespace: ns, Name: output}
			// kubectl label: another field manager's label, which no template edit touches.
			byHand := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"mine":"by-hand"}}}`))
			if err := k8s.Patch(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: output}}, byHand, client.FieldOwner("kubectl-label")); err != nil {
				t.Fatal(err)
			}
			edit := func(tmpl *cdv1.SecretTemplate) {
				t.Helper()
				err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
					if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: cr}, obj); err != nil {
						return err
					}
					set(tmpl)
					return k8s.Update(ctx, obj)
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			carries := func(what string, tmpl *cdv1.SecretTemplate, data map[string]string) {
				t.Helper()
				wantLabels, wantAnnotations := map[string]string{"mine": "by-hand"}, map[string]string{}
				if tmpl != nil {
					for k, v := range tmpl.Labels {
						wantLabels[k] = string(v)
					}
					for k, v := range tmpl.Annotations {
						wantAnnotations[k] = string(v)
					}
				}
				eventually(t, 20*time.Second, what, func() error {
					s := &corev1.Secret{}
					if err := k8s.Get(ctx, key, s); err != nil {
						return err
					}
					if diff := cmp.Diff(wantLabels, others(s.Labels)); diff != "" {
						return fmt.Errorf("labels besides the operator's (-want +got):\n%s", diff)
					}
					if diff := cmp.Diff(wantAnnotations, others(s.Annotations)); diff != "" {
						return fmt.Errorf("annotations besides the operator's (-want +got):\n%s", diff)
					}
					if s.Labels[cdv1.ManagedByLabel] != cdv1.ManagedByValue || s.Annotations[cdv1.ExpiresAtAnnotation] == "" {
						return fmt.Errorf("the operator's own metadata is gone: %v %v", s.Labels, s.Annotations)
					}
					if data != nil {
						if diff := cmp.Diff(data, stringData(s)); diff != "" {
							return fmt.Errorf("data (-want +got):\n%s", diff)
						}
					}
					return nil
				})
			}
			s, err := getSecret(ns, output)
			if err != nil {
				t.Fatal(err)
			}
			data, sent := stringData(s), requests()

			// Change a value, drop a label and the annotation the token's apply wrote, add
			// one: the template write owns the new one alone.
			second := &cdv1.SecretTemplate{Labels: labels{"team": "billing"}, Annotations: annotations{"example.com/contact": "ops"}}
			edit(second)
			carries("the second template, the token kept", second, data)

			// A token write (a repair of a hand-broken Secret) now shares the added
			// annotation with the template write; dropping it must still remove it.
			broken := client.RawPatch(types.MergePatchType, []byte(`{"data":{"`+cdv1.TokenTypeKey+`":null}}`))
			if err := k8s.Patch(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: output}}, broken); err != nil {
				t.Fatal(err)
			}
			eventually(t, 20*time.Second, "the Secret repaired with a new token", func() error {
				s, err := getSecret(ns, output)
				if err != nil {
					return err
				}
				if len(s.Data[cdv1.TokenTypeKey]) == 0 || string(s.Data[cdv1.AccessTokenKey]) == data[cdv1.AccessTokenKey] {
					return fmt.Errorf("not repaired yet")
				}
				return nil
			})
			sent++
			carries("the second template kept by the token write", second, nil)
			s, err = getSecret(ns, output)
			if err != nil {
				t.Fatal(err)
			}
			data = stringData(s)

			third := &cdv1.SecretTemplate{Labels: labels{"team": "billing"}}
			edit(third)
			carries("the annotation both wrote removed", third, data)
			edit(nil)
			carries("no template", nil, data)
			if n := requests(); n != sent {
				t.Errorf("%d token requests, want %d: an edit of the template asks for no token", n, sent)
			}
		})
	}
}

// others is labels or annotations without the operator's own.
func others(m map[string]string) map[string]string {
	out := maps.Clone(m)
	maps.DeleteFunc(out, func(k string, _ string) bool {
		return k == cdv1.ManagedByLabel || len(k) > len("cd.credops.io/") && k[:len("cd.credops.io/")] == "cd.credops.io/"
	})
	if out == nil {
		out = map[string]string{}
	}
	return out
}
