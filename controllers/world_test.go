package controllers

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	goruntime "runtime"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

var epoch = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)

// fakeIssuer is a token endpoint that answers from a script and records what was sent.
type fakeIssuer struct {
	mu       sync.Mutex
	noRotate bool     // answer without a new refresh token, as some servers do
	sent     []string // refresh tokens received, in order
	cc       int      // client-credentials requests
	lifetime time.Duration
	// refreshLifetime is the refresh_expires_in a refresh answers with (0: none).
	refreshLifetime time.Duration
	next            int
	// fail holds errors returned, in order, instead of tokens (one per request).
	fail []error
}

func (f *fakeIssuer) failNext(errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = append(f.fail, errs...)
}

func (f *fakeIssuer) popFailure() error {
	if len(f.fail) == 0 {
		return nil
	}
	err := f.fail[0]
	f.fail = f.fail[1:]
	return err
}

func (f *fakeIssuer) ClientCredentials(context.Context, tokenclient.Endpoint) (*tokenclient.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cc++
	if err := f.popFailure(); err != nil {
		return nil, err
	}
	f.next++
	return &tokenclient.Token{AccessToken: fmt.Sprintf("cc-access-%d", f.next), TokenType: "Bearer", Scopes: []string{"pricing"}, Lifetime: f.lifetime}, nil
}

func (f *fakeIssuer) Refresh(_ context.Context, _ tokenclient.Endpoint, rt string) (*tokenclient.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, rt)
	if err := f.popFailure(); err != nil {
		return nil, err
	}
	f.next++
	newRT := fmt.Sprintf("refresh-%d", f.next)
	if f.noRotate {
		newRT = ""
	}
	return &tokenclient.Token{
		AccessToken:     fmt.Sprintf("access-%d", f.next),
		TokenType:       "Bearer",
		RefreshToken:    newRT,
		Scopes:          []string{"marketplace", "offline_access"},
		Lifetime:        f.lifetime,
		RefreshLifetime: f.refreshLifetime,
	}, nil
}

func (f *fakeIssuer) Exchange(context.Context, tokenclient.Endpoint, string, string, string) (*tokenclient.Token, error) {
	return nil, errors.New("not used")
}

func (f *fakeIssuer) refreshes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.sent...)
}

func (f *fakeIssuer) ccCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cc
}

// world is a fake cluster: an AuthorizationCode CDCredential "login" (Ready, client
// Secret "login-client"), a ClientCredentials one "pricing" (client Secret
// "pricing-client"), and a grant "acme" whose opted-in refresh-token Secret
// "acme-refresh", bound to it, holds "refresh-0". Every write is recorded, and faults
// are injected with interceptor.Funcs.
type world struct {
	t      *testing.T
	client client.WithWatch
	clock  *clocktesting.FakeClock
	tokens *fakeIssuer
	events *events.FakeRecorder
	grants *CDUserGrantReconciler
	creds  *CDCredentialReconciler

	mu     sync.Mutex
	writes []string
	// fault, when set, may fail a write ("update", "create", "apply", "patch", "status")
	// before it reaches the fake API server.
	fault func(verb string, obj client.Object) error
}

func newWorld(t *testing.T, objs ...client.Object) *world {
	t.Helper()
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	_ = cdv1.AddToScheme(scheme)
	w := &world{t: t, clock: clocktesting.NewFakeClock(epoch), tokens: &fakeIssuer{lifetime: 30 * time.Minute}, events: events.NewFakeRecorder(100)}
	all := append([]client.Object{
		&cdv1.CDCredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "login", UID: "uid-login", Generation: 1},
			Spec:       cdv1.CDCredentialSpec{Flow: cdv1.FlowAuthorizationCode, ClientSecretRef: cdv1.ClientSecretReference{Name: "login-client"}, Issuer: "https://id.example.com", RevocationURL: "https://id.example.com/connect/revocation"},
			Status: cdv1.CDCredentialStatus{ClientID: "login-id", Conditions: []metav1.Condition{{
				Type: cdv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: cdv1.ClientReadyReason, LastTransitionTime: metav1.NewTime(epoch),
			}}},
		},
		&cdv1.CDCredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pricing", UID: "uid-pricing", Generation: 1},
			Spec:       cdv1.CDCredentialSpec{Flow: cdv1.FlowClientCredentials, ClientSecretRef: cdv1.ClientSecretReference{Name: "pricing-client"}, Issuer: "https://id.example.com"},
		},
		optedIn(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "login-client"},
			Data: map[string][]byte{"client_id": []byte("login-id"), "client_secret": []byte("login-secret")}}, cdv1.SecretTypeClient),
		optedIn(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pricing-client"},
			Data: map[string][]byte{"client_id": []byte("pricing-id"), "client_secret": []byte("pricing-secret")}}, cdv1.SecretTypeClient),
		optedIn(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme-refresh", Annotations: map[string]string{cdv1.BoundToAnnotation: "acme/uid-acme"}},
			Data: map[string][]byte{"refresh_token": []byte("refresh-0")}}, cdv1.SecretTypeRefreshToken),
		grantObj("acme", "acme-refresh"),
	}, objs...)
	base := fake.NewClientBuilder().WithScheme(scheme).WithObjects(all...).
		WithStatusSubresource(&cdv1.CDUserGrant{}, &cdv1.CDCredential{}).
		WithIndex(&cdv1.CDCredential{}, credentialClientIDIndex, indexClientID).
		WithInterceptorFuncs(interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				if err := w.write("create", obj); err != nil {
					return err
				}
				return c.Create(ctx, obj, opts...)
			},
			Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
				if err := w.write("update", obj); err != nil {
					return err
				}
				return c.Update(ctx, obj, opts...)
			},
			Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
				verb := "patch"
				if patch.Type() == types.ApplyPatchType {
					verb = "apply"
				}
				if err := w.write(verb, obj); err != nil {
					return err
				}
				return c.Patch(ctx, obj, patch, opts...)
			},
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
				if err := w.write(sub, obj); err != nil {
					return err
				}
				return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
			},
		}).Build()
	w.client = base
	w.grants = &CDUserGrantReconciler{Client: base, APIReader: base, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Holder: "me", Revoker: &fakeRevoker{}}
	w.creds = &CDCredentialReconciler{Client: base, APIReader: base, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Key: []byte("0123456789abcdef0123456789abcdef")}
	return w
}

func optedIn(s *corev1.Secret, typ string) *corev1.Secret {
	if s.Labels == nil {
		s.Labels = map[string]string{}
	}
	s.Labels[cdv1.SecretTypeLabel] = typ
	return s
}

func grantObj(name, refreshSecret string) *cdv1.CDUserGrant {
	return &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name), Generation: 1},
		Spec: cdv1.CDUserGrantSpec{CredentialRef: cdv1.CredentialReference{Name: "login"}, RefreshTokenSecretRef: cdv1.RefreshTokenSecretReference{Name: refreshSecret}}}
}

func (w *world) write(verb string, obj client.Object) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fault != nil {
		if err := w.fault(verb, obj); err != nil {
			return err
		}
	}
	w.writes = append(w.writes, verb+" "+obj.GetName())
	return nil
}

func (w *world) setFault(f func(verb string, obj client.Object) error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fault = f
}

func (w *world) takeWrites() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.writes
	w.writes = nil
	return out
}

// reconcileGrant runs one pass of the grant controller on name.
func (w *world) reconcileGrant(name string) (ctrl.Result, error) {
	w.t.Helper()
	w.takeWrites()
	return w.grants.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: name}})
}

func (w *world) reconcileCred(name string) (ctrl.Result, error) {
	w.t.Helper()
	w.takeWrites()
	return w.creds.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: name}})
}

func (w *world) grant(name string) *cdv1.CDUserGrant {
	w.t.Helper()
	g := &cdv1.CDUserGrant{}
	if err := w.client.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: name}, g); err != nil {
		w.t.Fatal(err)
	}
	return g
}

func (w *world) cred(name string) *cdv1.CDCredential {
	w.t.Helper()
	c := &cdv1.CDCredential{}
	if err := w.client.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: name}, c); err != nil {
		w.t.Fatal(err)
	}
	return c
}

func (w *world) secret(name string) *corev1.Secret {
	w.t.Helper()
	s := &corev1.Secret{}
	if err := w.client.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: name}, s); err != nil {
		w.t.Fatal(err)
	}
	return s
}

func (w *world) update(obj client.Object, mutate func()) {
	w.t.Helper()
	if err := w.client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
		w.t.Fatal(err)
	}
	mutate()
	if err := w.client.Update(context.Background(), obj); err != nil {
		w.t.Fatal(err)
	}
}

// lag has the cache of snapshot's controller show snapshot for its CR, as an informer
// that has not caught up with the writes since would; lag(&cdv1.CDUserGrant{}) or
// lag(&cdv1.CDCredential{}) catches it up. Writes still reach the fake API server,
// which keeps its own copy.
func (w *world) lag(snapshot client.Object) {
	var reader client.Client = w.client
	if snapshot.GetName() != "" {
		reader = laggingCache{Client: w.client, snapshot: snapshot}
	}
	switch snapshot.(type) {
	case *cdv1.CDUserGrant:
		w.grants.Client = reader
	case *cdv1.CDCredential:
		w.creds.Client = reader
	}
}

type laggingCache struct {
	client.Client
	snapshot client.Object
}

func (c laggingCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if reflect.TypeOf(obj) == reflect.TypeOf(c.snapshot) && key == client.ObjectKeyFromObject(c.snapshot) {
		reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(c.snapshot.DeepCopyObject()).Elem())
		return nil
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

// editForALifetime makes the ith edit, then runs one pass, every 20 seconds over the
// 30-minute lifetime of the fake identity server's tokens, and returns each pass's result.
func (w *world) editForALifetime(edit func(i int), pass func(name string) (ctrl.Result, error), name string) []ctrl.Result {
	w.t.Helper()
	var results []ctrl.Result
	for i := 0; w.clock.Now().Before(epoch.Add(30*time.Minute - 20*time.Second)); i++ {
		w.clock.Step(20 * time.Second)
		edit(i)
		res, err := pass(name)
		if err != nil {
			w.t.Fatalf("edit %d: %v", i, err)
		}
		results = append(results, res)
	}
	return results
}

// login stores token in acme's refresh-token Secret, as the callback does when the
// customer logs in again.
func (w *world) login(token string) {
	w.t.Helper()
	s := w.secret("acme-refresh")
	w.update(s, func() { s.Data["refresh_token"] = []byte(token) })
}

// mark puts an in-flight mark on acme's refresh token, as another process would.
func (w *world) mark(holder string, since time.Time, attempts int) {
	w.update(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme-refresh"}}, func() {})
	s := w.secret("acme-refresh")
	rotation.WriteMark(s.Annotations, rotation.Mark{Hash: rotation.Hash(string(s.Data["refresh_token"])), Holder: holder, Since: since, Attempts: attempts})
	if err := w.client.Update(context.Background(), s); err != nil {
		w.t.Fatal(err)
	}
}

// condition returns a grant's or credential's condition, failing when it is absent.
func condition(t *testing.T, conds []metav1.Condition, typ string) metav1.Condition {
	t.Helper()
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		t.Fatalf("no %s condition in %+v", typ, conds)
	}
	return *c
}

// wantCondition fails unless condition typ has status and reason.
func wantCondition(t *testing.T, conds []metav1.Condition, typ string, status metav1.ConditionStatus, reason string) {
	t.Helper()
	if c := condition(t, conds, typ); c.Status != status || c.Reason != reason {
		t.Errorf("%s = %s/%s (%q), want %s/%s", typ, c.Status, c.Reason, c.Message, status, reason)
	}
}

// events drains the fake recorder.
func (w *world) recorded() []string {
	var out []string
	for {
		select {
		case e := <-w.events.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// advanceWhenWaited moves the fake clock on whenever code waits on it (the persist
// retry backoff), so a test of retries runs without real waiting.
func advanceWhenWaited(c *clocktesting.FakeClock) (stop func()) {
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			if c.HasWaiters() {
				c.Step(time.Second)
			}
			goruntime.Gosched()
		}
	}()
	return func() { close(done) }
}

// fakeRevoker records revocations.
type fakeRevoker struct {
	mu      sync.Mutex
	revoked []string
	err     error
}

func (f *fakeRevoker) Revoke(_ context.Context, _ tokenclient.Endpoint, _, token, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.revoked = append(f.revoked, token)
	return nil
}

// rotateUnstored runs a pass of grant acme whose new refresh token cannot be stored (an
// API server outage, failStoringNewRefreshTokens, still on afterwards): it is held in
// memory once the persist timeout of a second has passed. stop ends the clock's
// advancing (advanceWhenWaited).
func (w *world) rotateUnstored() (stop func()) {
	w.t.Helper()
	w.grants.PersistTimeout = time.Second
	stop = advanceWhenWaited(w.clock)
	w.failStoringNewRefreshTokens()
	if _, err := w.reconcileGrant("acme"); err != nil {
		stop()
		w.t.Fatal(err)
	}
	return stop
}

// failStoringNewRefreshTokens fails every write of acme-refresh but an in-flight mark, so
// a new refresh token cannot land, as in an API server outage.
func (w *world) failStoringNewRefreshTokens() {
	w.setFault(func(verb string, obj client.Object) error {
		if verb == "update" && obj.GetName() == "acme-refresh" && obj.GetAnnotations()[cdv1.RotationInFlightAnnotation] == "" {
			return errors.New("connection refused")
		}
		return nil
	})
}
