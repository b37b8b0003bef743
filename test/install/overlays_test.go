package install

import (
	"net/url"
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

// TestTheOpenShiftCallbackOverlayIsTheChartsRoute: OpenShift's router makes no Route of
// config/callback's Ingress (its path is Exact), so an install from install.yaml had no
// way to expose the callback there, while the chart has callback.route.
// config/callback-openshift is config/callback with a Route instead of the Ingress. Its
// Route serves the host and path of the manager's --callback-url, sends them to the
// callback Service, and is the Route the chart renders for that URL, down to refusing
// plain HTTP (None): a redirect to https:// would have let the authorization code in the
// query travel in clear first.
func TestTheOpenShiftCallbackOverlayIsTheChartsRoute(t *testing.T) {
	overlay := kustomizeBuild(t, "config/callback-openshift")
	if got := names(overlay, "Ingress"); len(got) != 0 {
		t.Errorf("config/callback-openshift keeps the Ingresses %v, which OpenShift's router does not serve", got)
	}
	callbackURL := ""
	for _, a := range managerArgs(t, overlay) {
		if v, ok := strings.CutPrefix(a, "--callback-url="); ok {
			callbackURL = v
		}
	}
	u, err := url.Parse(callbackURL)
	if err != nil || u.Host == "" {
		t.Fatalf("config/callback-openshift's manager serves the callback URL %q: %v", callbackURL, err)
	}
	chart := helmTemplateSet(t, "cd-credentials-operator", "callback.enabled=true", "callback.url="+callbackURL, "callback.route.enabled=true")

	// callbackRoute is an install's one Route, checked to send to the install's own
	// callback Service, which is then named alike in both for the comparison.
	callbackRoute := func(t *testing.T, install string, objs []*unstructured.Unstructured) map[string]any {
		t.Helper()
		routes := only(objs, "Route")
		if len(routes) != 1 {
			t.Fatalf("%s: %d Routes, want 1", install, len(routes))
		}
		if v := routes[0].GetAPIVersion(); v != "route.openshift.io/v1" {
			t.Errorf("%s: Route apiVersion %q, want route.openshift.io/v1", install, v)
		}
		var svc string
		for _, s := range only(objs, "Service") {
			if strings.HasSuffix(s.GetName(), "-callback") {
				svc = s.GetName()
			}
		}
		spec, _, _ := unstructured.NestedMap(routes[0].Object, "spec")
		if to, _, _ := unstructured.NestedString(spec, "to", "name"); svc == "" || to != svc {
			t.Errorf("%s: the Route sends to the Service %q, want its callback Service %q", install, to, svc)
		}
		_ = unstructured.SetNestedField(spec, "<the callback Service>", "to", "name")
		return spec
	}
	got := callbackRoute(t, "config/callback-openshift", overlay)
	want := callbackRoute(t, "the chart", chart)

	if host, path := got["host"], got["path"]; host != u.Hostname() || path != u.Path {
		t.Errorf("the Route serves %v%v, but the manager's --callback-url is %s", host, path, callbackURL)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config/callback-openshift's Route spec (-chart +overlay):\n%s", diff)
	}
}
