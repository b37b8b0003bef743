package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/manager"
)

var crdNames = []string{"cdcredentials.cd.credops.io", "cdusergrants.cd.credops.io"}

// The README's Uninstall, "remove everything": delete the CRs while the operator still
// runs (a grant of deletionPolicy Delete waits on its finalizer for the operator to
// revoke its refresh token), uninstall, then delete the CRDs; a grant the operator left
// its finalizer on loses it by the README's patch. Followed in that order, the CRDs go.
// (In the order the README once gave, CRDs deleted after the uninstall, the grant's
// finalizer held the CRD Terminating for ever.) The test runs a control plane of its own:
// it deletes the CRDs.
func TestTheReadmesRemoveEverythingSequenceRemovesTheCRDs(t *testing.T) {
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	restCfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	scheme := manager.Scheme()
	_ = apiextensionsv1.AddToScheme(scheme)
	c, err := client.New(restCfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ns := "team-a"
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cd-login-client", Labels: map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeClient}},
			StringData: map[string]string{"client_secret": "s3cret"}},
		&cdv1.CDCredential{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cd-login"}, Spec: cdv1.CDCredentialSpec{
			Flow: cdv1.FlowAuthorizationCode, ClientID: "login-client", ClientSecretRef: cdv1.ClientSecretReference{Name: "cd-login-client"},
			RedirectURL: "https://tms.example.com/cd/callback"}},
		deletePolicyGrant(ns, "acme"),
	} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("creating %T: %v", o, err)
		}
	}
	mgr := startManagerWith(t, restCfg, manager.Options{})
	eventually(t, 20*time.Second, "the operator put its finalizer on the grant", func() error {
		g := &cdv1.CDUserGrant{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "acme"}, g); err != nil {
			return err
		}
		if len(g.Finalizers) == 0 {
			return fmt.Errorf("finalizers %v", g.Finalizers)
		}
		return nil
	})

	// 1. kubectl delete cdusergrants --all --all-namespaces, then cdcredentials, while
	// the operator runs: it revokes and lets each Delete-policy grant go.
	deleteAll(t, c, &cdv1.CDUserGrantList{})
	deleteAll(t, c, &cdv1.CDCredentialList{})
	eventually(t, 20*time.Second, "kubectl delete cdusergrants returned: every grant gone", func() error {
		return noneLeft(ctx, c, &cdv1.CDUserGrantList{})
	})

	// 2. The uninstall: the operator is gone.
	mgr.Stop(t)

	// 3. Had the operator gone first, a grant keeps its finalizer: the README's command
	// takes it off, and no other controller's (its refresh token is then not revoked).
	late := deletePolicyGrant(ns, "late")
	late.Finalizers = []string{"example.com/backup", "cd.credops.io/delete-refresh-token"}
	if err := c.Create(ctx, late); err != nil {
		t.Fatal(err)
	}
	for _, p := range readmesFinalizerPatches(t, ctx, c) {
		if err := c.Patch(ctx, &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: p.name}}, client.RawPatch(types.JSONPatchType, p.body)); err != nil {
			t.Fatalf("kubectl -n %s patch cdusergrant %s --type json -p '%s': %v", p.ns, p.name, p.body, err)
		}
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(late), late); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(late.Finalizers, []string{"example.com/backup"}) {
		t.Fatalf("finalizers after the README's command: %v, want only the other controller's", late.Finalizers)
	}
	// The other controller does its part.
	if err := c.Patch(ctx, late, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`))); err != nil {
		t.Fatal(err)
	}

	// 4. kubectl delete crd ...
	for _, name := range crdNames {
		if err := c.Delete(ctx, &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			t.Fatalf("kubectl delete crd %s: %v", name, err)
		}
	}
	eventually(t, 20*time.Second, "the CRDs are gone", func() error {
		for _, name := range crdNames {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := c.Get(ctx, client.ObjectKey{Name: name}, crd); !apierrors.IsNotFound(err) {
				return fmt.Errorf("%s still there (deleting since %v, finalizers %v)", name, crd.DeletionTimestamp, crd.Finalizers)
			}
		}
		return nil
	})
}

func deletePolicyGrant(ns, name string) *cdv1.CDUserGrant {
	return &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: cdv1.CDUserGrantSpec{
		CredentialRef: cdv1.CredentialReference{Name: "cd-login"}, RefreshTokenSecretRef: cdv1.RefreshTokenSecretReference{Name: name + "-refresh-token"},
		DeletionPolicy: cdv1.DeletionPolicyDelete}}
}

// deleteAll is `kubectl delete <kind> --all --all-namespaces` without its wait.
func deleteAll(t *testing.T, c client.Client, list client.ObjectList) {
	t.Helper()
	ctx := context.Background()
	if err := c.List(ctx, list); err != nil {
		t.Fatal(err)
	}
	items, err := metaItems(list)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range items {
		if err := c.Delete(ctx, o); client.IgnoreNotFound(err) != nil {
			t.Fatalf("deleting %s/%s: %v", o.GetNamespace(), o.GetName(), err)
		}
	}
}

func noneLeft(ctx context.Context, c client.Client, list client.ObjectList) error {
	if err := c.List(ctx, list); err != nil {
		return err
	}
	items, err := metaItems(list)
	if err != nil {
		return err
	}
	for _, o := range items {
		return fmt.Errorf("%s/%s still there (deleting since %v, finalizers %v)", o.GetNamespace(), o.GetName(), o.GetDeletionTimestamp(), o.GetFinalizers())
	}
	return nil
}

func metaItems(list client.ObjectList) ([]client.Object, error) {
	objs, err := apimeta.ExtractList(list)
	if err != nil {
		return nil, err
	}
	out := make([]client.Object, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(client.Object))
	}
	return out, nil
}

// finalizerPatch is one `kubectl patch --type json` of the README's command.
type finalizerPatch struct {
	ns, name string
	body     []byte
}

// readmesFinalizerPatches runs the README's command for taking the finalizer off when
// the operator is gone: its go-template over the grants as kubectl renders it (the JSON
// of the list), then the JSON patch its loop sends for each line.
func readmesFinalizerPatches(t *testing.T, ctx context.Context, c client.Client) []finalizerPatch {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "kubectl get cdusergrants --all-namespaces -o go-template='"
	_, rest, ok := strings.Cut(string(readme), prefix)
	if !ok {
		t.Fatalf("the README has no %q", prefix)
	}
	text, _, _ := strings.Cut(rest, "' |")
	tmpl, err := template.New("readme").Parse(text)
	if err != nil {
		t.Fatalf("the README's go-template: %v", err)
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(cdv1.GroupVersion.WithKind("CDUserGrantList"))
	if err := c.List(ctx, list); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := tmpl.Execute(&out, list.UnstructuredContent()); err != nil {
		t.Fatalf("the README's go-template: %v", err)
	}
	var patches []finalizerPatch
	for line := range strings.Lines(out.String()) {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("the README's go-template printed %q, want: namespace name index", line)
		}
		path := "/metadata/finalizers/" + f[2]
		patches = append(patches, finalizerPatch{f[0], f[1], []byte(`[{"op":"test","path":"` + path + `","value":"cd.credops.io/delete-refresh-token"},{"op":"remove","path":"` + path + `"}]`)})
	}
	return patches
}
