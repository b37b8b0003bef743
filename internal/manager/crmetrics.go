package manager

import (
	"context"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/controllers"
	"github.com/credops/cd-credentials-operator/internal/metrics"
)

// publishCRMetrics publishes the per-CR series from the manager's cache, and of the CRs
// relabelled out of its shard that no shard serves (left), while this replica leads (a
// follower reconciles nothing, so it says nothing about the CRs).
func publishCRMetrics(mgr ctrl.Manager, left *controllers.LeftShard) error {
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		remove := metrics.AddSource(cachedCRs(ctx, mgr.GetCache()))
		removeLeft := metrics.AddSource(left.Source())
		<-ctx.Done()
		remove()
		removeLeft()
		return nil
	}))
}

// cachedCRs yields the cached CRs as they are stored. The collector only reads them, so
// they are listed without a deep copy.
func cachedCRs(ctx context.Context, c client.Reader) metrics.Source {
	log := ctrl.Log.WithName("metrics")
	return func(yield func(metrics.CR) bool) {
		grants := &cdv1.CDUserGrantList{}
		if err := c.List(ctx, grants, client.UnsafeDisableDeepCopy); err != nil {
			log.Error(err, "Listing CDUserGrants for their metrics failed")
		}
		for i := range grants.Items {
			g := &grants.Items[i]
			if !yield(metrics.GrantCR(g)) {
				return
			}
		}
		creds := &cdv1.CDCredentialList{}
		if err := c.List(ctx, creds, client.UnsafeDisableDeepCopy); err != nil {
			log.Error(err, "Listing CDCredentials for their metrics failed")
		}
		for i := range creds.Items {
			cr := &creds.Items[i]
			if !yield(metrics.CredentialCR(cr)) {
				return
			}
		}
	}
}
