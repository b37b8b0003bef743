package controllers

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// A status write refused for a reason that has nothing to do with the object's UID or
// its status being absent (the API server unavailable, a timeout, a rate limit) must not
// cost a read at the API server as well: in an outage every pass's failed status write
// doubles its requests.
func TestAStatusWriteTheAPIServerCouldNotTakeCostsNoRead(t *testing.T) {
	scheme := runtime.NewScheme()
	_ = cdv1.AddToScheme(scheme)
	g := grantObj("acme", "acme-refresh")
	base := fake.NewClientBuilder().WithScheme(scheme).WithObjects(g).WithStatusSubresource(g).Build()
	read := &cdv1.CDUserGrant{}
	if err := base.Get(context.Background(), client.ObjectKeyFromObject(g), read); err != nil {
		t.Fatal(err)
	}
	read.Status.RotationCount = 1
	before := read.DeepCopy()
	after := read.DeepCopy()
	after.Status.RotationCount = 2
	reads := 0
	c := interceptor.NewClient(base, interceptor.Funcs{
		SubResourcePatch: func(context.Context, client.Client, string, client.Object, client.Patch, ...client.SubResourcePatchOption) error {
			return apierrors.NewServiceUnavailable("etcd leader changed")
		},
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			reads++
			return c.Get(ctx, key, obj, opts...)
		},
	})
	_, _, err := writeStatus(context.Background(), c, c, cdv1.GroupVersion.WithKind("CDUserGrant"), read, &before.Status, &after.Status)
	if err == nil {
		t.Fatal("the write succeeded")
	}
	if reads != 0 {
		t.Errorf("a status write refused as %v cost %d read(s) at the API server: a read adds to an outage and says nothing a refused patch would", err, reads)
	}
}
