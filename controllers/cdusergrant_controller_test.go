package controllers

import (
	"context"
	"errors"
	"fmt"
	goruntime "runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// fakeIssuer is a token endpoint that answers from a script and records what was sent.
type fakeIssuer struct {
	mu       sync.Mutex
	noRotate bool     // answer without a new refresh token, as some servers do
	sent     []string // refresh tokens received, in order
	ccCount  int
	lifetime time.Duration
	next     int
	fail     error // returned (once) instead of a token when set
}

func (f *fakeIssuer) ClientCredentials(context.Context, tokenclient.Endpoint) (*tokenclient.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ccCount++
	return &tokenclient.Token{AccessToken: "cc-access", TokenType: "Bearer", Lifetime: f.lifetime}, nil
}

func (f *fakeIssuer) Refresh(_ context.Context, _ tokenclient.Endpoint, rt string) (*tokenclient.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, rt)
	if err := f.fail; err != nil {
		f.fail = nil
		return nil, err
	}
	f.next++
	newRT := fmt.Sprintf("refresh-%d", f.next)
	if f.noRotate {
		newRT = ""
	}
	return &tokenclient.Token{
		AccessToken:  fmt.Sprintf("access-%d", f.next),
		TokenType:    "Bearer",
		RefreshToken: newRT,
		Scopes:       []string{"marketplace", "offline_access"},
		Lifetime:     f.lifetime,
	}, nil
}

func (f *fakeIssuer) Exchange(context.Context, tokenclient.Endpoint, string, string, string) (*tokenclient.Token, error) {
	return nil, errors.New("not used")
}

func (f *fakeIssuer) sentTokens() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.sent...)
}

var epoch = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// grantWorld is a fake cluster with an AuthorizationCode credential "login" (Ready), a
// grant "acme" and its refresh-token Secret holding "refresh-0".
type grantWorld struct {
	t      *testing.T
	client client.WithWatch
	clock  *clocktesting.FakeClock
	tokens *fakeIssuer
	r      *CDUserGrantReconciler
	writes []string
}

func newGrantWorld(t *testing.T, objs ...client.Object) *grantWorld {
	t.Helper()
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	_ = cdv1.AddToScheme(scheme)
	cred := &cdv1.CDCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "login", Generation: 1},
		Spec:       cdv1.CDCredentialSpec{Flow: cdv1.FlowAuthorizationCode, ClientSecretRef: cdv1.ClientSecretReference{Name: "login-client"}, Issuer: "https://id.example.com"},
		Status: cdv1.CDCredentialStatus{Conditions: []metav1.Condition{{
			Type: cdv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: cdv1.ClientReadyReason, LastTransitionTime: metav1.NewTime(epoch),
		}}},
	}
	w := &grantWorld{t: t, clock: clocktesting.NewFakeClock(epoch), tokens: &fakeIssuer{lifetime: 30 * time.Minute}}
	all := append([]client.Object{
		cred,
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "login-client", Labels: map[string]string{cdv1.WatchLabel: "true"}},
			Data: map[string][]byte{"client_id": []byte("login-id"), "client_secret": []byte("login-secret")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme-refresh", Labels: map[string]string{cdv1.WatchLabel: "true"}},
			Data: map[string][]byte{"refresh_token": []byte("refresh-0")}},
		&cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme", UID: "uid-acme", Generation: 1},
			Spec: cdv1.CDUserGrantSpec{CredentialRef: cdv1.CredentialReference{Name: "login"}, RefreshTokenSecretRef: cdv1.RefreshTokenSecretReference{Name: "acme-refresh"}}},
	}, objs...)
	w.client = fake.NewClientBuilder().WithScheme(scheme).WithObjects(all...).
		WithStatusSubresource(&cdv1.CDUserGrant{}, &cdv1.CDCredential{}).
		WithInterceptorFuncs(interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				w.writes = append(w.writes, "create "+obj.GetName())
				return c.Create(ctx, obj, opts...)
			},
			Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
				w.writes = append(w.writes, "update "+obj.GetName())
				return c.Update(ctx, obj, opts...)
			},
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
				w.writes = append(w.writes, sub+" "+obj.GetName())
				return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
			},
		}).Build()
	w.r = &CDUserGrantReconciler{Client: w.client, APIReader: w.client, Clock: w.clock, Tokens: w.tokens, Recorder: events.NewFakeRecorder(100)}
	return w
}

func (w *grantWorld) reconcile() (ctrl.Result, error) {
	w.t.Helper()
	w.writes = nil
	return w.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "acme"}})
}

func (w *grantWorld) grant() *cdv1.CDUserGrant {
	g := &cdv1.CDUserGrant{}
	if err := w.client.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: "acme"}, g); err != nil {
		w.t.Fatal(err)
	}
	return g
}

func (w *grantWorld) secret(name string) *corev1.Secret {
	s := &corev1.Secret{}
	if err := w.client.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: name}, s); err != nil {
		w.t.Fatal(err)
	}
	return s
}

func (w *grantWorld) condition(typ string) metav1.Condition {
	c := meta.FindStatusCondition(w.grant().Status.Conditions, typ)
	if c == nil {
		w.t.Fatalf("no %s condition", typ)
	}
	return *c
}

func TestRotationWritesInOrderAndRequeuesAtRenewal(t *testing.T) {
	w := newGrantWorld(t)
	res, err := w.reconcile()
	if err != nil {
		t.Fatal(err)
	}
	// Mark, new refresh token, access token, status: DESIGN §9's four writes, in §6's order.
	want := []string{"update acme-refresh", "update acme-refresh", "create acme-token", "status acme"}
	if diff := cmp.Diff(want, w.writes); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
	if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "refresh-1" {
		t.Errorf("stored refresh token %q, want refresh-1", got)
	}
	if a := w.secret("acme-refresh").Annotations; a[cdv1.RotationInFlightAnnotation] != "" {
		t.Errorf("in-flight mark left behind: %v", a)
	}
	g := w.grant()
	s := renewalSchedule(epoch, 30*time.Minute, 0, "uid-acme")
	if res.RequeueAfter != s.RenewAt.Sub(epoch) {
		t.Errorf("RequeueAfter %s, want %s", res.RequeueAfter, s.RenewAt.Sub(epoch))
	}
	if g.Status.RotationCount != 1 || !g.Status.ExpiresAt.Time.Equal(s.ExpiresAt) || !g.Status.RenewalTime.Time.Equal(s.RenewAt) {
		t.Errorf("status %+v", g.Status)
	}
	if c := w.condition(cdv1.ReadyCondition); c.Status != metav1.ConditionTrue || c.Reason != cdv1.TokenIssuedReason {
		t.Errorf("Ready %+v", c)
	}
}

func TestFreshTokenIsNotRotatedAgainAndNothingIsWritten(t *testing.T) {
	w := newGrantWorld(t)
	if _, err := w.reconcile(); err != nil {
		t.Fatal(err)
	}
	rec := w.r.Recorder.(*events.FakeRecorder)
	if got := <-rec.Events; !strings.Contains(got, cdv1.RefreshTokenRotatedReason) {
		t.Errorf("event %q, want RefreshTokenRotated", got)
	}
	w.clock.Step(10 * time.Minute)
	res, err := w.reconcile()
	if err != nil {
		t.Fatal(err)
	}
	if len(w.writes) != 0 {
		t.Errorf("a reconcile with nothing to do wrote %v", w.writes)
	}
	select {
	case e := <-rec.Events:
		t.Errorf("a reconcile with nothing to do recorded %q", e)
	default:
	}
	if n := len(w.tokens.sentTokens()); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
	want := renewalSchedule(epoch, 30*time.Minute, 0, "uid-acme").RenewAt.Sub(epoch.Add(10 * time.Minute))
	if res.RequeueAfter != want {
		t.Errorf("RequeueAfter %s, want %s", res.RequeueAfter, want)
	}
}

func TestEachRefreshTokenIsSentExactlyOnceAcrossRenewals(t *testing.T) {
	w := newGrantWorld(t)
	for range 5 {
		res, err := w.reconcile()
		if err != nil {
			t.Fatal(err)
		}
		w.clock.Step(res.RequeueAfter)
	}
	want := []string{"refresh-0", "refresh-1", "refresh-2", "refresh-3", "refresh-4"}
	if diff := cmp.Diff(want, w.tokens.sentTokens()); diff != "" {
		t.Errorf("refresh tokens sent (-want +got):\n%s", diff)
	}
	if n := w.grant().Status.RotationCount; n != 5 {
		t.Errorf("rotationCount %d, want 5", n)
	}
}

func TestInvalidGrantIsTerminalAndRemembered(t *testing.T) {
	w := newGrantWorld(t)
	w.tokens.fail = &tokenclient.Error{Kind: tokenclient.KindInvalidGrant, Code: "invalid_grant"}
	_, err := w.reconcile()
	if !errors.Is(err, reconcile.TerminalError(nil)) {
		t.Errorf("err = %v, want a terminal error", err)
	}
	if c := w.condition(cdv1.ReauthorizationRequiredCondition); c.Status != metav1.ConditionTrue || c.Reason != cdv1.RefreshTokenRejectedReason {
		t.Errorf("ReauthorizationRequired %+v", c)
	}
	if c := w.condition(cdv1.StalledCondition); c.Status != metav1.ConditionTrue {
		t.Errorf("Stalled %+v", c)
	}
	// A later reconcile (a restart, a resync) sends nothing: the rejection is on the Secret.
	if _, err := w.reconcile(); err == nil {
		t.Errorf("second reconcile succeeded")
	}
	if n := len(w.tokens.sentTokens()); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
}

func TestInterruptedRotationTriesTheStoredTokenOnceThenStops(t *testing.T) {
	w := newGrantWorld(t)
	s := w.secret("acme-refresh")
	s.Annotations = map[string]string{cdv1.RotationInFlightAnnotation: tokenHash("refresh-0"), cdv1.RotationHolderAnnotation: "dead-process@2026-11-23T09:00:00Z"}
	if err := w.client.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	w.tokens.fail = &tokenclient.Error{Kind: tokenclient.KindInvalidGrant, Code: "invalid_grant"}
	if _, err := w.reconcile(); err == nil {
		t.Fatal("want a terminal error")
	}
	if c := w.condition(cdv1.ReauthorizationRequiredCondition); c.Reason != cdv1.RotationInterruptedReason || c.Status != metav1.ConditionTrue {
		t.Errorf("ReauthorizationRequired %+v", c)
	}
	if _, err := w.reconcile(); err == nil {
		t.Fatal("want a terminal error")
	}
	if diff := cmp.Diff([]string{"refresh-0"}, w.tokens.sentTokens()); diff != "" {
		t.Errorf("sent (-want +got):\n%s", diff)
	}
}

func TestALiveRotationByAnotherProcessIsWaitedFor(t *testing.T) {
	w := newGrantWorld(t)
	s := w.secret("acme-refresh")
	s.Annotations = map[string]string{cdv1.RotationInFlightAnnotation: tokenHash("refresh-0"), cdv1.RotationHolderAnnotation: "other-replica@" + epoch.Add(-30*time.Second).Format(time.RFC3339)}
	if err := w.client.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	res, err := w.reconcile()
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter != 90*time.Second {
		t.Errorf("RequeueAfter %s, want the 90 s left of the other holder's 2-minute mark", res.RequeueAfter)
	}
	if n := len(w.tokens.sentTokens()); n != 0 {
		t.Errorf("sent %d refresh tokens while another process holds the rotation", n)
	}
}

func TestAmbiguousFailureLeavesTheMarkAndTheNextAttemptIsARecovery(t *testing.T) {
	w := newGrantWorld(t)
	w.tokens.fail = &tokenclient.Error{Kind: tokenclient.KindTransient, StatusCode: 502, Ambiguous: true}
	if _, err := w.reconcile(); err == nil {
		t.Fatal("want a transient error")
	}
	if a := w.secret("acme-refresh").Annotations[cdv1.RotationInFlightAnnotation]; a != tokenHash("refresh-0") {
		t.Fatalf("in-flight mark %q, want the spent token's hash", a)
	}
	if c := w.condition(cdv1.ReadyCondition); c.Reason != cdv1.TokenRequestFailedReason {
		t.Errorf("Ready %+v", c)
	}
	// The server had in fact spent it.
	w.tokens.fail = &tokenclient.Error{Kind: tokenclient.KindInvalidGrant, Code: "invalid_grant"}
	_, _ = w.reconcile()
	if c := w.condition(cdv1.ReauthorizationRequiredCondition); c.Reason != cdv1.RotationInterruptedReason {
		t.Errorf("ReauthorizationRequired %+v", c)
	}
}

func TestUnambiguousFailureClearsTheMark(t *testing.T) {
	w := newGrantWorld(t)
	w.tokens.fail = &tokenclient.Error{Kind: tokenclient.KindRateLimited, StatusCode: 429, RetryAfter: 30 * time.Second}
	res, err := w.reconcile()
	if err != nil || res.RequeueAfter != 30*time.Second {
		t.Fatalf("res %+v err %v, want a 30 s wait", res, err)
	}
	if a := w.secret("acme-refresh").Annotations[cdv1.RotationInFlightAnnotation]; a != "" {
		t.Errorf("in-flight mark left after a refusal that spent nothing")
	}
}

func TestNewRefreshTokenIsHeldUntilTheAPIServerTakesIt(t *testing.T) {
	w := newGrantWorld(t)
	w.r.PersistTimeout = 3 * time.Second // then the next reconcile retries
	stop := advanceWhenWaited(w.clock)
	defer stop()
	var failing atomic.Bool
	failing.Store(true)
	w.r.Client = interceptor.NewClient(w.client, interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if failing.Load() && obj.GetAnnotations()[cdv1.RotationInFlightAnnotation] == "" {
				return errors.New("apiserver unavailable")
			}
			return c.Update(ctx, obj, opts...)
		},
	})
	if _, err := w.reconcile(); err == nil {
		t.Fatal("want an error while the write fails")
	}
	if _, err := w.reconcile(); err == nil {
		t.Fatal("want an error while the write fails")
	}
	if diff := cmp.Diff([]string{"refresh-0"}, w.tokens.sentTokens()); diff != "" {
		t.Fatalf("the spent token was sent again (-want +got):\n%s", diff)
	}
	failing.Store(false)
	if _, err := w.reconcile(); err != nil {
		t.Fatal(err)
	}
	if got := string(w.secret("acme-refresh").Data["refresh_token"]); got != "refresh-1" {
		t.Errorf("stored %q, want refresh-1", got)
	}
	if got := string(w.secret("acme-token").Data[cdv1.AccessTokenKey]); got != "access-1" {
		t.Errorf("access token %q, want access-1", got)
	}
	if n := len(w.tokens.sentTokens()); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
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

func TestMissingRefreshTokenAwaitsAuthorization(t *testing.T) {
	w := newGrantWorld(t)
	s := w.secret("acme-refresh")
	s.Data = map[string][]byte{"other": []byte("x")}
	if err := w.client.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if _, err := w.reconcile(); err != nil {
		t.Fatal(err)
	}
	if c := w.condition(cdv1.ReadyCondition); c.Reason != cdv1.AwaitingAuthorizationReason {
		t.Errorf("Ready %+v", c)
	}
	if c := w.condition(cdv1.ReauthorizationRequiredCondition); c.Reason != cdv1.RefreshTokenMissingReason || c.Status != metav1.ConditionTrue {
		t.Errorf("ReauthorizationRequired %+v", c)
	}
	if n := len(w.tokens.sentTokens()); n != 0 {
		t.Errorf("sent %d", n)
	}
}

func TestGrantOnClientCredentialsCredentialSendsNothing(t *testing.T) {
	w := newGrantWorld(t)
	cred := &cdv1.CDCredential{}
	_ = w.client.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: "login"}, cred)
	cred.Spec.Flow = cdv1.FlowClientCredentials
	if err := w.client.Update(context.Background(), cred); err != nil {
		t.Fatal(err)
	}
	if _, err := w.reconcile(); err == nil {
		t.Fatal("want a terminal error")
	}
	if c := w.condition(cdv1.FlowMisuseCondition); c.Status != metav1.ConditionTrue || c.Reason != cdv1.UserGrantOnClientCredentialsReason {
		t.Errorf("FlowMisuse %+v", c)
	}
	if n := len(w.tokens.sentTokens()); n != 0 {
		t.Errorf("sent %d", n)
	}
}

func TestA503WithRetryAfterWaitsAsToldAndKeepsTheMark(t *testing.T) {
	w := newGrantWorld(t)
	w.tokens.fail = &tokenclient.Error{Kind: tokenclient.KindRateLimited, StatusCode: 503, RetryAfter: 45 * time.Second, Ambiguous: true}
	res, err := w.reconcile()
	if err != nil || res.RequeueAfter != 45*time.Second {
		t.Fatalf("res %+v err %v, want a 45 s wait", res, err)
	}
	if a := w.secret("acme-refresh").Annotations[cdv1.RotationInFlightAnnotation]; a != tokenHash("refresh-0") {
		t.Errorf("the mark of a possibly spent token was dropped")
	}
	if c := w.condition(cdv1.ReadyCondition); c.Reason != cdv1.RateLimitedReason {
		t.Errorf("Ready %+v", c)
	}
}

func TestEveryPromisedConditionIsPresentEvenWhenTheCredentialIsMissing(t *testing.T) {
	w := newGrantWorld(t)
	cred := &cdv1.CDCredential{}
	_ = w.client.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: "login"}, cred)
	if err := w.client.Delete(context.Background(), cred); err != nil {
		t.Fatal(err)
	}
	if _, err := w.reconcile(); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		cdv1.ReadyCondition:                   cdv1.CredentialNotFoundReason,
		cdv1.FlowMisuseCondition:              cdv1.FlowCorrectReason,
		cdv1.ReauthorizationRequiredCondition: cdv1.RefreshTokenNotCheckedReason,
	}
	for typ, reason := range want {
		if c := w.condition(typ); c.Reason != reason || c.Status != metav1.ConditionFalse {
			t.Errorf("%s = %s/%s, want False/%s", typ, c.Status, c.Reason, reason)
		}
	}
}

func TestAnAnswerWithoutANewRefreshTokenKeepsTheOldOne(t *testing.T) {
	w := newGrantWorld(t)
	w.tokens.noRotate = true
	res, err := w.reconcile()
	if err != nil {
		t.Fatal(err)
	}
	rs := w.secret("acme-refresh")
	if got := string(rs.Data["refresh_token"]); got != "refresh-0" {
		t.Errorf("stored %q, want the old refresh-0 kept", got)
	}
	if rs.Annotations[cdv1.RotationInFlightAnnotation] != "" {
		t.Errorf("in-flight mark left behind")
	}
	if got := string(w.secret("acme-token").Data[cdv1.AccessTokenKey]); got != "access-1" {
		t.Errorf("access token %q, want access-1", got)
	}
	// The next renewal spends the kept token again, legitimately: it was never spent
	// from the operator's point of view, since the server did not replace it.
	w.clock.Step(res.RequeueAfter)
	if _, err := w.reconcile(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"refresh-0", "refresh-0"}, w.tokens.sentTokens()); diff != "" {
		t.Errorf("sent (-want +got):\n%s", diff)
	}
}
