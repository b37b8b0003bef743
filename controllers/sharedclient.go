package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/eventnote"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

// credentialClientIDIndex indexes CDCredentials cluster-wide by status.clientID, so a
// client declared for both flows is found without reading any Secret.
const credentialClientIDIndex = "status.clientID"

func indexClientID(o client.Object) []string {
	if id := o.(*cdv1.CDCredential).Status.ClientID; id != "" {
		return []string{id}
	}
	return nil
}

// sharing lists the CDCredentials of the other flow that hold the same client: the
// same public id and the same secret (compared by keyed hash). Matching the id alone
// would let anyone flag another namespace's CRs by declaring their public id.
type sharing []types.NamespacedName

func (r *CDCredentialReconciler) sharers(ctx context.Context, cred *cdv1.CDCredential) (sharing, error) {
	if cred.Status.ClientID == "" || cred.Status.ClientSecretHash == "" {
		return nil, nil
	}
	list := &cdv1.CDCredentialList{}
	// Read only: anyone may declare any client id, so the list may be long.
	if err := r.List(ctx, list, client.MatchingFields{credentialClientIDIndex: cred.Status.ClientID}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	var out sharing
	for _, o := range list.Items {
		if o.Spec.Flow != cred.Spec.Flow && o.UID != cred.UID && o.Status.ClientSecretHash == cred.Status.ClientSecretHash {
			out = append(out, client.ObjectKeyFromObject(&o))
		}
	}
	slices.SortFunc(out, func(a, b types.NamespacedName) int { return strings.Compare(a.String(), b.String()) })
	return out, nil
}

// message names the sharers in the credential's own namespace and counts the others:
// who may read this CR's status may not know what other namespaces hold.
func (s sharing) message(cred *cdv1.CDCredential) string {
	var here []string
	elsewhere := 0
	for _, n := range s {
		if n.Namespace == cred.Namespace {
			here = append(here, n.Name)
		} else {
			elsewhere++
		}
	}
	var who []string
	if len(here) > 0 {
		who = append(who, "CDCredential "+strings.Join(here, ", ")+" in this namespace")
	}
	if elsewhere > 0 {
		who = append(who, fmt.Sprintf("%d CDCredential(s) in other namespaces", elsewhere))
	}
	return fmt.Sprintf("Client id %s is declared with the same client secret for flow %s here and for the other flow by %s: Central Dispatch issues a separate client per flow, so one of them uses the wrong credential set (the incident's root cause). Give each flow its own client",
		cred.Status.ClientID, cred.Spec.Flow, strings.Join(who, " and "))
}

// sharersHandler enqueues the CDCredentials that share a client with a changed one, as
// it was and as it is (its id, secret and flow), so the condition appears on all of them
// and clears when one is fixed or deleted: those of the other flow with the same id and
// secret hash, the ones sharers would name (or with no hash yet). Not every CDCredential
// declaring the id: anyone may declare any public id, and a namespace declaring a
// victim's in many CRs made every change of the victim's re-queue all of them, each
// listing all the others. keyID is this manager's key id (secrets.KeyID).
func sharersHandler(c client.Reader, keyID string) handler.EventHandler {
	rehashed := &rehashedOnce{seen: map[types.UID]string{}}
	enqueue := func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], objs ...client.Object) {
		for _, o := range objs {
			cred, ok := o.(*cdv1.CDCredential)
			if !ok || cred.Status.ClientID == "" || cred.Status.ClientSecretHash == "" {
				continue
			}
			list := &cdv1.CDCredentialList{}
			if err := c.List(ctx, list, client.MatchingFields{credentialClientIDIndex: cred.Status.ClientID}, client.UnsafeDisableDeepCopy); err != nil {
				ctrl.LoggerFrom(ctx).Error(err, "Listing CDCredentials by client id failed")
				continue
			}
			for i := range list.Items {
				other := &list.Items[i]
				// One without a hash yet may be writing its first: its own event can come
				// before this one's hash is in the cache, and find nothing to queue.
				hash := other.Status.ClientSecretHash
				if other.UID != cred.UID && other.Spec.Flow != cred.Spec.Flow && (hash == cred.Status.ClientSecretHash || hash == "") {
					q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(other)})
				}
			}
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, q, e.Object)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			old, cur := e.ObjectOld.(*cdv1.CDCredential), e.ObjectNew.(*cdv1.CDCredential)
			changed := old.Status.ClientID != cur.Status.ClientID || old.Spec.Flow != cur.Spec.Flow
			switch was, ok := hashChange(keyID, old.Status.ClientSecretHash, cur.Status.ClientSecretHash); {
			case ok:
				changed = true
			case was != "":
				changed = changed || rehashed.first(cur.UID, was)
			}
			if changed {
				enqueue(ctx, q, old, cur)
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			rehashed.forget(e.Object.GetUID())
			enqueue(ctx, q, e.Object)
		},
	}
}

// hashChange tells what a CDCredential's client-secret hash going from old to cur means
// for its sharers. ok: a change this manager compares (both under its key, or the earlier
// format that named no key, which is rewritten once). Otherwise was names the other key
// when this manager wrote its hash over one of another key: after a key rotation that
// key is this install's own old one, and the sharers still hold hashes under it (each
// compared nothing on its start-up pass and cleared its condition), so they must be
// looked at again; but the other key may be another install's that selects the same CRs
// and writes its hash back, which is why rehashedOnce lets that happen once. A hash
// another install wrote (cur under another key) is nothing to compare: both empty.
func hashChange(keyID, old, cur string) (was string, ok bool) {
	if old == cur {
		return "", false
	}
	if id, named := secrets.HashKeyID(cur); named && id != keyID {
		return "", false
	}
	if id, named := secrets.HashKeyID(old); named && id != keyID {
		return id, false
	}
	return "", true
}

// rehashedOnce remembers, per CDCredential, the other key whose hash this manager last
// wrote over, so that a write over another install's hash re-queues the sharers once, not
// every time the two installs write over each other.
type rehashedOnce struct {
	mu   sync.Mutex
	seen map[types.UID]string
}

func (r *rehashedOnce) first(uid types.UID, otherKeyID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen[uid] == otherKeyID {
		return false
	}
	r.seen[uid] = otherKeyID
	return true
}

func (r *rehashedOnce) forget(uid types.UID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.seen, uid)
}

// anotherInstallHandler warns, once per write, when another operator install with
// another key writes a CDCredential this manager reconciles: the write leaves a
// client-secret hash under another key id. Only a write seen while running counts: a hash
// found at start may be this install's own under a key rotated since. It enqueues
// nothing: a pass would only write this manager's hash back, for the other install to
// write its own again.
func anotherInstallHandler(rec events.EventRecorder, keyID string) handler.EventHandler {
	return handler.Funcs{
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, _ workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			old, cur := e.ObjectOld.(*cdv1.CDCredential), e.ObjectNew.(*cdv1.CDCredential)
			id, ok := secrets.HashKeyID(cur.Status.ClientSecretHash)
			if !ok || id == keyID || cur.Status.ClientSecretHash == old.Status.ClientSecretHash {
				return
			}
			ctrl.LoggerFrom(ctx).Info("Another operator install with another key writes this CDCredential: installs must not select the same objects, or must share one key Secret",
				"cdcredential", klog.KObj(cur), "keyID", id, "ownKeyID", keyID)
			rec.Eventf(eventTarget(cur), nil, corev1.EventTypeWarning, cdv1.AnotherInstallReason, "Reconcile",
				"%s", eventnote.Of("Another operator install, with another key (id %s; this install's is %s), writes this CDCredential: two installs must never select the same objects (or, while moving between installs, must share one key Secret)", id, keyID))
		},
	}
}
