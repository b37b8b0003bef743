package controllers

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// A status write refused for a reason a read could not explain better costs no read at
// the API server: the API server unavailable, a timeout or a rate limit (in an outage
// every pass's failed status write would double its requests), and NotFound, which says
// the object is gone as plainly as a read would.
func TestAStatusWriteARefusalExplainsCostsNoRead(t *testing.T) {
	cases := map[string]struct {
		refusal  error
		wantGone bool
	}{
		"the API server unavailable": {apierrors.NewServiceUnavailable("etcd leader changed"), false},
		"the object gone":            {apierrors.NewNotFound(schema.GroupResource{Group: cdv1.GroupVersion.Group, Resource: "cdusergrants"}, "acme"), true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
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
					return tc.refusal
				},
				Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
					reads++
					return c.Get(ctx, key, obj, opts...)
				},
			})
			_, gone, err := writeStatus(context.Background(), c, c, cdv1.GroupVersion.WithKind("CDUserGrant"), read, &before.Status, &after.Status)
			if gone != tc.wantGone || (err == nil) != tc.wantGone {
				t.Errorf("refused as %v: gone %v, error %v; want gone %v, and an error only if not gone", tc.refusal, gone, err, tc.wantGone)
			}
			if reads != 0 {
				t.Errorf("a status write refused as %v cost %d read(s) at the API server: a read adds to an outage and says nothing a refused patch would", tc.refusal, reads)
			}
		})
	}
}
