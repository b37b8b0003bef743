package controllers

import (
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
)

// result is a token the identity server issued that is not fully stored yet (DESIGN
// §6.3). It lives in memory only, for as long as the process does: a new refresh token
// is the customer's only session once the old one is spent, and a new access token is
// not requested while the last one cannot be stored.
type result struct {
	// key is the CR's namespace and name: a CR deleted, or deleted and created again
	// under a new UID, leaves its access token to nobody (dropAccess).
	key types.NamespacedName
	// refresh is the new refresh token, until it is stored; nil for a CDCredential and
	// once stored.
	refresh *heldRefresh
	// access is the new access token, until it is in the output Secret.
	access *issued
	// request is the request that was answered, for the failure memory.
	request string
	// after is, for a grant, the request the next pass makes once the refresh token
	// the answer left live is stored: a failure remembered under the spent token's
	// request would be taken for one of a new login, which goes at once.
	after string
	// answer is, for a result without an access token, the unusable answer that carried
	// the new refresh token: the pass that stores the token reports it.
	answer *rotation.Outcome
	// refreshLife is the life of the grant's live refresh token after the request
	// (heldRefresh.life), kept once that token is stored, for the failures reported
	// after it.
	refreshLife rotation.Schedule
}

// heldRefresh is a new refresh token and where it goes.
type heldRefresh struct {
	// grant is the grant it belongs to, to recreate a deleted Secret bound to it.
	grant  *cdv1.CDUserGrant
	secret types.NamespacedName
	key    string
	token  string
	// sent is the refresh token the request sent, which the Secret still holds unless
	// a new login was stored meanwhile. When the server did not rotate (token is empty)
	// it is still the customer's session: it is what a Secret deleted meanwhile is
	// created again with, and what is revoked if the grant went with it.
	sent string
	// marked is the Secret as the in-flight mark left it, so the first attempt to store
	// the new token needs no read; later attempts read it again.
	marked *corev1.Secret
	// deadline is when another process may take the mark for a dead one's and resend
	// the spent token: storing this token after that could overwrite its outcome.
	deadline time.Time
	// life is when the live refresh token (session) was issued and dies, from the
	// answer's refresh_expires_in; zero when it has no known limit. It is recorded in
	// the write that stores the token (secrets.SetRefreshLife), at no write of its own.
	life rotation.Schedule
}

// session is the customer's live refresh token after the request: the new one, or the
// one sent when the server did not rotate.
func (h *heldRefresh) session() string {
	if h.token != "" {
		return h.token
	}
	return h.sent
}

// issued is an access token to write into an output Secret.
type issued struct {
	token     string
	tokenType string
	scopes    []string
	schedule  rotation.Schedule
	clamp     string
	// fingerprint is what the token was requested for.
	fingerprint string
	// subject is the access token's `sub` (grants).
	subject string
	// rotated says a refresh token was spent for it (grants).
	rotated bool
}

// heldResults holds results by CR UID. Safe for concurrent use.
type heldResults struct {
	mu sync.Mutex
	m  map[types.UID]*result
}

func (h *heldResults) get(uid types.UID) (*result, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, ok := h.m[uid]
	return r, ok
}

func (h *heldResults) has(uid types.UID) bool {
	_, ok := h.get(uid)
	return ok
}

// put holds r for the CR obj.
func (h *heldResults) put(obj client.Object, r *result) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[types.UID]*result{}
	}
	r.key = client.ObjectKeyFromObject(obj)
	h.m[obj.GetUID()] = r
}

func (h *heldResults) drop(uid types.UID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.m, uid)
}

// dropAccess drops the results held for the CR named key under any UID but keep (none:
// the CR is gone) that hold no refresh token. Their access token is of use only to that
// CR, written into its output, and a CR deleted (or deleted and created again) is never
// reconciled under its old UID again: held on, the token would stay in memory for the
// life of the process. A held refresh token is the customer's session and is not dropped
// here: it is stored for a grant that is gone (storeOrphan, storeInherited).
func (h *heldResults) dropAccess(key types.NamespacedName, keep types.UID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for uid, r := range h.m {
		if r.key == key && uid != keep && r.refresh == nil {
			delete(h.m, uid)
		}
	}
}

// refreshTokens lists the held refresh tokens not stored yet, for Drain.
func (h *heldResults) refreshTokens() map[types.UID]*result {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[types.UID]*result{}
	for uid, r := range h.m {
		if r.refresh != nil {
			out[uid] = r
		}
	}
	return out
}

// expiredBeforeStored is the outcome of a held access token that expired before it
// could be written, remembered under request, the next pass's (held.request, the one
// answered, carries its memory over); ok is false while it has not.
func expiredBeforeStored(held *result, request string, now time.Time) (expiredUnstored, bool) {
	s := held.access.schedule
	if now.Before(s.ExpiresAt) {
		return expiredUnstored{}, false
	}
	return expiredUnstored{lifetime: s.ExpiresAt.Sub(s.Issued), request: request, answered: held.request, refreshLife: held.refreshLife}, true
}

// retriedAs is the failure memory prev, of the request the last pass sent (answered),
// as the memory of next, the request the next pass makes once the answer's new refresh
// token is stored (an unusable answer that carried one, or an access token that expired
// before it was stored). The successor is not a customer's new login, which would go at once
// with a fresh count (rotation.Fail, SameSpec): it is the same request retried, so its
// failure backs off, and counts on, as a retry of answered would. A memory of another
// request is left as it is.
func retriedAs(prev *rotation.Failure, answered, next string) *rotation.Failure {
	if prev == nil || prev.Request != answered {
		return prev
	}
	f := *prev
	f.Request = next
	return &f
}
