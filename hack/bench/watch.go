package main

import (
	"context"
	"math"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/manager"
)

// watcher follows, from outside the manager, which grants are Ready and when each
// output Secret's token expires (the metadata of output Secrets is enough: the expiry
// is an annotation). It keeps two small maps, not the objects.
type watcher struct {
	mu      sync.Mutex
	ready   map[string]bool
	expires map[string]time.Time
	stop    context.CancelFunc
}

func watch(cfg *rest.Config, ns string) (*watcher, error) {
	secretMeta := &metav1.PartialObjectMetadata{}
	secretMeta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	outputs := labels.SelectorFromSet(labels.Set{cdv1.SecretTypeLabel: cdv1.SecretTypeAccessToken})
	c, err := cache.New(cfg, cache.Options{
		Scheme:                       manager.Scheme(),
		DefaultNamespaces:            map[string]cache.Config{ns: {}},
		DefaultTransform:             cache.TransformStripManagedFields(),
		DefaultUnsafeDisableDeepCopy: ptr.To(true),
		ByObject:                     map[client.Object]cache.ByObject{secretMeta: {Label: outputs}},
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{ready: map[string]bool{}, expires: map[string]time.Time{}, stop: cancel}
	grants, err := c.GetInformer(ctx, &cdv1.CDUserGrant{})
	if err != nil {
		cancel()
		return nil, err
	}
	secrets, err := c.GetInformer(ctx, secretMeta)
	if err != nil {
		cancel()
		return nil, err
	}
	if _, err := grants.AddEventHandler(w.handler(w.onGrant)); err != nil {
		cancel()
		return nil, err
	}
	if _, err := secrets.AddEventHandler(w.handler(w.onSecret)); err != nil {
		cancel()
		return nil, err
	}
	go func() { _ = c.Start(ctx) }()
	c.WaitForCacheSync(ctx)
	return w, nil
}

func (w *watcher) handler(on func(obj any, deleted bool)) toolscache.ResourceEventHandlerFuncs {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { on(obj, false) },
		UpdateFunc: func(_, obj any) { on(obj, false) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			on(obj, true)
		},
	}
}

func (w *watcher) onGrant(obj any, deleted bool) {
	g, ok := obj.(*cdv1.CDUserGrant)
	if !ok {
		return
	}
	ready := !deleted && meta.IsStatusConditionTrue(g.Status.Conditions, cdv1.ReadyCondition)
	w.mu.Lock()
	defer w.mu.Unlock()
	if ready {
		w.ready[g.Name] = true
	} else {
		delete(w.ready, g.Name)
	}
}

func (w *watcher) onSecret(obj any, deleted bool) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return
	}
	exp, err := time.Parse(time.RFC3339, m.Annotations[cdv1.ExpiresAtAnnotation])
	w.mu.Lock()
	defer w.mu.Unlock()
	if deleted || err != nil {
		delete(w.expires, m.Name)
		return
	}
	w.expires[m.Name] = exp
}

// readyCount is how many grants are Ready.
func (w *watcher) readyCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.ready)
}

// stalest is the shortest time left on any output Secret's token, in seconds; NaN when
// there is no output Secret.
func (w *watcher) stalest(now time.Time) float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.expires) == 0 {
		return math.NaN()
	}
	least := math.Inf(1)
	for _, t := range w.expires {
		least = math.Min(least, t.Sub(now).Seconds())
	}
	return least
}

// waitReady polls until n grants are Ready.
func (w *watcher) waitReady(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for w.readyCount() < n {
		if time.Now().After(deadline) {
			return errTimeout("grants Ready", w.readyCount(), n, timeout)
		}
		time.Sleep(100 * time.Millisecond) // polling the watcher's state
	}
	return nil
}

// waitFresh polls until n output Secrets each have more than left before expiry.
func (w *watcher) waitFresh(n int, left, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		fresh := 0
		for _, t := range w.expires {
			if time.Until(t) > left {
				fresh++
			}
		}
		w.mu.Unlock()
		if fresh >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return errTimeout("output Secrets with a fresh token", fresh, n, timeout)
		}
		time.Sleep(500 * time.Millisecond) // polling the watcher's state
	}
}
