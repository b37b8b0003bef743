package controllers

import (
	"errors"
	"sync"

	"k8s.io/apimachinery/pkg/types"

	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// refusals remembers, per CR, the token request the identity server last refused for
// good (invalid_client, a grant type not allowed, …). A terminal error stops retries,
// but a CR is also brought back by events that do not change its request: a CR sharing
// its client id gaining a status, a restarted watch. Sending the same request again
// then would only repeat the refusal, a retry storm against Central Dispatch in slow
// motion. A changed spec, client Secret or endpoint is a new request and is sent.
// The memory is per process: a restarted manager tries once more.
type refusals struct{ m sync.Map } // types.NamespacedName -> refusal

type refusal struct {
	request string // what was sent, client secret included, as a hash
	err     error
	hint    string
}

// lookup returns the refusal of request, if that very request was refused.
func (r *refusals) lookup(key types.NamespacedName, request string) (refusal, bool) {
	v, ok := r.m.Load(key)
	if !ok || v.(refusal).request != request {
		return refusal{}, false
	}
	return v.(refusal), true
}

// record remembers the outcome of request: a terminal refusal, or nothing to remember.
func (r *refusals) record(key types.NamespacedName, request string, err error, hint string) {
	var te *tokenclient.Error
	if errors.As(err, &te) && te.Terminal() {
		r.m.Store(key, refusal{request: request, err: err, hint: hint})
		return
	}
	r.m.Delete(key)
}

func (r *refusals) forget(key types.NamespacedName) { r.m.Delete(key) }
