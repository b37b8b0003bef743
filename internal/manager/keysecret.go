package manager

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// keyDataKey is the data key of the operator's key in its Secret.
const keyDataKey = "hmac-key"

// loadOrCreateKey reads the key all replicas share from its Secret, creating it on first
// start. Two replicas starting at once both try to create it; the loser reads the
// winner's. The Secret carries no opt-in label, so no CR can read it, nor write it as its
// output (secrets.CheckOwner), and the cache does not hold it.
func loadOrCreateKey(ctx context.Context, cfg *rest.Config, key types.NamespacedName) ([]byte, error) {
	if key.Namespace == "" {
		return nil, fmt.Errorf("the operator's namespace is unknown: set the POD_NAMESPACE environment variable (the chart sets it from the Downward API) or --key-secret=<namespace>/<name>")
	}
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return nil, err
	}
	s := &corev1.Secret{}
	err = c.Get(ctx, key, s)
	if apierrors.IsNotFound(err) {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		s = keySecret(key, b)
		err = c.Create(ctx, s)
		if apierrors.IsAlreadyExists(err) {
			err = c.Get(ctx, key, s)
		}
		if apierrors.IsNotFound(err) {
			// Creating in a namespace that does not exist; the manager may not read
			// namespaces, so this is where it learns.
			return nil, fmt.Errorf("the operator's namespace %q does not exist: create it, or set POD_NAMESPACE or --key-secret=<namespace>/<name> to the namespace the operator runs in", key.Namespace)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("reading or creating the operator's key Secret %s: %w", key, err)
	}
	if len(s.Data[keyDataKey]) < 32 {
		return nil, fmt.Errorf("the operator's key Secret %s holds no %s of at least 32 bytes", key, keyDataKey)
	}
	return s.Data[keyDataKey], nil
}

// keySecret is the operator's key Secret holding key.
func keySecret(name types.NamespacedName, key []byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: name.Namespace, Name: name.Name, Labels: map[string]string{cdv1.ManagedByLabel: cdv1.ManagedByValue}},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{keyDataKey: key},
	}
}

// errKeyReplaced ends the manager: its key Secret holds a key other than the one it
// signs with.
var errKeyReplaced = errors.New("the operator's key Secret holds another key: this process signs with a stale one")

// keyKeeper keeps the operator's key Secret holding the key this process read at start.
// Nothing else owns that Secret (the chart does not render it), so a GitOps prune or a
// cleanup may delete it; if nothing put it back, the next replica to start would create
// a key of its own, and the replicas would refuse each other's authorization links and
// rewrite every client-secret hash at each failover. Every replica runs one, leader or
// not, as every replica serves the callback.
type keyKeeper struct {
	name    types.NamespacedName
	key     []byte
	secrets kubernetes.Interface
	clock   clock.Clock
}

// keyRetryMin and keyRetryMax bound the wait before a failed re-creation is tried again.
const (
	keyRetryMin = time.Second
	keyRetryMax = time.Minute
)

// NeedLeaderElection is false: a follower whose key went stale would refuse the
// leader's links.
func (k *keyKeeper) NeedLeaderElection() bool { return false }

// Start watches the key Secret, that one object only (a field selector on its name,
// which is also what a Role restricted to its name allows listing and watching), and
// puts it back whenever it is missing. A Secret holding another key, someone having
// rotated it, ends the manager: the restarted pod reads the new key.
func (k *keyKeeper) Start(ctx context.Context) error {
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	store, informer := k.informer(poke)
	go informer.RunWithContext(ctx)
	if !toolscache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return nil
	}
	poke() // deleted between the read at start and the first list: no event says so
	log := ctrl.Log.WithName("key-secret").WithValues("secret", klog.KRef(k.name.Namespace, k.name.Name))
	var retry <-chan time.Time
	wait := keyRetryMin
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-retry:
		}
		obj, exists, _ := store.GetByKey(k.name.String())
		err := k.keep(ctx, obj, exists, log)
		switch {
		case errors.Is(err, errKeyReplaced):
			log.Error(nil, "The operator's key Secret holds another key: exiting, so that the restarted manager reads it (authorization links sent before are refused, and every client-secret hash in status is written once anew)")
			return fmt.Errorf("%w: %s", err, k.name)
		case err != nil:
			log.Error(err, "Recreating the operator's key Secret failed; retrying", "after", wait)
			retry, wait = k.clock.After(wait), min(2*wait, keyRetryMax)
		default:
			retry, wait = nil, keyRetryMin
		}
	}
}

// informer lists and watches the key Secret only, by a field selector on its name,
// calling changed on every event.
func (k *keyKeeper) informer(changed func()) (toolscache.Store, toolscache.Controller) {
	secrets := k.secrets.CoreV1().Secrets(k.name.Namespace)
	byName := fields.OneTermEqualSelector("metadata.name", k.name.Name).String()
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = byName
			return secrets.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = byName
			return secrets.Watch(ctx, o)
		},
	}
	return toolscache.NewInformerWithOptions(toolscache.InformerOptions{
		ListerWatcher: toolscache.ToListWatcherWithWatchListSemantics(lw, k.secrets),
		ObjectType:    &corev1.Secret{},
		Handler: toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { changed() },
			UpdateFunc: func(any, any) { changed() },
			DeleteFunc: func(any) { changed() },
		},
	})
}

// keep creates the key Secret when it is missing, with the key this process holds, and
// tells whether the one there holds another.
func (k *keyKeeper) keep(ctx context.Context, obj any, exists bool, log logr.Logger) error {
	if exists {
		if s, ok := obj.(*corev1.Secret); ok && !bytes.Equal(s.Data[keyDataKey], k.key) {
			return errKeyReplaced
		}
		return nil
	}
	_, err := k.secrets.CoreV1().Secrets(k.name.Namespace).Create(ctx, keySecret(k.name, k.key), metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// Another replica's, holding the same key, or someone else's: the watch brings
		// it, and it is compared then.
		return nil
	}
	if err != nil {
		return err
	}
	log.Info("Recreated the operator's key Secret, deleted while the manager ran, with the key every replica holds")
	return nil
}

// keepKey adds a keyKeeper for the key read from name to the manager.
func keepKey(mgr ctrl.Manager, name types.NamespacedName, key []byte, clk clock.Clock) error {
	cs, err := kubernetes.NewForConfigAndClient(mgr.GetConfig(), mgr.GetHTTPClient())
	if err != nil {
		return err
	}
	return mgr.Add(&keyKeeper{name: name, key: key, secrets: cs, clock: clk})
}
