package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/eventnote"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

// deleteFinalizer holds a grant with deletionPolicy Delete until its refresh token is
// revoked and its Secret deleted. Grants that retain their token carry no finalizer, so
// deleting them (or uninstalling the operator) never waits on the operator.
const deleteFinalizer = "cd.credops.io/delete-refresh-token"

// deletion carries out spec.deletionPolicy: it keeps the finalizer in step with the
// policy and, once the grant is being deleted, does what the policy says then.
// done is true when the grant is being deleted and nothing else is to be done.
func (r *CDUserGrantReconciler) deletion(ctx context.Context, grant *cdv1.CDUserGrant) (done bool, err error) {
	has := controllerutil.ContainsFinalizer(grant, deleteFinalizer)
	if grant.DeletionTimestamp.IsZero() {
		want := grant.Spec.DeletionPolicy == cdv1.DeletionPolicyDelete
		if want == has {
			return false, nil
		}
		return false, r.patchFinalizer(ctx, grant, want)
	}
	// The spec at deletion decides, not the finalizer: a grant switched to Retain and
	// deleted before a pass dropped the finalizer (at once, or while the operator was
	// down) keeps its session, as one without the finalizer would.
	if has && grant.Spec.DeletionPolicy == cdv1.DeletionPolicyDelete {
		if err := r.revokeAndDelete(ctx, grant); err != nil {
			return true, err
		}
		return true, r.patchFinalizer(ctx, grant, false)
	}
	err = r.keepSession(ctx, grant)
	if has {
		// A token that could not be stored stays held; the pass that finds the grant
		// gone tries again (storeOrphan). The grant's deletion does not wait on it.
		err = kerrors.NewAggregate([]error{err, r.patchFinalizer(ctx, grant, false)})
	}
	return true, err
}

// keepSession stores a new refresh token still held for a grant being deleted that
// keeps its session (Retain, or Delete set too late for the finalizer): it is the
// customer's live session, and the Secret left behind must hold it, not the spent one.
// A grant with any finalizer gets here before it is gone.
func (r *CDUserGrantReconciler) keepSession(ctx context.Context, grant *cdv1.CDUserGrant) error {
	if err := r.storeHeld(ctx, func(uid types.UID, _ *heldRefresh) bool { return uid == grant.UID }); err != nil {
		return err
	}
	r.held.drop(grant.UID) // an access token still held has no use now
	return nil
}

// revokeAndDelete carries out deletionPolicy Delete: it stores a new refresh token still
// held (the live session, which is the one to revoke, not the spent one), then revokes
// and deletes the grant's refresh token.
func (r *CDUserGrantReconciler) revokeAndDelete(ctx context.Context, grant *cdv1.CDUserGrant) error {
	now := r.Clock.Now()
	if r.finalized.has(string(grant.UID), now) {
		// This process revoked and deleted it already; the pass runs again because the
		// finalizer's removal failed or the cache has not seen it yet (the Secret's
		// delete event requeued the grant at once). The Secret is gone for that reason,
		// not because something deleted it first: nothing to do, nothing to say.
		return nil
	}
	// A held token whose Secret is gone is revoked by storeHeld (grantGone) instead.
	res, held := r.held.get(grant.UID)
	held = held && res.refresh != nil
	revokedHeld := false
	if err := r.storeHeld(ctx, func(uid types.UID, _ *heldRefresh) bool { return uid == grant.UID }); err != nil {
		// The token is needed only to revoke it: when the API server refuses to store
		// it (an admission policy, a quota), revoke it from memory rather than hold the
		// grant's deletion for ever. The Secret then holds a spent token.
		ctrl.LoggerFrom(ctx).Info("Could not store the new refresh token of a grant being deleted; revoking it from memory (deletionPolicy Delete)", "error", err.Error())
		if held {
			r.revoke(ctx, grant, res.refresh.session())
			revokedHeld = true
		}
	}
	r.held.drop(grant.UID) // an access token still held has no use now
	// A grant still waiting for its first login (or a new one after its Secret went)
	// had no session the operator knew of when the deletion came: a Secret missing now
	// took nothing unrevoked with it.
	awaiting := meta.IsStatusConditionTrue(grant.Status.Conditions, cdv1.ReauthorizationRequiredCondition) &&
		meta.FindStatusCondition(grant.Status.Conditions, cdv1.ReauthorizationRequiredCondition).Reason == cdv1.RefreshTokenMissingReason
	if err := r.deleteRefreshToken(ctx, grant, !revokedHeld, !held && !awaiting); err != nil {
		return err
	}
	r.finalized.mark(string(grant.UID), now, now.Add(finalizedRemembered))
	return nil
}

// finalizedRemembered is how long a grant whose token a deletion pass revoked and
// deleted is remembered: long enough for the finalizer's removal to be retried and seen.
const finalizedRemembered = 10 * time.Minute

// patchFinalizer adds (add) or removes this operator's finalizer and no other. The
// grant comes from the cache, which may not show yet a finalizer another controller
// added (a backup tool's, a policy engine's, foregroundDeletion's), and a merge patch
// replaces metadata.finalizers whole.
func (r *CDUserGrantReconciler) patchFinalizer(ctx context.Context, grant *cdv1.CDUserGrant, add bool) error {
	var patch client.Patch
	if add {
		// Nothing is done for the grant before the finalizer is on: a stale grant
		// meets a conflict, and the pass is tried again on a fresh one.
		patch = client.MergeFromWithOptions(grant.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.AddFinalizer(grant, deleteFinalizer)
	} else {
		// Removal follows the revocation: a conflict with any write since the cache's
		// copy (the last pass's own status patch) would run the deletion again. This
		// patch tests and removes our entry alone, so only a finalizer removed before
		// ours fails it (the API server answers 422, the pass is tried again).
		var err error
		if patch, err = removeFinalizerPatch(grant.Finalizers, deleteFinalizer); err != nil {
			return err
		}
		controllerutil.RemoveFinalizer(grant, deleteFinalizer)
	}
	return client.IgnoreNotFound(r.Patch(ctx, grant, patch))
}

// removeFinalizerPatch is a JSON patch (RFC 6902) that removes finalizer from a list
// that was finalizers when read, failing if it has moved since.
func removeFinalizerPatch(finalizers []string, finalizer string) (client.Patch, error) {
	type op struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value string `json:"value,omitempty"`
	}
	path := fmt.Sprintf("/metadata/finalizers/%d", slices.Index(finalizers, finalizer))
	ops, err := json.Marshal([]op{{Op: "test", Path: path, Value: finalizer}, {Op: "remove", Path: path}})
	return client.RawPatch(types.JSONPatchType, ops), err
}

// deleteRefreshToken revokes the grant's refresh token at the identity server when the
// credential has a revocationURL (and revokeStored: not when the live token was revoked
// from memory), then deletes the Secret — only one bound to this grant, never
// another's. A failed revocation is said in an event; the Secret is deleted all the
// same, since the grant that could use it is gone. sayMissing: a Secret already gone
// took an unrevoked token with it, which is said too.
func (r *CDUserGrantReconciler) deleteRefreshToken(ctx context.Context, grant *cdv1.CDUserGrant, revokeStored, sayMissing bool) error {
	ref := grant.Spec.RefreshTokenSecretRef
	// Read around the cache: it may not show yet the new refresh token this pass just
	// stored, and the spent token is not the one to revoke.
	live := secrets.Readers{Cache: r.APIReader, API: r.APIReader}
	s, err := live.Get(ctx, types.NamespacedName{Namespace: grant.Namespace, Name: ref.Name}, cdv1.SecretTypeRefreshToken)
	if _, problem := refreshProblem(err, ref.Name, ""); problem != nil {
		return problem
	}
	switch {
	case apierrors.IsNotFound(err):
		// Most often a namespace being deleted: the namespace controller deletes its
		// Secrets while the grant waits on its finalizer. Its event cannot be recorded
		// then (a Terminating namespace refuses creates); the log line says it.
		if revokeStored && sayMissing {
			r.notRevoked(ctx, grant, "its refresh-token Secret "+ref.Name+" was not found, deleted before the grant")
		}
		return nil
	case err != nil || !secrets.BoundTo(s, grant):
		ctrl.LoggerFrom(ctx).Info("Left the refresh-token Secret of a deleted grant alone: not opted in, or never bound to this grant (deletionPolicy Delete)", "secret", ref.Name)
		return nil
	}
	if revokeStored {
		if token, err := secrets.Value(s, secrets.RefreshKey(grant)); err == nil {
			r.revoke(ctx, grant, token)
		} else {
			r.notRevoked(ctx, grant, "its refresh-token Secret "+ref.Name+" holds no usable token: "+err.Error())
		}
	}
	err = r.Delete(ctx, s, client.Preconditions{UID: &s.UID})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	ctrl.LoggerFrom(ctx).Info("Deleted the refresh-token Secret of a deleted grant (deletionPolicy Delete)", "secret", ref.Name)
	return nil
}

// revoke revokes token at the grant's CDCredential's revocationURL. When it cannot even
// be sent, an event and a log line say why: the session stays valid at the identity
// server, and nobody must take it for revoked. Whatever the outcome, the caller goes on
// (a deletion, a namespace's above all, never waits on a revocation).
func (r *CDUserGrantReconciler) revoke(ctx context.Context, grant *cdv1.CDUserGrant, token string) {
	if r.Revoker == nil {
		return
	}
	cred, why := r.revocationCredential(ctx, grant)
	if why != "" {
		r.notRevoked(ctx, grant, why)
		return
	}
	c, err := r.readers().ReadClient(ctx, cred)
	if err == nil {
		err = r.Revoker.Revoke(ctx, c.Endpoint, cred.Spec.RevocationURL, token, "refresh_token")
	}
	if err != nil {
		r.Recorder.Eventf(eventTarget(grant), nil, corev1.EventTypeWarning, cdv1.RevocationFailedReason, "Delete", "%s", eventnote.Of("Revoking the refresh token failed (%s); the refresh-token Secret is deleted all the same", err.Error()))
		return
	}
	r.Recorder.Eventf(eventTarget(grant), nil, corev1.EventTypeNormal, cdv1.RefreshTokenRevokedReason, "Delete", "%s", eventnote.Of("Revoked the refresh token at the identity server; deleting Secret %s", grant.Spec.RefreshTokenSecretRef.Name))
}

// revocationCredential reads the grant's CDCredential for a revocation, or says why
// there is none to send the token to. A CDCredential outside this manager's shard is not
// in the cache; a deletion is rare enough to ask the API server.
func (r *CDUserGrantReconciler) revocationCredential(ctx context.Context, grant *cdv1.CDUserGrant) (*cdv1.CDCredential, string) {
	name := grant.Spec.CredentialRef.Name
	key := types.NamespacedName{Namespace: grant.Namespace, Name: name}
	cred := &cdv1.CDCredential{}
	err := r.Get(ctx, key, cred)
	if apierrors.IsNotFound(err) {
		err = r.APIReader.Get(ctx, key, cred)
	}
	switch {
	case apierrors.IsNotFound(err):
		return nil, "CDCredential " + name + " was not found"
	case err != nil:
		return nil, "CDCredential " + name + " could not be read: " + err.Error()
	case cred.Spec.RevocationURL == "":
		return nil, "CDCredential " + name + " has no revocationURL"
	}
	return cred, ""
}

// notRevoked says that the grant's refresh token was not sent for revocation, and why.
func (r *CDUserGrantReconciler) notRevoked(ctx context.Context, grant *cdv1.CDUserGrant, why string) {
	ctrl.LoggerFrom(ctx).Info("The refresh token was not revoked; it stays valid at the identity server until it expires",
		"cdusergrant", klog.KObj(grant), "why", why)
	r.Recorder.Eventf(eventTarget(grant), nil, corev1.EventTypeWarning, cdv1.RefreshTokenNotRevokedReason, "Delete",
		"%s", eventnote.Of("The refresh token was not revoked (%s); it stays valid at the identity server until it expires", why))
}
