package integration

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// The manager's memory is mostly its cache: what the controllers never read must not
// be kept there, and dropping it must not change what is stored.
func TestTheCacheHoldsNoManagedFieldsNoLastAppliedCopyOfCRsAndNoOutputData(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	rt := f.idp.SeedGrant(loginClientID, "acme@carrier.example", []string{"marketplace", "offline_access"})
	rs := refreshSecret(f.ns, "acme-refresh", rt)
	rs.Annotations = map[string]string{lastApplied: `{"kind":"Secret"}`}
	create(t, rs)
	g := userGrant(f.ns, "acme", "login", "acme-refresh")
	g.Annotations = map[string]string{lastApplied: `{"kind":"CDUserGrant"}`}
	create(t, g)
	m := startManager(t, f.opts)
	eventually(t, 20*time.Second, "the first rotation", f.rotations("acme", 1))

	objs := []struct {
		obj client.Object
		// keepsLastApplied: Secrets are updated whole, so the cache keeps their annotations.
		keepsLastApplied bool
	}{
		{&cdv1.CDUserGrant{}, false}, {&cdv1.CDCredential{}, false},
		{&corev1.Secret{}, true}, {&corev1.Secret{}, true}, {&corev1.Secret{}, true},
	}
	names := []string{"acme", "login", "acme-refresh", "acme-token", "login-client"}
	for i, o := range objs {
		key := types.NamespacedName{Namespace: f.ns, Name: names[i]}
		server := o.obj.DeepCopyObject().(client.Object)
		if err := k8s.Get(context.Background(), key, server); err != nil {
			t.Fatal(err)
		}
		if len(server.GetManagedFields()) == 0 {
			t.Fatalf("%T %s has no managedFields on the server: the test proves nothing", server, key.Name)
		}
		if err := m.GetCache().Get(context.Background(), key, o.obj); err != nil {
			t.Fatalf("%T %s not in the cache: %v", o.obj, key.Name, err)
		}
		if mf := o.obj.GetManagedFields(); len(mf) != 0 {
			t.Errorf("the cache holds %d managedFields entries of %T %s", len(mf), o.obj, key.Name)
		}
		if names[i] == "acme-token" {
			// Nor the output Secret's data, every customer's access token among it: the
			// operator writes tokens from answers.
			for _, k := range []string{cdv1.AccessTokenKey, cdv1.AuthorizationKey} {
				if len(server.(*corev1.Secret).Data[k]) == 0 {
					t.Fatalf("the output Secret on the server has no %s: the test proves nothing", k)
				}
			}
			if d := o.obj.(*corev1.Secret).Data; len(d) != 0 {
				t.Errorf("the cache holds %d keys of the output Secret's data", len(d))
			}
		}
		_, onServer := server.GetAnnotations()[lastApplied]
		_, cached := o.obj.GetAnnotations()[lastApplied]
		if names[i] == "acme" || names[i] == "acme-refresh" {
			if !onServer {
				t.Errorf("%s lost its last-applied-configuration on the server", key.Name)
			}
			if cached != o.keepsLastApplied {
				t.Errorf("%s: last-applied-configuration cached %v, want %v", key.Name, cached, o.keepsLastApplied)
			}
		}
	}
}

// The field indexes that map a changed Secret or CDCredential to the CRs naming it are
// looked up within one namespace, and hold nothing else: an all-namespaces entry per CR
// would be a second index set per grant.
func TestReferencingFindsCRsThroughNamespacedIndexes(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	f.addGrant("acme")
	create(t, userGrant(f.ns, "globex", "login", "globex-refresh")) // its Secret is still to come
	m := startManager(t, f.opts)
	eventually(t, 20*time.Second, "the first rotation", f.rotations("acme", 1))

	lookups := []struct{ field, value string }{
		{"spec.refreshTokenSecretRef.name", "acme-refresh"},
		{"spec.credentialRef.name", "login"},
	}
	for _, l := range lookups {
		byName := func(opts ...client.ListOption) []string {
			t.Helper()
			list := &cdv1.CDUserGrantList{}
			if err := m.GetClient().List(context.Background(), list, append(opts, client.MatchingFields{l.field: l.value})...); err != nil {
				t.Fatalf("listing by %s: %v", l.field, err)
			}
			var names []string
			for _, g := range list.Items {
				names = append(names, g.Name)
			}
			slices.Sort(names) // an index set has no order
			return names
		}
		want := []string{"acme"}
		if l.field == "spec.credentialRef.name" {
			want = []string{"acme", "globex"}
		}
		if diff := cmp.Diff(want, byName(client.InNamespace(f.ns))); diff != "" {
			t.Errorf("grants in the namespace naming %s %s (-want +got):\n%s", l.field, l.value, diff)
		}
		if got := byName(); len(got) != 0 {
			t.Errorf("the index %s holds all-namespaces entries: %v", l.field, got)
		}
	}
	clients := &cdv1.CDCredentialList{}
	if err := m.GetClient().List(context.Background(), clients, client.InNamespace(f.ns), client.MatchingFields{"spec.clientSecretRef.name": "login-client"}); err != nil {
		t.Fatal(err)
	}
	if len(clients.Items) != 1 || clients.Items[0].Name != "login" {
		t.Errorf("credentials naming the Secret login-client: %v, want [login]", clients.Items)
	}
}

// Built-in types (Secrets, Events, Leases) travel as protobuf on the manager's API
// connection, which costs less to decode than JSON; CRs can only be read as JSON. A
// status write and the output Secret's server-side apply (whose whole answer
// client.Apply reads as JSON) ask for the metadata of the answer only, in protobuf. No
// answer comes gzipped: from Kubernetes 1.37 the API server gzips every event of a
// watch stream on its own (WatchListCompression), at a CPU cost to both ends.
func TestBuiltInTypesTravelAsProtobufAndCRsAsJSON(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	rec := &contentTypes{seen: map[string]string{}}
	wrapped := rest.CopyConfig(cfg)
	wrapped.Wrap(func(rt http.RoundTripper) http.RoundTripper { return rec.wrap(rt) })
	startManagerWith(t, wrapped, f.opts)
	f.addGrant("acme")
	eventually(t, 20*time.Second, "the first rotation", f.rotations("acme", 1))

	want := map[string]string{
		"GET secrets (list, watch)":      runtime.ContentTypeProtobuf,
		"PUT secrets":                    runtime.ContentTypeProtobuf,
		"PATCH secrets":                  runtime.ContentTypeProtobuf, // the output's apply; its answer's metadata only
		"GET cdusergrants (list, watch)": runtime.ContentTypeJSON,
		"PATCH cdusergrants":             runtime.ContentTypeProtobuf, // status; the answer's metadata only
	}
	got := rec.snapshot(keysOf(want))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("response content types by request (-want +got):\n%s", diff)
	}
	if gzipped := rec.gzippedKinds(); len(gzipped) > 0 {
		t.Errorf("answers that came gzipped: %v", gzipped)
	}
}

// contentTypes records the content type of the manager's API responses, by method and
// resource, and which of them came gzipped.
type contentTypes struct {
	mu      sync.Mutex
	seen    map[string]string
	gzipped map[string]bool
}

func (c *contentTypes) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		if err != nil || resp.StatusCode >= 300 {
			return resp, err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		c.seen[requestKind(req)] = strings.Split(resp.Header.Get("Content-Type"), ";")[0]
		// The transport asked for gzip itself, so it takes the encoding off the answer
		// and says so here.
		if resp.Uncompressed {
			if c.gzipped == nil {
				c.gzipped = map[string]bool{}
			}
			c.gzipped[requestKind(req)] = true
		}
		return resp, err
	})
}

func (c *contentTypes) gzippedKinds() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	kinds := slices.Collect(maps.Keys(c.gzipped))
	slices.Sort(kinds)
	return kinds
}

func (c *contentTypes) snapshot(keys []string) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]string{}
	for _, k := range keys {
		if v, ok := c.seen[k]; ok {
			out[k] = v
		}
	}
	return out
}

// requestKind is "<method> <resource>", with " (list, watch)" for collection reads.
func requestKind(req *http.Request) string {
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	// .../namespaces/<ns>/<resource>[/<name>[/status]]
	for i := range parts {
		if parts[i] != "namespaces" || i+2 >= len(parts) {
			continue
		}
		resource := parts[i+2]
		if i+3 >= len(parts) {
			return fmt.Sprintf("%s %s (list, watch)", req.Method, resource)
		}
		return req.Method + " " + resource
	}
	return req.Method + " " + req.URL.Path
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

func keysOf(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
