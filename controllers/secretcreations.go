package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	watchtools "k8s.io/client-go/tools/watch"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/source"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// unlabelledSecrets selects the Secrets the operator's cache does not hold.
var unlabelledSecrets = "!" + cdv1.WatchLabel

// SecretCreations tells the controllers at once when a Secret is created without the
// operator's watch label: a client Secret or refresh token created after the CR that
// names it, the way `kubectl create secret` makes it. The cache holds only labelled
// Secrets (memory must not grow with the cluster's other Secrets), so without this such
// a Secret would be found only by the CR's periodic retry.
//
// It keeps nothing: a metadata-only watch, filtered by the API server to unlabelled
// Secrets, whose creations are handed to each controller, which maps them through its
// field index to the CRs that reference them. Their reconcile reads the Secret directly
// and labels it, and from then on the cache watches it.
type SecretCreations struct {
	client     metadata.Interface
	namespaces []string

	mu          sync.Mutex
	subscribers []chan event.GenericEvent
}

var _ manager.LeaderElectionRunnable = &SecretCreations{}

// NewSecretCreations watches the given namespaces, or all when there are none.
func NewSecretCreations(mgr manager.Manager, namespaces []string) (*SecretCreations, error) {
	mc, err := metadata.NewForConfigAndClient(mgr.GetConfig(), mgr.GetHTTPClient())
	if err != nil {
		return nil, fmt.Errorf("creating the metadata client: %w", err)
	}
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	return &SecretCreations{client: mc, namespaces: namespaces}, nil
}

// subscribe returns a channel that receives every unlabelled Secret created from Start on.
func (s *SecretCreations) subscribe() <-chan event.GenericEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan event.GenericEvent, 64)
	s.subscribers = append(s.subscribers, ch)
	return ch
}

// NeedLeaderElection is true: only the leader's controllers run, so only it listens.
func (s *SecretCreations) NeedLeaderElection() bool { return true }

// Start watches until ctx is done.
func (s *SecretCreations) Start(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, ns := range s.namespaces {
		wg.Go(func() {
			// A watch ends on errors a RetryWatcher cannot resume from (410 Gone after a
			// long disconnection); start again from a fresh resourceVersion.
			wait.UntilWithContext(ctx, func(ctx context.Context) { s.watch(ctx, ns) }, 5*time.Second)
		})
	}
	wg.Wait()
	return nil
}

func (s *SecretCreations) watch(ctx context.Context, namespace string) {
	log := ctrl.LoggerFrom(ctx).WithName("secret-creations")
	secrets := s.client.Resource(corev1.SchemeGroupVersion.WithResource("secrets")).Namespace(namespace)
	// Only creations from now on matter: a Secret that already exists is read directly
	// by the reconcile of any CR that names it.
	list, err := secrets.List(ctx, metav1.ListOptions{LabelSelector: unlabelledSecrets, Limit: 1})
	if err != nil {
		log.Error(err, "Listing Secrets to start watching failed", "namespace", namespace)
		return
	}
	w, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, watcherFunc(func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		o.LabelSelector = unlabelledSecrets
		return secrets.Watch(ctx, o)
	}))
	if err != nil {
		log.Error(err, "Watching Secrets failed", "namespace", namespace)
		return
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		switch ev.Type {
		case watch.Error:
			log.Info("Secret watch ended; starting again", "namespace", namespace, "status", ev.Object)
			return
		case watch.Added:
			if m, ok := ev.Object.(*metav1.PartialObjectMetadata); ok {
				s.publish(ctx, m)
			}
		}
	}
}

func (s *SecretCreations) publish(ctx context.Context, m *metav1.PartialObjectMetadata) {
	s.mu.Lock()
	subscribers := s.subscribers
	s.mu.Unlock()
	for _, ch := range subscribers {
		select {
		case ch <- event.GenericEvent{Object: m}:
		case <-ctx.Done():
			return
		}
	}
}

// watcherFunc adapts a function to client-go's cache.WatcherWithContext.
type watcherFunc func(context.Context, metav1.ListOptions) (watch.Interface, error)

func (f watcherFunc) WatchWithContext(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return f(ctx, o)
}

// watchReferencing adds to b a source of the created unlabelled Secrets that CRs of
// list's kind name in index. Without a SecretCreations (tests of one controller) it
// adds nothing, and the periodic retry finds such Secrets.
func (s *SecretCreations) watchReferencing(b *builder.Builder, c client.Client, list client.ObjectList, index string) *builder.Builder {
	if s == nil {
		return b
	}
	return b.WatchesRawSource(source.Channel(s.subscribe(), handler.EnqueueRequestsFromMapFunc(referencing(c, list, index))))
}
