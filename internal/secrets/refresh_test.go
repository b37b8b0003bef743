package secrets

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

func TestARefreshTokenSecretIsBoundElsewhereWhileAnotherGrantStillHoldsIt(t *testing.T) {
	naming := func(secret, key string) *cdv1.CDUserGrant {
		return &cdv1.CDUserGrant{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme", UID: "uid-acme"},
			Spec:       cdv1.CDUserGrantSpec{RefreshTokenSecretRef: cdv1.RefreshTokenSecretReference{Name: secret, Key: key}},
		}
	}
	beta := &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "beta", UID: "uid-beta"}}
	holds := func(types.UID) bool { return true }
	holdsNothing := func(types.UID) bool { return false }
	cases := map[string]struct {
		bound   string // the Secret's binding
		marked  bool   // the Secret carries an in-flight mark
		acme    *cdv1.CDUserGrant
		holding func(types.UID) bool
		want    bool
	}{
		"an unbound Secret is free": {
			acme: naming("acme-refresh", ""), holding: holds,
		},
		"a Secret bound to this grant is its own": {
			bound: "beta/uid-beta", acme: naming("acme-refresh", ""), holding: holds,
		},
		"a Secret bound to a grant that is gone is free": {
			bound: "acme/uid-acme", holding: holds,
		},
		"a Secret bound to a grant deleted and created again under its name is free": {
			bound: "acme/uid-old", acme: naming("acme-refresh", ""), holding: holds,
		},
		"a Secret its grant names is bound elsewhere": {
			bound: "acme/uid-acme", acme: naming("acme-refresh", ""), holding: holdsNothing, want: true,
		},
		"a Secret its grant names under another key is still bound elsewhere": {
			bound: "acme/uid-acme", acme: naming("acme-refresh", "token"), holding: holdsNothing, want: true,
		},
		"a Secret its grant no longer names is free": {
			bound: "acme/uid-acme", acme: naming("acme-refresh-2", ""), holding: holdsNothing,
		},
		// The successor of a rotation that finished while the grant was edited goes
		// into the Secret the rotation started from (the spent token is there).
		"a Secret its grant no longer names but holds an unstored successor for is bound elsewhere": {
			bound: "acme/uid-acme", acme: naming("acme-refresh-2", ""), holding: holds, want: true,
		},
		// A rotation of it is out (or its answer was lost), in whichever process: only the
		// bound grant may resolve the mark; another grant would send the token again.
		"a Secret its grant no longer names but whose rotation is out is bound elsewhere": {
			bound: "acme/uid-acme", marked: true, acme: naming("acme-refresh-2", ""), holding: holdsNothing, want: true,
		},
		"a marked Secret is bound elsewhere for a caller that cannot see held results (the callback)": {
			bound: "acme/uid-acme", marked: true, acme: naming("acme-refresh-2", ""), want: true,
		},
		"an unmarked Secret its grant no longer names is free for the callback too": {
			bound: "acme/uid-acme", acme: naming("acme-refresh-2", ""),
		},
	}
	scheme := runtime.NewScheme()
	_ = cdv1.AddToScheme(scheme)
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			objs := []client.Object{beta}
			if tc.acme != nil {
				objs = append(objs, tc.acme)
			}
			api := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme-refresh"}}
			s.Annotations = map[string]string{}
			if tc.bound != "" {
				s.Annotations[cdv1.BoundToAnnotation] = tc.bound
			}
			if tc.marked {
				s.Annotations[cdv1.RotationInFlightAnnotation] = "sha256:0123"
			}
			got, err := BoundElsewhere(context.Background(), api, beta, s, tc.holding)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("BoundElsewhere = %v, want %v", got, tc.want)
			}
		})
	}
}
