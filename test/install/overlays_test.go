package install

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func kustomizeBuild(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	return objects(t, run(t, kustomize(t), "build", dir))
}

// TestInstallYAMLIsConfigDefault: dist/install.yaml is what `make build-installer`
// builds from config/default, so a marker or CRD change cannot ship without it.
func TestInstallYAMLIsConfigDefault(t *testing.T) {
	if diff := cmp.Diff(kustomizeBuild(t, "config/default"), installYAML(t)); diff != "" {
		t.Errorf("dist/install.yaml is stale, run make build-installer (-config/default +dist/install.yaml):\n%s", diff)
	}
}

func TestInstallYAMLHoldsAReleaseImage(t *testing.T) {
	image := deployment(t, installYAML(t)).Spec.Template.Spec.Containers[0].Image
	if !strings.HasPrefix(image, "ghcr.io/credops/cd-credentials-operator:v") {
		t.Errorf("dist/install.yaml deploys %q, want a released ghcr.io/credops/cd-credentials-operator:vX.Y.Z", image)
	}
}

func names(objs []*unstructured.Unstructured, kind string) []string {
	var out []string
	for _, o := range only(objs, kind) {
		n := o.GetName()
		if o.GetNamespace() != "" {
			n = o.GetNamespace() + "/" + n
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func TestKustomizeOverlaysBuild(t *testing.T) {
	t.Run("config/prometheus monitors the HTTPS endpoint and alerts", func(t *testing.T) {
		objs := kustomizeBuild(t, "config/prometheus")
		if diff := cmp.Diff([]string{"cd-credentials-operator/cd-credentials-operator"}, names(objs, "ServiceMonitor")); diff != "" {
			t.Errorf("ServiceMonitors (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"cd-credentials-operator/cd-credentials-operator"}, names(objs, "PrometheusRule")); diff != "" {
			t.Errorf("PrometheusRules (-want +got):\n%s", diff)
		}
		sm := only(objs, "ServiceMonitor")[0]
		endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		if len(endpoints) != 1 || endpoints[0].(map[string]any)["scheme"] != "https" || endpoints[0].(map[string]any)["port"] != "https-metrics" {
			t.Errorf("endpoints %v, want one https scrape of the https-metrics port", endpoints)
		}
	})
	t.Run("config/rbac-namespaced binds the manager only in its namespaces", func(t *testing.T) {
		objs := kustomizeBuild(t, "config/rbac-namespaced")
		if got := names(objs, "ClusterRoleBinding"); slices.Contains(got, "cd-credentials-manager-rolebinding") {
			t.Errorf("the manager is still bound cluster-wide: %v", got)
		}
		want := []string{"cd-credentials-operator/cd-credentials-leader-election-rolebinding", "cd-credentials-operator/cd-credentials-operator-key", "team-a/cd-credentials-manager-rolebinding", "team-b/cd-credentials-manager-rolebinding"}
		if diff := cmp.Diff(want, names(objs, "RoleBinding")); diff != "" {
			t.Errorf("RoleBindings (-want +got):\n%s", diff)
		}
		if args := deployment(t, objs).Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--watch-namespaces=team-a,team-b") {
			t.Errorf("the manager watches every namespace: args %q", args)
		}
	})
	t.Run("config/callback serves the callback behind an Ingress", func(t *testing.T) {
		objs := kustomizeBuild(t, "config/callback")
		args := deployment(t, objs).Spec.Template.Spec.Containers[0].Args
		for _, want := range []string{"--callback-bind-address=:9443", "--callback-url=https://cd-callback.example.com/callback"} {
			if !slices.Contains(args, want) {
				t.Errorf("args %q lack %q", args, want)
			}
		}
		if diff := cmp.Diff([]string{"cd-credentials-operator/cd-credentials-callback"}, names(objs, "Ingress")); diff != "" {
			t.Errorf("Ingresses (-want +got):\n%s", diff)
		}
	})
}
