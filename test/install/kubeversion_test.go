package install

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// The chart promises every Kubernetes version from its kubeVersion on, but the API
// servers these tests run are of one version. A CRD validation rule reading oldSelf as
// an optional (optionalOldSelf, oldSelf.hasValue()) does not compile on 1.28, which has
// no such field, nor on 1.29, which drops it (CRDValidationRatcheting is alpha and off
// there): the CRD's create is refused, on OpenShift 4.15 and 4.16 among others. So no rule
// may use what the oldest promised version lacks.
func TestTheCRDsUseNothingTheOldestPromisedKubernetesLacks(t *testing.T) {
	chart := filepath.Join(repoRoot, chartDir)
	raw, err := os.ReadFile(filepath.Join(chart, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		KubeVersion string `json:"kubeVersion"`
	}
	if err := yaml.Unmarshal(raw, &meta); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`^>=\s*1\.(\d+)\.`).FindStringSubmatch(meta.KubeVersion)
	if m == nil {
		t.Fatalf("Chart.yaml kubeVersion %q: want a lower bound >=1.N.x", meta.KubeVersion)
	}
	oldest, _ := strconv.Atoi(m[1])

	files, err := filepath.Glob(filepath.Join(chart, "crds", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in the chart: %v", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.Unmarshal(raw, crd); err != nil {
			t.Fatal(err)
		}
		for _, v := range crd.Spec.Versions {
			walkRules(v.Schema.OpenAPIV3Schema, func(r apiextensionsv1.ValidationRule) {
				if (r.OptionalOldSelf != nil || strings.Contains(r.Rule, "oldSelf.hasValue()")) && oldest < 30 {
					t.Errorf("%s: rule %q reads oldSelf as optional, which Kubernetes 1.%d (the chart's kubeVersion %q) refuses; 1.30 is the first to take it", filepath.Base(f), r.Rule, oldest, meta.KubeVersion)
				}
			})
		}
	}
}

// walkRules calls f on every x-kubernetes-validations rule of s and its sub-schemas.
func walkRules(s *apiextensionsv1.JSONSchemaProps, f func(apiextensionsv1.ValidationRule)) {
	if s == nil {
		return
	}
	for _, r := range s.XValidations {
		f(r)
	}
	for _, p := range s.Properties {
		walkRules(&p, f)
	}
	if s.Items != nil {
		walkRules(s.Items.Schema, f)
	}
	if s.AdditionalProperties != nil {
		walkRules(s.AdditionalProperties.Schema, f)
	}
}
