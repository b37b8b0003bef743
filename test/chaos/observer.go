package chaos

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/rotation"
)

// Observation is one state of one Secret as the harness's watch saw it. It keeps
// hashes of the token keys, never values.
type Observation struct {
	At      time.Time
	Secret  string
	Deleted bool
	Refresh string // hash of data.refresh_token
	Access  string // hash of data.access_token
	// Attempts is the count of the operator's in-flight mark on the stored refresh
	// token (DESIGN §6.2): 0 without a mark, 1 after a send, 2 after the one resend.
	Attempts int
}

// Observer records every state of the Secrets of one namespace, through a watch that
// survives API-server outages (the informer lists again when the server is back).
type Observer struct {
	mu  sync.Mutex
	obs []Observation
}

// Watch starts recording until ctx ends, and waits for the first list.
func (o *Observer) Watch(ctx context.Context, cs kubernetes.Interface, namespace string) {
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(namespace))
	inf := f.Core().V1().Secrets().Informer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { o.record(obj, false) },
		UpdateFunc: func(_, obj any) { o.record(obj, false) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			o.record(obj, true)
		},
	})
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
}

func (o *Observer) record(obj any, deleted bool) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	o.Add(observe(s, deleted, time.Now()))
}

func observe(s *corev1.Secret, deleted bool, at time.Time) Observation {
	o := Observation{
		At: at, Secret: s.Name, Deleted: deleted,
		Refresh: cdsandbox.TokenHash(string(s.Data["refresh_token"])),
		Access:  cdsandbox.TokenHash(string(s.Data["access_token"])),
	}
	if rt := s.Data["refresh_token"]; len(rt) > 0 {
		if m := rotation.ReadMark(s.Annotations); m.Hash == rotation.Hash(string(rt)) {
			o.Attempts = m.Attempts
		}
	}
	return o
}

// Add records an observation made elsewhere (the final listing).
func (o *Observer) Add(ob Observation) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.obs = append(o.obs, ob)
}

// Observations returns a copy of what was seen, in the order it was seen.
func (o *Observer) Observations() []Observation {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Observation(nil), o.obs...)
}
