package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"

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
	if err := r.List(ctx, list, client.MatchingFields{credentialClientIDIndex: cred.Status.ClientID}); err != nil {
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

// sharersHandler enqueues the CDCredentials that share a client id with a changed one,
// under its old and its new id, so the condition appears on all of them and clears when
// one is fixed or deleted. keyID is this manager's key id (secrets.KeyID).
func sharersHandler(c client.Reader, keyID string) handler.EventHandler {
	enqueue := func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], objs ...client.Object) {
		for _, o := range objs {
			cred, ok := o.(*cdv1.CDCredential)
			if !ok || cred.Status.ClientID == "" {
				continue
			}
			list := &cdv1.CDCredentialList{}
			if err := c.List(ctx, list, client.MatchingFields{credentialClientIDIndex: cred.Status.ClientID}); err != nil {
				ctrl.LoggerFrom(ctx).Error(err, "Listing CDCredentials by client id failed")
				continue
			}
			for _, other := range list.Items {
				if other.UID != cred.UID {
					q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&other)})
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
			if old.Status.ClientID != cur.Status.ClientID || secretChangedUnder(keyID, old.Status.ClientSecretHash, cur.Status.ClientSecretHash) || old.Spec.Flow != cur.Spec.Flow {
				enqueue(ctx, q, old, cur)
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, q, e.Object)
		},
	}
}

// secretChangedUnder reports whether a CDCredential's client-secret hash went from old
// to cur with neither written under another key than keyID's. A hash of another key is
// another install's write (both select this CR): it cannot be compared with this
// manager's, and re-queuing the sharers on it, or on this manager's write over it, would
// have the two installs re-queue each other's CRs for ever, each rewriting the hash. A
// hash of the earlier format, naming no key, counts as this manager's: it is rewritten
// once, and its sharers are looked at again once.
func secretChangedUnder(keyID, old, cur string) bool {
	if old == cur {
		return false
	}
	for _, h := range []string{old, cur} {
		if id, ok := secrets.HashKeyID(h); ok && id != keyID {
			return false
		}
	}
	return true
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
