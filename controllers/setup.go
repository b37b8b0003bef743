package controllers

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/metabound"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

// Field indexes, so a changed Secret or CDCredential maps to the CRs that reference it
// without listing every CR.
const (
	credentialClientSecretIndex = "spec.clientSecretRef.name"
	grantRefreshSecretIndex     = "spec.refreshTokenSecretRef.name"
	grantCredentialIndex        = "spec.credentialRef.name"
	// outputSecretIndex holds only a spec.secretName that is set: a CR without one writes
	// <name>-token, which names the CR itself (namingOutput), so the many grants on the
	// default cost no index entry.
	outputSecretIndex = "spec.secretName"
)

// Options tune the controllers.
type Options struct {
	MaxConcurrentReconciles int
}

// SetupWithManager registers the CDCredential controller and its indexes.
func (r *CDCredentialReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager, opts Options) error {
	indexes := map[string]client.IndexerFunc{
		credentialClientSecretIndex: func(o client.Object) []string {
			return []string{o.(*cdv1.CDCredential).Spec.ClientSecretRef.Name}
		},
		outputSecretIndex: func(o client.Object) []string {
			return nonEmpty(o.(*cdv1.CDCredential).Spec.SecretName)
		},
	}
	if err := addNamespacedIndexes(ctx, mgr.GetCache(), &cdv1.CDCredential{}, indexes); err != nil {
		return err
	}
	// Looked up across namespaces: a client shared across flows anywhere in the cluster.
	if err := mgr.GetFieldIndexer().IndexField(ctx, &cdv1.CDCredential{}, credentialClientIDIndex, indexClientID); err != nil {
		return err
	}
	keyID := secrets.KeyID(r.Key)
	return ctrl.NewControllerManagedBy(mgr).
		For(&cdv1.CDCredential{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, notInShard, metadataBoundCrossed))).
		Owns(&corev1.Secret{}, builder.WithPredicates(outputTampered)).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(referencing(mgr.GetClient(), &cdv1.CDCredentialList{}, credentialClientSecretIndex)), builder.WithPredicates(secretChanged)).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(namingOutput(mgr.GetClient(), &cdv1.CDCredentialList{}, &cdv1.CDCredential{}, credentialSecretName)), builder.WithPredicates(onlyDeleted)).
		Watches(&cdv1.CDCredential{}, sharersHandler(mgr.GetClient(), keyID)).
		Watches(&cdv1.CDCredential{}, anotherInstallHandler(r.Recorder, keyID)).
		WithOptions(controller.Options{MaxConcurrentReconciles: opts.MaxConcurrentReconciles}).
		Complete(r)
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
		outputSecretIndex: func(o client.Object) []string {
			return nonEmpty(o.(*cdv1.CDUserGrant).Spec.SecretName)
		},
	}
	if err := addNamespacedIndexes(ctx, mgr.GetCache(), &cdv1.CDUserGrant{}, indexes); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&cdv1.CDUserGrant{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}, lastAuthorizationChanged, notInShard, metadataBoundCrossed))).
		Owns(&corev1.Secret{}, builder.WithPredicates(outputTampered)).
		Watches(&corev1.Secret{}, r.refreshSecretEvents(mgr.GetClient()), builder.WithPredicates(secretChanged)).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(namingOutput(mgr.GetClient(), &cdv1.CDUserGrantList{}, &cdv1.CDUserGrant{}, grantSecretName)), builder.WithPredicates(onlyDeleted)).
		Watches(&cdv1.CDCredential{}, handler.EnqueueRequestsFromMapFunc(referencing(mgr.GetClient(), &cdv1.CDUserGrantList{}, grantCredentialIndex))).
		Watches(&cdv1.CDUserGrant{}, handler.EnqueueRequestsFromMapFunc(sharingRefreshSecret(mgr.GetClient())), builder.WithPredicates(onlyDeleted)).
		WithOptions(controller.Options{MaxConcurrentReconciles: opts.MaxConcurrentReconciles}).
		Complete(r)
}

// addNamespacedIndexes indexes a kind by fields that name an object in the same
// namespace (a Secret, a CDCredential), for referencing, which only ever looks within one
// namespace. Each object is indexed under "namespace/value" alone. controller-runtime's
// IndexField also indexes every value under an all-namespaces key: that doubles the index
// (a set of its own per grant for a unique value such as the refresh-token Secret's name,
// about 0.4 KiB of live heap per grant at 10,000), and an index function that returns two
// values defeats client-go's shortcut for an update that leaves a single value unchanged,
// so every status write would take each grant out of its index sets and put it back. The
// name and key are those controller-runtime's cache reader looks up for a List with
// InNamespace and MatchingFields (TestReferencingFindsCRsThroughNamespacedIndexes in
// test/integration checks them against a real cache).
func addNamespacedIndexes(ctx context.Context, c cache.Cache, obj client.Object, fields map[string]client.IndexerFunc) error {
	informer, err := c.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
	if err != nil {
		return err
	}
	indexers := toolscache.Indexers{}
	for field, values := range fields {
		indexers["field:"+field] = func(raw any) ([]string, error) {
			o, ok := raw.(client.Object)
			if !ok {
				return nil, fmt.Errorf("indexing %s: %T is not an object", field, raw)
			}
			vals := values(o)
			keys := make([]string, len(vals))
			for i, v := range vals {
				keys[i] = o.GetNamespace() + "/" + v
			}
			return keys, nil
		}
	}
	return informer.AddIndexers(indexers)
}

// refreshSecretEvents maps a changed Secret to the grants that name it as their
// refresh-token Secret, having remembered the live token an update replaced with a spent
// one (noticingWriteBacks): the old object of the event is the only place it still is.
func (r *CDUserGrantReconciler) refreshSecretEvents(c client.Client) handler.EventHandler {
	return r.noticingWriteBacks(handler.EnqueueRequestsFromMapFunc(referencing(c, &cdv1.CDUserGrantList{}, grantRefreshSecretIndex)))
}

// secretChanged lets through a referenced Secret's creation (which, for the cache,
// includes the moment it is opted in), deletion, and changes to its data or its opt-in
// label: a new client secret or refresh token. The operator's own writes (a stored
// refresh token, in-flight marks, the binding) must not bring a CR straight back, or a
// refused request would be retried in a loop.
var secretChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, okOld := e.ObjectOld.(*corev1.Secret)
		cur, okNew := e.ObjectNew.(*corev1.Secret)
		if !okOld || !okNew {
			return true
		}
		if old.Labels[cdv1.SecretTypeLabel] != cur.Labels[cdv1.SecretTypeLabel] {
			return true
		}
		// An output Secret is nobody's client secret or refresh token: a CR that names
		// one reads nothing from it, whatever its data. The operator rewrites each at
		// every rotation, so this check comes before comparing data.
		if cur.Labels[cdv1.SecretTypeLabel] == cdv1.SecretTypeAccessToken {
			return false
		}
		return !maps.EqualFunc(old.Data, cur.Data, bytes.Equal) && !secrets.WrittenByOperator(cur)
	},
}

// outputTampered lets through an output Secret's deletion, and creations and updates
// that leave it incomplete or inconsistent (a hand edit): the operator's own writes are
// consistent, and reconciling after each of them would only find the token fresh. The
// creation counts too: the pass that stored a CR's first token created its output
// Secret, and the pass that event brought right after it, when the cache did not show
// that pass's status write yet, wrote the same status once more (a routine status
// write leaves no memory to recall it by). An informer's first list, which reports
// every Secret as created, brings nothing either: each CR is listed, and reconciled,
// on its own.
//
// An update of an output the cache kept only a stub of (metabound.Over) counts
// whatever it left: its CR stalled on it (OutputSecretTooLarge), and a Secret made
// smaller may well be consistent again.
var outputTampered = predicate.Funcs{
	CreateFunc: func(e event.CreateEvent) bool { return !consistentOutput(e.Object) },
	UpdateFunc: func(e event.UpdateEvent) bool {
		return !consistentOutput(e.ObjectNew) || metabound.Over(e.ObjectOld)
	},
}

// consistentOutput reports whether obj is a complete, self-consistent output Secret, as
// the operator writes them.
func consistentOutput(obj client.Object) bool {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return false
	}
	_, consistent := secrets.Consistent(s)
	return consistent
}

// metadataBoundCrossed lets through an update that takes a CR over metabound.Max or back
// under it: the pass stops on a stub of it (MetadataTooLarge) and must say so, and goes on
// once it is smaller, though neither changes its generation.
var metadataBoundCrossed = predicate.Funcs{
	UpdateFunc:  func(e event.UpdateEvent) bool { return metabound.Over(e.ObjectOld) != metabound.Over(e.ObjectNew) },
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
}

// lastAuthorizationChanged lets through the callback's report of a customer login, so
// the grant says at once why a login failed.
var lastAuthorizationChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, okOld := e.ObjectOld.(*cdv1.CDUserGrant)
		cur, okNew := e.ObjectNew.(*cdv1.CDUserGrant)
		return okOld && okNew && !equality.Semantic.DeepEqual(old.Status.LastAuthorization, cur.Status.LastAuthorization)
	},
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
}

// onlyDeleted lets through deletions alone.
var onlyDeleted = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	UpdateFunc:  func(event.UpdateEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
}

// referencing maps an object to the CRs of one kind in its namespace whose index field
// names it.
func referencing(c client.Client, list client.ObjectList, index string) handler.MapFunc {
	return func(ctx context.Context, obj client.Object) []reconcile.Request {
		return listed(ctx, c, list, obj.GetNamespace(), index, obj.GetName())
	}
}

// namingOutput maps a deleted Secret to the CRs of one kind whose output Secret name it
// is, so a CR held back by SecretNameConflict takes the name as soon as it is free: a
// Secret of the operator's (another CR's output, garbage-collected with its CR) leaves
// the cache, and its deletion is an event here. A user's Secret without the opt-in label
// is not in the cache; the CR finds it gone at its next recheck (missingSecretRecheck).
func namingOutput(c client.Client, list client.ObjectList, obj client.Object, specName func(client.Object) string) handler.MapFunc {
	return func(ctx context.Context, s client.Object) []reconcile.Request {
		reqs := listed(ctx, c, list, s.GetNamespace(), outputSecretIndex, s.GetName())
		// The default name is not indexed: it names its CR.
		if name, ok := secrets.DefaultOutputOf(s.GetName()); ok {
			key := client.ObjectKey{Namespace: s.GetNamespace(), Name: name}
			cr := obj.DeepCopyObject().(client.Object)
			if c.Get(ctx, key, cr) == nil && specName(cr) == "" {
				reqs = append(reqs, reconcile.Request{NamespacedName: key})
			}
		}
		return reqs
	}
}

func credentialSecretName(o client.Object) string { return o.(*cdv1.CDCredential).Spec.SecretName }
func grantSecretName(o client.Object) string      { return o.(*cdv1.CDUserGrant).Spec.SecretName }

// sharingRefreshSecret maps a deleted grant to the other grants that name its
// refresh-token Secret: one held back by RefreshTokenSecretInUse may now take the
// binding over (DESIGN §8). The grant's spec at deletion may not name every Secret bound
// to it (a binding outlives an edit of spec.refreshTokenSecretRef), and a grant of
// another shard is not in this cache: the recheck of RefreshTokenSecretInUse
// (missingSecretRecheck) covers those.
func sharingRefreshSecret(c client.Client) handler.MapFunc {
	return func(ctx context.Context, obj client.Object) []reconcile.Request {
		g, ok := obj.(*cdv1.CDUserGrant)
		if !ok {
			return nil
		}
		return listed(ctx, c, &cdv1.CDUserGrantList{}, g.Namespace, grantRefreshSecretIndex, g.Spec.RefreshTokenSecretRef.Name)
	}
}

// listed lists the CRs of one kind in namespace whose index field is value, as requests.
func listed(ctx context.Context, c client.Client, list client.ObjectList, namespace, index, value string) []reconcile.Request {
	l := list.DeepCopyObject().(client.ObjectList)
	// Only the keys are read: a credential that 10,000 grants name is not copied
	// 10,000 times over.
	if err := c.List(ctx, l, client.InNamespace(namespace), client.MatchingFields{index: value}, client.UnsafeDisableDeepCopy); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing referencing objects failed", "index", index)
		return nil
	}
	var reqs []reconcile.Request
	_ = meta.EachListItem(l, func(o runtime.Object) error {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(o.(client.Object))})
		return nil
	})
	return reqs
}

// nonEmpty is v as index values: none when v is empty.
func nonEmpty(v string) []string {
	if v == "" {
		return nil
	}
	return []string{v}
}

// renewBefore is a spec's renewBefore, 0 when unset.
func renewBefore(d *metav1.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.Duration
}
