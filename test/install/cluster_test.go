package install

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/credops/cd-credentials-operator/internal/manager"
	"github.com/credops/cd-credentials-operator/test/support"
)

// hardenedAdmission are the admission plugins of a hardened cluster (OpenShift enables
// OwnerReferencesPermissionEnforcement; PodSecurity enforces the namespace labels).
const hardenedAdmission = "NodeRestriction,OwnerReferencesPermissionEnforcement,PodSecurity"

// auditPolicy records every request's metadata (never a body: no Secret value reaches
// the log), which is what the test counts requests and refusals from.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
`

// cluster is a real kube-apiserver and etcd started the way a hardened cluster runs.
type cluster struct {
	env        *envtest.Environment
	cfg        *rest.Config
	admin      client.Client
	warnings   *warningRecorder
	auditLog   string
	kubeconfig []byte
}

// warningRecorder keeps the API server's warnings (PodSecurity's "would violate",
// unknown fields, deprecations).
type warningRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningRecorder) HandleWarningHeader(_ int, _ string, message string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, message)
}

// take returns the warnings since the last call.
func (w *warningRecorder) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}

func startHardenedCluster(t *testing.T) *cluster {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run `make test`, which builds kube-apiserver and etcd into ./bin")
	}
	dir := t.TempDir()
	policy := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &cluster{env: &envtest.Environment{}, warnings: &warningRecorder{}, auditLog: filepath.Join(dir, "audit.log")}
	c.env.ControlPlane.GetAPIServer().Configure().
		Set("enable-admission-plugins", hardenedAdmission).
		Set("authorization-mode", "RBAC").
		Set("audit-policy-file", policy).
		Set("audit-log-path", c.auditLog).
		Set("audit-log-mode", "blocking")
	cfg, err := c.env.Start()
	if err != nil {
		t.Fatalf("starting kube-apiserver with %s: %v", hardenedAdmission, err)
	}
	t.Cleanup(func() { _ = c.env.Stop() })
	c.cfg = rest.CopyConfig(cfg)
	c.cfg.WarningHandler = c.warnings
	c.admin, err = client.New(c.cfg, client.Options{Scheme: scheme()})
	if err != nil {
		t.Fatal(err)
	}
	c.kubeconfig = c.env.KubeConfig
	return c
}

func scheme() *runtime.Scheme {
	s := manager.Scheme()
	if err := apiextensionsv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// applyOrder puts what other objects need first: namespaces, then CRDs.
func applyOrder(o *unstructured.Unstructured) int {
	switch o.GetKind() {
	case "Namespace":
		return 0
	case "CustomResourceDefinition":
		return 1
	default:
		return 2
	}
}

// apply server-side-applies objs as fieldManager, CRDs first (and waits until they
// are served), and fails on any warning the API server returns: an unknown field, or a
// Deployment whose pods PodSecurity would refuse.
func (c *cluster) apply(t *testing.T, fieldManager string, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	sorted := slices.Clone(objs)
	slices.SortStableFunc(sorted, func(a, b *unstructured.Unstructured) int { return applyOrder(a) - applyOrder(b) })
	c.warnings.take()
	crdsServed := false
	for _, o := range sorted {
		if applyOrder(o) == 2 && !crdsServed {
			c.waitCRDsEstablished(t, sorted)
			crdsServed = true
		}
		if err := c.admin.Apply(ctx, client.ApplyConfigurationFromUnstructured(o.DeepCopy()), client.FieldOwner(fieldManager), client.ForceOwnership); err != nil {
			t.Fatalf("server-side apply of %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
		for _, w := range c.warnings.take() {
			t.Errorf("applying %s %s/%s: the API server warned: %s", o.GetKind(), o.GetNamespace(), o.GetName(), w)
		}
	}
	if !crdsServed {
		c.waitCRDsEstablished(t, sorted)
	}
}

func (c *cluster) waitCRDsEstablished(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range only(objs, "CustomResourceDefinition") {
		support.Eventually(t, 30*time.Second, "CRD "+o.GetName()+" established", func() error {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := c.admin.Get(context.Background(), types.NamespacedName{Name: o.GetName()}, crd); err != nil {
				return err
			}
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return nil
				}
			}
			return fmt.Errorf("not established: %+v", crd.Status.Conditions)
		})
	}
	// The client learns new kinds on a miss; reset it so the next apply sees them.
	if m, ok := c.admin.RESTMapper().(meta.ResettableRESTMapper); ok {
		m.Reset()
	}
}

// auditEvent is the part of an audit.k8s.io/v1 Event the test reads.
type auditEvent struct {
	AuditID          string `json:"auditID"`
	Stage            string `json:"stage"`
	Verb             string `json:"verb"`
	RequestURI       string `json:"requestURI"`
	ImpersonatedUser *struct {
		Username string `json:"username"`
	} `json:"impersonatedUser"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
		APIGroup    string `json:"apiGroup"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code    int    `json:"code"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"responseStatus"`
}

// requestTally is what the API server's audit log says one user did.
type requestTally struct {
	Requests  int
	Forbidden int
	// Refusals counts the 403s by "verb group/resource[/subresource] namespace/name:
	// message" (metadata only: the audit policy records no bodies).
	Refusals map[string]int
}

// tally counts the requests the API server answered for user (the impersonated
// ServiceAccount) and lists every one it refused with 403.
func (c *cluster) tally(t *testing.T, user string) requestTally {
	t.Helper()
	f, err := os.Open(c.auditLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	out := requestTally{Refusals: map[string]int{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var e auditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit log: %v", err)
		}
		if e.ImpersonatedUser == nil || e.ImpersonatedUser.Username != user || e.ResponseStatus == nil || seen[e.AuditID] {
			continue
		}
		seen[e.AuditID] = true // a watch has a ResponseStarted and a ResponseComplete event
		out.Requests++
		if e.ResponseStatus.Code == 403 {
			out.Forbidden++
			out.Refusals[describe(e)]++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func describe(e auditEvent) string {
	if e.ObjectRef == nil {
		return e.Verb + " " + e.RequestURI
	}
	r := e.ObjectRef
	res := r.Resource
	if r.APIGroup != "" {
		res = r.APIGroup + "/" + res
	}
	if r.Subresource != "" {
		res += "/" + r.Subresource
	}
	return strings.TrimSpace(fmt.Sprintf("%s %s %s/%s: %s", e.Verb, res, r.Namespace, r.Name, e.ResponseStatus.Message))
}
