package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// credentialClientIDIndex indexes CDCredentials cluster-wide by status.clientID, so a
// client id declared for both flows is found without reading any Secret outside the
// CR's own namespace.
const credentialClientIDIndex = "status.clientID"

func indexClientID(o client.Object) []string {
	if id := o.(*cdv1.CDCredential).Status.ClientID; id != "" {
		return []string{id}
	}
	return nil
}

// otherFlowSharers lists, as namespace/name, the CDCredentials anywhere in the cluster
// that declare the same client id as obj with the other flow.
func otherFlowSharers(ctx context.Context, c client.Reader, obj *cdv1.CDCredential, clientID string) ([]string, error) {
	list := &cdv1.CDCredentialList{}
	if err := c.List(ctx, list, client.MatchingFields{credentialClientIDIndex: clientID}); err != nil {
		return nil, err
	}
	var out []string
	for _, o := range list.Items {
		if o.Spec.Flow != obj.Spec.Flow && o.UID != obj.UID {
			out = append(out, o.Namespace+"/"+o.Name)
		}
	}
	sort.Strings(out)
	return out, nil
}

func sharedClientMessage(obj *cdv1.CDCredential, others []string) string {
	return fmt.Sprintf("Client id %s is declared for flow %s here and for the other flow by %s: Central Dispatch issues a separate client per flow, so one of them uses the wrong credential set (the incident's root cause). Give each flow its own client",
		obj.Status.ClientID, obj.Spec.Flow, strings.Join(others, ", "))
}

// sharersHandler enqueues the CDCredentials that share a client id with a changed one,
// under its old and its new client id, so the condition appears on all of them and
// clears when one is fixed or deleted.
func sharersHandler(c client.Reader) handler.EventHandler {
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
			if old.Status.ClientID != cur.Status.ClientID || old.Spec.Flow != cur.Spec.Flow {
				enqueue(ctx, q, old, cur)
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, q, e.Object)
		},
	}
}
