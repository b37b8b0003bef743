package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// Field indexes, so a changed Secret or CDCredential maps to the CRs that reference it
// without listing every CR.
const (
	credentialClientSecretIndex = "spec.clientSecretRef.name"
	grantRefreshSecretIndex     = "spec.refreshTokenSecretRef.name"
	grantCredentialIndex        = "spec.credentialRef.name"
)

// Options tune the controllers.
type Options struct {
	MaxConcurrentReconciles int
	// SecretCreations, when set, brings a CR back at once when a Secret it names is
	// created without the operator's label.
	SecretCreations *SecretCreations
}

// SetupWithManager registers the CDCredential controller and its indexes.
func (r *CDCredentialReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager, opts Options) error {
	indexes := map[string]client.IndexerFunc{
		credentialClientSecretIndex: func(o client.Object) []string {
			return []string{o.(*cdv1.CDCredential).Spec.ClientSecretRef.Name}
		},
		credentialClientIDIndex: indexClientID,
	}
	for name, fn := range indexes {
		if err := mgr.GetFieldIndexer().IndexField(ctx, &cdv1.CDCredential{}, name, fn); err != nil {
			return err
		}
	}
	b := ctrl.NewControllerManagedBy(mgr).
		For(&cdv1.CDCredential{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&corev1.Secret{}, builder.WithPredicates(outputTampered)).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(referencing(mgr.GetClient(), &cdv1.CDCredentialList{}, credentialClientSecretIndex)), builder.WithPredicates(secretDataChanged)).
		Watches(&cdv1.CDCredential{}, sharersHandler(mgr.GetClient())).
		WithOptions(controller.Options{MaxConcurrentReconciles: opts.MaxConcurrentReconciles})
	return opts.SecretCreations.watchReferencing(b, mgr.GetClient(), &cdv1.CDCredentialList{}, credentialClientSecretIndex).Complete(r)
}

// secretDataChanged lets through a referenced Secret's creation, deletion and changes
// to its data: a new client secret or refresh token. The operator's own metadata writes
// (the watch label, in-flight and rejection marks) must not bring a CR straight back,
// or a refused request would be retried in a loop.
var secretDataChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, okOld := e.ObjectOld.(*corev1.Secret)
		cur, okNew := e.ObjectNew.(*corev1.Secret)
		if !okOld || !okNew {
			return true
		}
		// A rotation's own write of the new refresh token is not news.
		ownWrite := cur.Annotations[storedHashAnnotation] == dataHash(cur.Data)
		return !equality.Semantic.DeepEqual(old.Data, cur.Data) && !ownWrite
	},
}

// outputTampered lets through an output Secret's deletion, and updates that leave it
// incomplete or inconsistent (a hand edit): the operator's own writes are consistent,
// and reconciling after each of them would only find the token fresh.
var outputTampered = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		cur, ok := e.ObjectNew.(*corev1.Secret)
		if !ok {
			return true
		}
		_, consistent := currentSchedule(cur)
		return !consistent
	},
}

// referencing maps an object to the CRs of one kind in its namespace whose index field
// names it.
func referencing(c client.Client, list client.ObjectList, index string) handler.MapFunc {
	return func(ctx context.Context, obj client.Object) []reconcile.Request {
		l := list.DeepCopyObject().(client.ObjectList)
		if err := c.List(ctx, l, client.InNamespace(obj.GetNamespace()), client.MatchingFields{index: obj.GetName()}); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Listing referencing objects failed", "index", index)
			return nil
		}
		var reqs []reconcile.Request
		_ = forEachItem(l, func(o client.Object) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(o)})
		})
		return reqs
	}
}

func forEachItem(l client.ObjectList, fn func(client.Object)) error {
	return meta.EachListItem(l, func(o runtime.Object) error {
		fn(o.(client.Object))
		return nil
	})
}

// SetupWithManager registers the CDUserGrant controller and its indexes.
func (r *CDUserGrantReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager, opts Options) error {
	indexes := map[string]client.IndexerFunc{
		grantRefreshSecretIndex: func(o client.Object) []string {
			return []string{o.(*cdv1.CDUserGrant).Spec.RefreshTokenSecretRef.Name}
		},
		grantCredentialIndex: func(o client.Object) []string {
			return []string{o.(*cdv1.CDUserGrant).Spec.CredentialRef.Name}
		},
	}
	for name, fn := range indexes {
		if err := mgr.GetFieldIndexer().IndexField(ctx, &cdv1.CDUserGrant{}, name, fn); err != nil {
			return err
		}
	}
	b := ctrl.NewControllerManagedBy(mgr).
		For(&cdv1.CDUserGrant{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&corev1.Secret{}, builder.WithPredicates(outputTampered)).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(referencing(mgr.GetClient(), &cdv1.CDUserGrantList{}, grantRefreshSecretIndex)), builder.WithPredicates(secretDataChanged)).
		Watches(&cdv1.CDCredential{}, handler.EnqueueRequestsFromMapFunc(referencing(mgr.GetClient(), &cdv1.CDUserGrantList{}, grantCredentialIndex))).
		WithOptions(controller.Options{MaxConcurrentReconciles: opts.MaxConcurrentReconciles})
	return opts.SecretCreations.watchReferencing(b, mgr.GetClient(), &cdv1.CDUserGrantList{}, grantRefreshSecretIndex).Complete(r)
}
