package install

import (
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/memlimit"
	"github.com/credops/cd-credentials-operator/test/support"
)

// Versions of the modules the third-party CRDs the chart can render objects of are
// taken from (ServiceMonitor, PrometheusRule, HTTPRoute).
const (
	prometheusOperatorModule  = "github.com/prometheus-operator/prometheus-operator"
	prometheusOperatorVersion = "v0.90.1"
	gatewayAPIModule          = "sigs.k8s.io/gateway-api"
	gatewayAPIVersion         = "v1.6.3"
)

// restricted is the Pod Security Standard the operator's namespaces enforce.
var restricted = map[string]string{"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}

// installation is one way a platform team installs the operator, applied into its own
// set of namespaces: the release namespace the manager runs in, and a tenant namespace
// where the test's CRs live.
type installation struct {
	name, namespace, tenant string
	objs                    []*unstructured.Unstructured
	// readerRole is the metrics-reader ClusterRole the test binds its scraper to; empty
	// when the values bind one themselves (readerNS/readerName).
	readerRole           string
	readerNS, readerName string
}

func thirdPartyCRDs(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	prom := filepath.Join(moduleDir(t, prometheusOperatorModule, prometheusOperatorVersion), "example", "prometheus-operator-crd")
	gw := filepath.Join(moduleDir(t, gatewayAPIModule, gatewayAPIVersion), "config", "crd", "standard")
	var out []*unstructured.Unstructured
	for _, f := range []string{
		filepath.Join(prom, "monitoring.coreos.com_servicemonitors.yaml"),
		filepath.Join(prom, "monitoring.coreos.com_prometheusrules.yaml"),
		filepath.Join(gw, "gateway.networking.k8s.io_httproutes.yaml"),
	} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, objects(t, data)...)
	}
	return out
}

func namespace(name string, labels map[string]string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("Namespace")
	u.SetName(name)
	u.SetLabels(labels)
	return u
}

// TestHardenedInstall installs the operator three ways (the chart with its default
// values, the chart with every feature on, and dist/install.yaml) on an API server with
// the admission plugins and RBAC of a hardened cluster, runs the real manager binary as
// each installation's ServiceAccount, drives every flow, and fails on any request the
// API server refused.
func TestHardenedInstall(t *testing.T) {
	cl := startHardenedCluster(t)
	cl.apply(t, "install-test", thirdPartyCRDs(t))

	installs := []*installation{
		{name: "helm chart with default values", namespace: "cd-helm", tenant: "team-helm",
			objs: helmTemplate(t, "cdh", "cd-helm"), readerRole: "cdh-cd-credentials-operator-metrics-reader"},
		{name: "helm chart with every feature", namespace: "cd-full", tenant: "team-full",
			objs: helmTemplate(t, "cdf", "cd-full", allFeaturesValues), readerNS: "monitoring", readerName: "prometheus-k8s"},
		{name: "dist/install.yaml", namespace: "cd-credentials-operator", tenant: "team-dist",
			objs: installYAML(t), readerRole: "cd-credentials-metrics-reader"},
	}
	namespaces := []*unstructured.Unstructured{namespace("monitoring", nil)}
	for _, in := range installs {
		namespaces = append(namespaces, namespace(in.tenant, nil))
		if len(only(in.objs, "Namespace")) == 0 { // helm does not create its namespace
			namespaces = append(namespaces, namespace(in.namespace, restricted))
		}
	}
	cl.apply(t, "install-test", namespaces)
	for _, in := range installs {
		fieldManager := "helm"
		if in.name == "dist/install.yaml" {
			fieldManager = "kubectl"
		}
		cl.apply(t, fieldManager, in.objs)
		ns := &corev1.Namespace{}
		if err := cl.admin.Get(context.Background(), client.ObjectKey{Name: in.namespace}, ns); err != nil {
			t.Fatal(err)
		}
		if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			t.Errorf("%s: namespace %s does not enforce the restricted Pod Security Standard", in.name, in.namespace)
		}
		checkPodSecurity(t, cl, deployment(t, in.objs))
	}
	checkPodSecurityEnforces(t, cl, deployment(t, installs[0].objs))

	bin := buildManager(t)
	endpoints := make([]localEndpoints, len(installs))
	callbacks := make([]string, len(installs))
	for i, in := range installs {
		endpoints[i] = newEndpoints(t)
		callbacks[i] = callbackScheme(deployment(t, in.objs)) + "://" + endpoints[i].callback + "/callback"
	}
	idp := startSandbox(t, callbacks)

	// One installation at a time: two cluster-wide managers with different leases would
	// both reconcile every namespace.
	for i, in := range installs {
		t.Run(in.name, func(t *testing.T) { runInstallation(t, cl, bin, in, endpoints[i], idp) })
	}
}

// runInstallation runs one installation's manager through every flow and counts what
// the API server answered it.
func runInstallation(t *testing.T, cl *cluster, bin string, in *installation, ep localEndpoints, idp identityServer) {
	d := deployment(t, in.objs)
	user := serviceAccountUser(d.Namespace, d.Spec.Template.Spec.ServiceAccountName)
	reader, stranger := cl.scrapers(t, in)
	p := cl.startManager(t, bin, d, ep, idp.Host)
	defer func() {
		// Also when a flow timed out: the refused requests say why.
		p.stop(t)
		tally := cl.tally(t, user)
		t.Logf("%s: the API server answered %d requests from %s, %d of them 403 Forbidden", in.name, tally.Requests, user, tally.Forbidden)
		if tally.Requests == 0 {
			t.Errorf("the audit log shows no request from %s: the manager did not run as its ServiceAccount", user)
		}
		for _, r := range slices.Sorted(maps.Keys(tally.Refusals)) {
			t.Errorf("forbidden %d times: %s", tally.Refusals[r], r)
		}
		if t.Failed() {
			t.Logf("manager output:\n%s", p.output())
		}
		cleanUp(t, cl.admin, in.tenant)
	}()

	checkMemoryLimit(t, p, d)
	flows(t, cl.admin, in.tenant, idp)
	checkLeaderElection(t, cl.admin, d.Namespace)
	checkKeySecretKept(t, cl.admin, d)
	checkClientCredentials(t, cl.admin, in.tenant, idp)
	checkRotation(t, cl.admin, in.tenant)
	checkFlowMisuse(t, cl.admin, in.tenant)
	checkOnboarding(t, cl.admin, in.tenant, idp, p.callbackURL)
	checkDeletionPolicy(t, cl.admin, in.tenant, idp)
	checkSecureMetrics(t, cl, p, reader, stranger)
}

// checkMemoryLimit: the manager gave the Go runtime 90% of the container's memory limit,
// which the Deployment passes in through the Downward API.
func checkMemoryLimit(t *testing.T, p *managerProcess, d *appsv1.Deployment) {
	t.Helper()
	limit := d.Spec.Template.Spec.Containers[0].Resources.Limits.Memory().Value()
	want := strconv.FormatInt(int64(math.Floor(float64(limit)*memlimit.DefaultRatio)), 10)
	support.Eventually(t, flowTimeout, "the Go memory limit logged", func() error {
		if out := p.output(); !strings.Contains(out, "Go memory limit") || !strings.Contains(out, want) {
			return fmt.Errorf("no %q with %s bytes in the manager's output", "Go memory limit", want)
		}
		return nil
	})
}

// scrapers returns a ServiceAccount allowed to read metrics and one that is not.
func (c *cluster) scrapers(t *testing.T, in *installation) (reader, stranger *corev1.ServiceAccount) {
	t.Helper()
	if in.readerRole != "" {
		reader = c.serviceAccount(t, in.namespace, "scraper", in.readerRole)
	} else {
		reader = c.serviceAccount(t, in.readerNS, in.readerName, "")
	}
	return reader, c.serviceAccount(t, in.namespace, "stranger", "")
}

// cleanUp deletes the test's CRs, so the next installation's cluster-wide manager does
// not reconcile them.
func cleanUp(t *testing.T, c client.Client, ns string) {
	t.Helper()
	ctx := context.Background()
	for _, o := range []client.Object{&cdv1.CDUserGrant{}, &cdv1.CDCredential{}} {
		if err := c.DeleteAllOf(ctx, o, client.InNamespace(ns)); err != nil {
			t.Errorf("deleting the CRs in %s: %v", ns, err)
		}
	}
}

// podFrom is the Pod a ReplicaSet would create from the Deployment's template.
func podFrom(d *appsv1.Deployment) *corev1.Pod {
	tpl := d.Spec.Template.DeepCopy()
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: d.Namespace, Name: d.Name + "-dry-run", Labels: tpl.Labels, Annotations: tpl.Annotations},
		Spec:       tpl.Spec,
	}
}

// checkPodSecurity: Pod Security admission only warns about a Deployment, so a Pod of
// its template is created in a server-side dry run in the restricted namespace.
func checkPodSecurity(t *testing.T, cl *cluster, d *appsv1.Deployment) {
	t.Helper()
	cl.warnings.take()
	if err := cl.admin.Create(context.Background(), podFrom(d), client.DryRunAll); err != nil {
		t.Errorf("a pod of %s/%s is refused in a restricted namespace: %v", d.Namespace, d.Name, err)
	}
	for _, w := range cl.warnings.take() {
		t.Errorf("a pod of %s/%s: the API server warned: %s", d.Namespace, d.Name, w)
	}
}

// checkPodSecurityEnforces is the control: without its security contexts, the same pod
// is refused, so checkPodSecurity's pass means something.
func checkPodSecurityEnforces(t *testing.T, cl *cluster, d *appsv1.Deployment) {
	t.Helper()
	pod := podFrom(d)
	pod.Spec.SecurityContext = nil
	for i := range pod.Spec.Containers {
		pod.Spec.Containers[i].SecurityContext = nil
	}
	err := cl.admin.Create(context.Background(), pod, client.DryRunAll)
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "PodSecurity") {
		t.Errorf("a pod without security contexts in %s: %v, want refused by PodSecurity", d.Namespace, err)
	}
}

func buildManager(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "manager")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/manager")
	cmd.Dir = repoRoot
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/manager: %v\n%s", err, b)
	}
	return out
}
