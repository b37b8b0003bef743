package install

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
)

// pod is a destination of the manager's traffic, as a NetworkPolicy sees it: the pod's
// namespace, its labels, and the port it listens on (a Service's DNAT has already
// turned the Service port into the pod's).
type pod struct {
	namespace string
	labels    map[string]string
	port      int32
	protocol  corev1.Protocol
}

// egressAllows says whether np lets its pods open a connection to dst. Only pod peers
// are evaluated (namespaceSelector and podSelector); an ipBlock never matches, since
// the chart's ipBlocks name the token hosts and the API server, not cluster DNS.
func egressAllows(t *testing.T, np networkingv1.NetworkPolicy, dst pod) bool {
	t.Helper()
	selects := func(sel *metav1.LabelSelector, set map[string]string) bool {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			t.Fatalf("selector %v: %v", sel, err)
		}
		return s.Matches(labels.Set(set))
	}
	nsLabels := map[string]string{"kubernetes.io/metadata.name": dst.namespace}
	for _, r := range np.Spec.Egress {
		portOK := len(r.Ports) == 0
		for _, p := range r.Ports {
			proto := corev1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			if proto != dst.protocol {
				continue
			}
			if p.Port == nil {
				portOK = true
				continue
			}
			end := p.Port.IntVal
			if p.EndPort != nil {
				end = *p.EndPort
			}
			if p.Port.IntVal <= dst.port && dst.port <= end {
				portOK = true
			}
		}
		if !portOK {
			continue
		}
		if len(r.To) == 0 {
			return true
		}
		for _, peer := range r.To {
			if peer.IPBlock != nil {
				continue
			}
			nsOK := dst.namespace == np.Namespace
			if peer.NamespaceSelector != nil {
				nsOK = selects(peer.NamespaceSelector, nsLabels)
			}
			podOK := peer.PodSelector == nil || selects(peer.PodSelector, dst.labels)
			if nsOK && podOK {
				return true
			}
		}
	}
	return false
}

// TestTheNetworkPolicyLetsTheManagerResolveNamesOnOpenShift: the manager resolves its
// token hosts through cluster DNS. On OpenShift that is CoreDNS in openshift-dns, pods
// labelled dns.operator.openshift.io/daemonset-dns=default, listening on 5353 behind
// the dns-default Service's 53; a NetworkPolicy judges the pod's port. With the
// NetworkPolicy on and its default DNS rule (kube-system's kube-dns on 53), every
// lookup on OpenShift was dropped and every token request failed.
func TestTheNetworkPolicyLetsTheManagerResolveNamesOnOpenShift(t *testing.T) {
	nps := only(objects(t, run(t, helm(t), "template", "cd", chartDir, "--namespace", "cd-system",
		"--set", "networkPolicy.enabled=true")), "NetworkPolicy")
	if len(nps) != 1 {
		t.Fatalf("%d NetworkPolicies, want 1", len(nps))
	}
	var np networkingv1.NetworkPolicy
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(nps[0].Object, &np); err != nil {
		t.Fatal(err)
	}
	kubeDNS := map[string]string{"k8s-app": "kube-dns"}
	openshiftDNS := map[string]string{"dns.operator.openshift.io/daemonset-dns": "default"}
	for _, tc := range []struct {
		name string
		dst  pod
		want bool
	}{
		{"kube-dns over UDP", pod{"kube-system", kubeDNS, 53, corev1.ProtocolUDP}, true},
		{"kube-dns over TCP", pod{"kube-system", kubeDNS, 53, corev1.ProtocolTCP}, true},
		{"OpenShift's DNS over UDP", pod{"openshift-dns", openshiftDNS, 5353, corev1.ProtocolUDP}, true},
		{"OpenShift's DNS over TCP", pod{"openshift-dns", openshiftDNS, 5353, corev1.ProtocolTCP}, true},
		{"another pod of openshift-dns", pod{"openshift-dns", map[string]string{"app": "other"}, 5353, corev1.ProtocolUDP}, false},
		{"a pod of another namespace on the DNS port", pod{"team-a", openshiftDNS, 5353, corev1.ProtocolUDP}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := egressAllows(t, np, tc.dst); got != tc.want {
				t.Errorf("egress to %s/%v port %d/%s allowed: %v, want %v", tc.dst.namespace, tc.dst.labels, tc.dst.port, tc.dst.protocol, got, tc.want)
			}
		})
	}
}

// TestTheCallbackIsExposedOnOpenShiftByARoute: OpenShift's router serves an Ingress
// only through the Routes its ingress-to-route controller makes of it, and that
// controller skips every path of type Exact ("Exact path type is not implemented",
// openshift-controller-manager pkg/route/ingress), which the callback Ingress's is: on
// OpenShift, callback.ingress exposed nothing and every customer login ended at the
// router's 503. callback.route makes the Route itself, on the path of callback.url,
// ending TLS at the router, or re-encrypting to a manager that answers only TLS.
func TestTheCallbackIsExposedOnOpenShiftByARoute(t *testing.T) {
	const callbackURL = "https://apps.example.com/cd-operator/callback"
	const ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	for _, tc := range []struct {
		name string
		set  []string
		want map[string]any // the Route's spec.tls
	}{
		{"a plain-HTTP callback behind the router's TLS", nil,
			map[string]any{"termination": "edge", "insecureEdgeTerminationPolicy": "None"}},
		{"a TLS callback, its certificate from the service CA", []string{"callback.tlsSecretName=cd-callback-serving"},
			map[string]any{"termination": "reencrypt", "insecureEdgeTerminationPolicy": "None"}},
		{"a TLS callback, its certificate from another CA", []string{"callback.tlsSecretName=cd-callback-serving", "callback.route.destinationCACertificate=" + ca},
			map[string]any{"termination": "reencrypt", "insecureEdgeTerminationPolicy": "None", "destinationCACertificate": ca}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"template", "cd", chartDir, "--namespace", "cd-system",
				"--set", "callback.enabled=true", "--set", "callback.url=" + callbackURL,
				"--set", "callback.route.enabled=true"}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			objs := objects(t, run(t, helm(t), args...))
			routes := only(objs, "Route")
			if len(routes) != 1 {
				t.Fatalf("%d Routes, want 1", len(routes))
			}
			r := routes[0]
			if r.GetAPIVersion() != "route.openshift.io/v1" {
				t.Errorf("Route apiVersion %q, want route.openshift.io/v1", r.GetAPIVersion())
			}
			var svc *unstructured.Unstructured
			for _, s := range only(objs, "Service") {
				if strings.HasSuffix(s.GetName(), "-callback") {
					svc = s
				}
			}
			if svc == nil {
				t.Fatal("no callback Service")
			}
			ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
			portName, _, _ := unstructured.NestedString(ports[0].(map[string]any), "name")
			spec, _, _ := unstructured.NestedMap(r.Object, "spec")
			want := map[string]any{
				"host":           "apps.example.com",
				"path":           "/cd-operator/callback",
				"to":             map[string]any{"kind": "Service", "name": svc.GetName(), "weight": float64(100)},
				"port":           map[string]any{"targetPort": portName},
				"tls":            tc.want,
				"wildcardPolicy": "None",
			}
			if diff := cmp.Diff(want, spec); diff != "" {
				t.Errorf("Route spec (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("a CA to check a manager that serves no TLS is refused", func(t *testing.T) {
		cmd := exec.Command(helm(t), "template", "cd", chartDir,
			"--set", "callback.enabled=true", "--set", "callback.url="+callbackURL,
			"--set", "callback.route.enabled=true", "--set", "callback.route.destinationCACertificate="+ca)
		cmd.Dir = repoRoot
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "callback.route.destinationCACertificate needs callback.tlsSecretName") {
			t.Errorf("helm template did not refuse a destination CA for a plain-HTTP callback for that reason (err %v):\n%s", err, out)
		}
	})
}

// TestTheRouteServesTheSchemeOfTheCallbackURL: the customer's browser comes back on
// callback.url, the redirect URI registered at the identity server. callback.url may be
// http:// (the schema and the manager take it, and Keycloak allows it), but the Route
// refused plain HTTP (insecureEdgeTerminationPolicy None), so on such an install every
// login redirect ended at the router's "Application is not available". An http://
// callback URL is now served over plain HTTP as well; an https:// one still only over
// TLS.
func TestTheRouteServesTheSchemeOfTheCallbackURL(t *testing.T) {
	for _, tc := range []struct {
		name, url string
		set       []string
		want      string // the Route's spec.tls.insecureEdgeTerminationPolicy
	}{
		{"an http callback URL", "http://cd-callback.apps.example.com/callback", nil, "Allow"},
		{"an http callback URL, the manager serving TLS", "http://cd-callback.apps.example.com/callback", []string{"callback.tlsSecretName=cd-callback-serving"}, "Allow"},
		{"an https callback URL", "https://cd-callback.apps.example.com/callback", nil, "None"},
		{"an https callback URL, the manager serving TLS", "https://cd-callback.apps.example.com/callback", []string{"callback.tlsSecretName=cd-callback-serving"}, "None"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"template", "cd", chartDir, "--namespace", "cd-system",
				"--set", "callback.enabled=true", "--set", "callback.url=" + tc.url,
				"--set", "callback.route.enabled=true"}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			routes := only(objects(t, run(t, helm(t), args...)), "Route")
			if len(routes) != 1 {
				t.Fatalf("%d Routes, want 1", len(routes))
			}
			got, _, _ := unstructured.NestedString(routes[0].Object, "spec", "tls", "insecureEdgeTerminationPolicy")
			if got != tc.want {
				t.Errorf("callback.url %s: the Route's insecureEdgeTerminationPolicy is %q, want %q", tc.url, got, tc.want)
			}
		})
	}
}

// TestEveryImageTagTheSchemaTakesInstalls: the chart labels every object with
// app.kubernetes.io/version, the image tag, and the API server refuses a label value
// over 63 characters or one that does not begin and end with a letter or digit. An
// OCI tag may run to 128 characters and begin or end with `_`, `.` or `-`, so a mirror's
// tag the schema took could fail the install on its labels; a tag with a digest
// (`v1@sha256:…`, as mirrors pin images) was taken too and failed the same way. The
// schema now takes OCI tags only (the digest has image.digest), and the label keeps
// what of the tag a label may hold.
func TestEveryImageTagTheSchemaTakesInstalls(t *testing.T) {
	digest := "sha256:" + strings.Repeat("0", 64)
	long := strings.Repeat("a", 62) + "-b" + strings.Repeat("c", 64) // 128 characters
	for _, tc := range []struct {
		name, tag string
		refused   string // what the refusal names; empty: rendered, and installable
	}{
		{"the chart's appVersion", "", ""},
		{"a release tag", "v0.2.0", ""},
		{"the longest OCI tag", long, ""},
		{"a tag that begins with an underscore", "_mirror.v0.2.0", ""},
		{"a tag that ends with a dot", "v0.2.0.", ""},
		{"a tag with a digest", "v0.2.0@" + digest, "/image/tag"},
		{"a tag with a colon", "v0.2.0:latest", "/image/tag"},
		{"a tag over 128 characters", long + "d", "/image/tag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(helm(t), "template", "cd", chartDir, "--namespace", "cd-system", "--set-string", "image.tag="+tc.tag)
			cmd.Dir = repoRoot
			out, err := cmd.Output()
			if tc.refused != "" {
				var stderr []byte
				if ee, ok := err.(*exec.ExitError); ok {
					stderr = ee.Stderr
				}
				if err == nil || !strings.Contains(string(stderr), tc.refused) {
					t.Errorf("helm template did not refuse image.tag %q naming %s (err %v):\n%s", tc.tag, tc.refused, err, stderr)
				}
				return
			}
			if err != nil {
				t.Fatalf("helm template refused image.tag %q: %v", tc.tag, err)
			}
			objs := objects(t, out)
			d := deployment(t, objs)
			if img := d.Spec.Template.Spec.Containers[0].Image; tc.tag != "" && img != "ghcr.io/credops/cd-credentials-operator:"+tc.tag {
				t.Errorf("image %q, want the tag %q", img, tc.tag)
			}
			sets := []map[string]string{d.Spec.Template.Labels}
			for _, o := range objs {
				sets = append(sets, o.GetLabels())
			}
			refused := map[string]int{} // "key=value: why" -> objects carrying it
			for _, set := range sets {
				for k, v := range set {
					if errs := validation.IsValidLabelValue(v); len(errs) != 0 {
						refused[fmt.Sprintf("%s=%q: %s", k, v, errs[0])]++
					}
				}
			}
			for l, n := range refused {
				t.Errorf("label %s (on %d objects), which the API server refuses", l, n)
			}
		})
	}
}

// TestTheVersionLabelTellsTagsApart: app.kubernetes.io/version is the image tag, made
// a valid label value when the tag is none (over 63 characters, or beginning or ending
// with "_", "." or "-"). Cutting such a tag down to what a label may hold labelled
// "v0.2.0." and "_v0.2.0" as the release v0.2.0, and two long mirror tags differing only
// past the 63rd character alike, so the label no longer said which image a pod runs.
// Such a tag is now labelled with what of it fits and a hash of the whole.
func TestTheVersionLabelTellsTagsApart(t *testing.T) {
	label := func(t *testing.T, tag string) string {
		t.Helper()
		d := deployment(t, objects(t, run(t, helm(t), "template", "cd", chartDir, "--namespace", "cd-system", "--set-string", "image.tag="+tag)))
		v := d.Labels["app.kubernetes.io/version"]
		if errs := validation.IsValidLabelValue(v); len(errs) != 0 {
			t.Errorf("image.tag %q: label app.kubernetes.io/version=%q, which the API server refuses: %s", tag, v, errs[0])
		}
		return v
	}
	if got := label(t, "v0.2.0"); got != "v0.2.0" {
		t.Errorf("image.tag v0.2.0: label app.kubernetes.io/version=%q, want the tag", got)
	}
	long := strings.Repeat("v0.2.0-mirror.", 7) // 98 characters
	for _, pair := range [][2]string{
		{"v0.2.0.", "v0.2.0"},
		{"_v0.2.0", "v0.2.0"},
		{"v0.2.0-", "v0.2.0"},
		{long + "build.1", long + "build.2"},
	} {
		if a, b := label(t, pair[0]), label(t, pair[1]); a == b {
			t.Errorf("image.tag %q and %q are both labelled app.kubernetes.io/version=%q", pair[0], pair[1], a)
		}
	}
}

// TestTheServiceMonitorNeedsNoFileOfPrometheus: a Prometheus that sets
// arbitraryFSAccessThroughSMs.deny, as OpenShift's user-workload monitoring does,
// refuses a whole ServiceMonitor whose endpoint reads a file of the Prometheus
// container: bearerTokenFile, or tlsConfig's caFile, certFile or keyFile (the
// Prometheus Operator's testForArbitraryFSAccess). The chart's ServiceMonitor sent
// Prometheus's own token from bearerTokenFile, so on OpenShift nothing scraped the
// operator and none of its alerts could fire. metrics.serviceMonitor.tokenSecret
// sends the token of a Secret instead.
func TestTheServiceMonitorNeedsNoFileOfPrometheus(t *testing.T) {
	endpoint := func(t *testing.T, set ...string) map[string]any {
		t.Helper()
		args := []string{"template", "cd", chartDir, "--namespace", "cd-system", "--set", "metrics.serviceMonitor.enabled=true"}
		for _, s := range set {
			args = append(args, "--set", s)
		}
		sms := only(objects(t, run(t, helm(t), args...)), "ServiceMonitor")
		if len(sms) != 1 {
			t.Fatalf("%d ServiceMonitors, want 1", len(sms))
		}
		eps, _, _ := unstructured.NestedSlice(sms[0].Object, "spec", "endpoints")
		if len(eps) != 1 {
			t.Fatalf("ServiceMonitor endpoints %v, want one", eps)
		}
		return eps[0].(map[string]any)
	}

	ep := endpoint(t, "metrics.serviceMonitor.tokenSecret.name=cd-metrics-scraper-token")
	for _, field := range [][]string{{"bearerTokenFile"}, {"tlsConfig", "caFile"}, {"tlsConfig", "certFile"}, {"tlsConfig", "keyFile"}} {
		if v, ok, _ := unstructured.NestedFieldNoCopy(ep, field...); ok {
			t.Errorf("the endpoint sets %s: %v, which such a Prometheus refuses", strings.Join(field, "."), v)
		}
	}
	want := map[string]any{"type": "Bearer", "credentials": map[string]any{"name": "cd-metrics-scraper-token", "key": "token"}}
	if diff := cmp.Diff(want, ep["authorization"]); diff != "" {
		t.Errorf("the endpoint's authorization (-want +got):\n%s", diff)
	}

	// Elsewhere Prometheus still presents its own token, as before.
	if ep := endpoint(t); ep["bearerTokenFile"] != "/var/run/secrets/kubernetes.io/serviceaccount/token" || ep["authorization"] != nil {
		t.Errorf("without tokenSecret the endpoint sends bearerTokenFile %v, authorization %v; want Prometheus's own token", ep["bearerTokenFile"], ep["authorization"])
	}
}

// TestTheImageRepositoryNamesNoTagOrDigest: the chart appends the tag (or the digest)
// to image.repository, so a repository that already carries one, as a mirror's
// reference copied whole often does, renders "repo:v1:v0.1.0" or "repo@sha256:…:v0.1.0":
// the kubelet refuses it (InvalidImageName) after the install succeeded, and the
// Deployment never starts. The schema refuses it up front; a registry's port stays
// allowed.
func TestTheImageRepositoryNamesNoTagOrDigest(t *testing.T) {
	digest := "sha256:" + strings.Repeat("0", 64)
	for _, tc := range []struct {
		name, repository string
		refused          bool
	}{
		{"a mirror's repository", "mirror.example.com/credops/cd-credentials-operator", false},
		{"a mirror on a port", "mirror.example.com:5000/credops/cd-credentials-operator", false},
		{"a repository with a tag", "mirror.example.com/credops/cd-credentials-operator:v0.1.0", true},
		{"a repository on a port with a tag", "mirror.example.com:5000/cd-credentials-operator:v0.1.0", true},
		{"a repository with a digest", "mirror.example.com/credops/cd-credentials-operator@" + digest, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(helm(t), "template", "cd", chartDir, "--set-string", "image.repository="+tc.repository)
			cmd.Dir = repoRoot
			out, err := cmd.CombinedOutput()
			switch {
			case tc.refused && err == nil:
				t.Errorf("helm template took image.repository %q", tc.repository)
			case tc.refused && !strings.Contains(string(out), "/image/repository"):
				t.Errorf("helm template refused image.repository %q without naming it:\n%s", tc.repository, out)
			case !tc.refused && err != nil:
				t.Errorf("helm template refused image.repository %q: %v\n%s", tc.repository, err, out)
			}
		})
	}
}

// TestTheChartRefusesAnIngressOpenShiftsRouterWouldNotServe: an Ingress of the class
// openshift-default is served only through the Routes OpenShift makes of it, and it
// makes none of the callback Ingress's Exact path: the install succeeded and every
// login redirect ended at the router. The chart says so and points to callback.route.
func TestTheChartRefusesAnIngressOpenShiftsRouterWouldNotServe(t *testing.T) {
	cmd := exec.Command(helm(t), "template", "cd", chartDir,
		"--set", "callback.enabled=true", "--set", "callback.url=https://cd-callback.example.com/callback",
		"--set", "callback.ingress.enabled=true", "--set", "callback.ingress.className=openshift-default")
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatal("helm template took a callback Ingress of the class openshift-default")
	}
	if !strings.Contains(string(out), "use callback.route") {
		t.Errorf("helm template refused the openshift-default Ingress without pointing to callback.route:\n%s", out)
	}
}
