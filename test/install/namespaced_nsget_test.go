package install

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestANamespacedInstallMayReadItsOwnNamespace: the chart with rbac.namespaces
// (team-full) binds the manager ClusterRole with a RoleBinding; the ServiceAccount must
// be able to GET namespace team-full (namespaceGoing's metadata read) and nothing else.
func TestANamespacedInstallMayReadItsOwnNamespace(t *testing.T) {
	cl := startHardenedCluster(t)
	cl.apply(t, "install-test", thirdPartyCRDs(t))
	objs := helmTemplate(t, "cdf", "cd-full", allFeaturesValues)
	cl.apply(t, "install-test", []*unstructured.Unstructured{namespace("team-full", nil), namespace("other", nil), namespace("cd-full", restricted)})
	cl.apply(t, "helm", objs)
	cfg := rest.CopyConfig(cl.cfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: serviceAccountUser("cd-full", "cd-credentials-full"),
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:cd-full", "system:authenticated"}}
	c, err := client.New(cfg, client.Options{Scheme: scheme()})
	if err != nil {
		t.Fatal(err)
	}
	get := func(ns string) error {
		m := &metav1.PartialObjectMetadata{}
		m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
		return c.Get(context.Background(), types.NamespacedName{Name: ns}, m)
	}
	if err := get("team-full"); err != nil {
		t.Errorf("GET namespace team-full as the namespaced install's ServiceAccount: %v", err)
	}
	if err := get("other"); !apierrors.IsForbidden(err) {
		t.Errorf("GET namespace other: want Forbidden, got %v", err)
	}
}
