package onboarding

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// countingIssuer answers every code exchange with answer, and counts exchanges per code.
type countingIssuer struct {
	mu     sync.Mutex
	codes  map[string]int
	answer func(code string, uses int) (*tokenclient.Token, error)
}

func (i *countingIssuer) ClientCredentials(context.Context, tokenclient.Endpoint) (*tokenclient.Token, error) {
	return nil, errors.New("not used")
}

func (i *countingIssuer) Refresh(context.Context, tokenclient.Endpoint, string) (*tokenclient.Token, error) {
	return nil, errors.New("not used")
}

func (i *countingIssuer) Exchange(_ context.Context, _ tokenclient.Endpoint, code, _, _ string) (*tokenclient.Token, error) {
	i.mu.Lock()
	if i.codes == nil {
		i.codes = map[string]int{}
	}
	i.codes[code]++
	uses := i.codes[code]
	i.mu.Unlock()
	return i.answer(code, uses)
}

func (i *countingIssuer) sent(code string) int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.codes[code]
}

// onboarding is a grant waiting for a login, its AuthorizationCode credential and client
// Secret, and the callback serving them.
type onboarding struct {
	cb     *Callback
	client client.Client
	signer *Signer
	clock  *clocktesting.FakeClock
	grant  *cdv1.CDUserGrant
}

func newOnboarding(t *testing.T, now time.Time, issuer tokenclient.Issuer, funcs *interceptor.Funcs) *onboarding {
	t.Helper()
	signer, err := NewSigner([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := cdv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	cred := &cdv1.CDCredential{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "login"}}
	cred.Spec.Flow = cdv1.FlowAuthorizationCode
	cred.Spec.ClientID = "login-client"
	cred.Spec.ClientSecretRef.Name = "login-client"
	cred.Spec.Issuer = "https://id.example.com"
	clientSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "login-client", Labels: map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeClient}},
		Data:       map[string][]byte{"client_secret": []byte("s3cr3t-value")},
	}
	grant := &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme", UID: "uid-acme"}}
	grant.Spec.CredentialRef.Name = "login"
	grant.Spec.RefreshTokenSecretRef.Name = "acme-refresh"
	grant.Status.Conditions = []metav1.Condition{{Type: cdv1.ReauthorizationRequiredCondition, Status: metav1.ConditionTrue, Reason: cdv1.RefreshTokenMissingReason, LastTransitionTime: metav1.NewTime(now)}}
	b := fake.NewClientBuilder().WithScheme(scheme).WithObjects(cred, clientSecret, grant).WithStatusSubresource(&cdv1.CDUserGrant{})
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	c := b.Build()
	clock := clocktesting.NewFakeClock(now)
	cb := &Callback{Client: c, APIReader: c, Signer: signer, Tokens: issuer, Recorder: events.NewFakeRecorder(50),
		Clock: clock, CallbackURL: "https://cd-callback.example.com/callback"}
	return &onboarding{cb: cb, client: c, signer: signer, clock: clock, grant: grant}
}

// link is the state of a link the controller offers now, good for 15 minutes.
func (o *onboarding) link() string {
	return o.signer.Sign(NewState(o.grant.Namespace, o.grant.Name, o.grant.UID, o.clock.Now(), 15*time.Minute))
}

// login serves the identity server's redirect back with code and state.
func (o *onboarding) login(code, state string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	q := url.Values{"code": {code}, "state": {state}}
	o.cb.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/callback?"+q.Encode(), nil))
	return rec
}

func (o *onboarding) current(t *testing.T) *cdv1.CDUserGrant {
	t.Helper()
	g := &cdv1.CDUserGrant{}
	if err := o.client.Get(t.Context(), client.ObjectKeyFromObject(o.grant), g); err != nil {
		t.Fatal(err)
	}
	return g
}

// README §Onboarding and DESIGN §7: the state is single-use. Two logins within the link
// lifetime each claim their state; the first login's redirect, replayed afterwards
// (browser history, a pasted address), is refused as already used and its code is never
// sent again: an authorization server that sees a code twice should revoke every token
// issued from it (RFC 6749 §4.1.2; Keycloak does). The refusal records nothing, and a
// genuinely newer link still works.
func TestAnOlderClaimedLinkIsRefusedAsAlreadyUsed(t *testing.T) {
	now := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
	issuer := &countingIssuer{answer: func(string, int) (*tokenclient.Token, error) {
		// A login that brings no refresh token: the grant keeps waiting.
		return &tokenclient.Token{AccessToken: "at", TokenType: "Bearer", Scopes: []string{"marketplace"}}, nil
	}}
	o := newOnboarding(t, now, issuer, nil)
	stateA := o.link()
	if rec := o.login("code-A", stateA); rec.Code != http.StatusBadGateway {
		t.Fatalf("login A: HTTP %d %s", rec.Code, rec.Body)
	}
	o.clock.Step(time.Minute)
	if rec := o.login("code-B", o.link()); rec.Code != http.StatusBadGateway {
		t.Fatalf("login B: HTTP %d %s", rec.Code, rec.Body)
	}
	afterB := o.current(t).Status.LastAuthorization

	o.clock.Step(time.Minute)
	rec := o.login("code-A", stateA) // login A's redirect again, within its 15 minutes
	if n := issuer.sent("code-A"); n != 1 {
		t.Errorf("code-A was sent to the identity server %d times", n)
	}
	if body := rec.Body.String(); rec.Code != http.StatusConflict || !strings.Contains(body, "already used") {
		t.Errorf("the replayed login A answered HTTP %d %q, want 409 saying the link was already used", rec.Code, body)
	}
	if got := o.current(t).Status.LastAuthorization; !got.Time.Equal(&afterB.Time) || got.Message != afterB.Message {
		t.Errorf("the refused replay recorded %+v on the grant (it held %+v)", got, afterB)
	}

	o.clock.Step(time.Minute)
	o.login("code-C", o.link())
	if n := issuer.sent("code-C"); n != 1 {
		t.Errorf("a link newer than every claimed one was refused: code-C sent %d times", n)
	}
}

// Two replicas serve the same callback (the browser retried, a load balancer replayed
// it): the other replica's claim of this very state lands between this replica's read of
// the grant and its claim patch. The claim conflicts, the grant read again shows the
// state claimed, and the code is not exchanged a second time.
func TestASecondReplicaRacingOnTheSameStateIsRefusedBeforeAnyExchange(t *testing.T) {
	now := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
	issuer := &countingIssuer{answer: func(string, int) (*tokenclient.Token, error) {
		return &tokenclient.Token{AccessToken: "at", TokenType: "Bearer", RefreshToken: "rt"}, nil
	}}
	var raced bool
	var state string
	var o *onboarding
	funcs := &interceptor.Funcs{
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			if g, ok := obj.(*cdv1.CDUserGrant); ok && !raced {
				raced = true
				// The other replica's claim of the same state lands first.
				cur := &cdv1.CDUserGrant{}
				if err := c.Get(ctx, client.ObjectKeyFromObject(g), cur); err != nil {
					return err
				}
				st, err := o.signer.Verify(state, now)
				if err != nil {
					t.Fatal(err)
				}
				used := readClaims(cur.Annotations[UsedStateAnnotation])
				used.add(st, now)
				metav1.SetMetaDataAnnotation(&cur.ObjectMeta, UsedStateAnnotation, used.String())
				if err := c.Update(ctx, cur); err != nil {
					return err
				}
			}
			return c.Patch(ctx, obj, patch, opts...)
		},
	}
	o = newOnboarding(t, now, issuer, funcs)
	state = o.link()
	rec := o.login("code-A", state)
	if n := issuer.sent("code-A"); n != 0 {
		t.Errorf("code-A was exchanged %d times though another replica had claimed its state (HTTP %d %s)", n, rec.Code, rec.Body)
	}
	if body := rec.Body.String(); rec.Code != http.StatusConflict || !strings.Contains(body, "already being completed") {
		t.Errorf("HTTP %d %q, want 409 saying the login is already being completed", rec.Code, body)
	}
}

// The harmful form: code A made the grant's live session. A reauthorization is asked for
// within the link lifetime and its login B fails at the exchange; login A's redirect,
// replayed, must not be exchanged again, or an identity server that revokes what a
// reused code issued kills the session the grant still runs on.
func TestTheLiveSessionsCodeIsNotExchangedAgain(t *testing.T) {
	now := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
	issuer := &countingIssuer{answer: func(code string, uses int) (*tokenclient.Token, error) {
		if code == "code-A" && uses == 1 {
			return &tokenclient.Token{AccessToken: "at", TokenType: "Bearer", RefreshToken: "rt-A", Scopes: []string{"marketplace", "offline_access"}}, nil
		}
		return nil, &tokenclient.Error{Kind: tokenclient.KindInvalidGrant, Code: "invalid_grant", StatusCode: 400}
	}}
	o := newOnboarding(t, now, issuer, nil)
	stateA := o.link()
	if rec := o.login("code-A", stateA); rec.Code != http.StatusOK {
		t.Fatalf("login A: HTTP %d %s", rec.Code, rec.Body)
	}
	// Five minutes later: kubectl cd reauthorize; the controller offers link B.
	o.clock.Step(5 * time.Minute)
	g := o.current(t)
	g.Annotations[cdv1.ReauthorizeAnnotation] = o.clock.Now().Format(time.RFC3339)
	if err := o.client.Update(t.Context(), g); err != nil {
		t.Fatal(err)
	}
	g.Status.Conditions = []metav1.Condition{{Type: cdv1.ReauthorizationRequiredCondition, Status: metav1.ConditionTrue, Reason: cdv1.ReauthorizationRequestedReason, LastTransitionTime: metav1.NewTime(o.clock.Now())}}
	if err := o.client.Status().Update(t.Context(), g); err != nil {
		t.Fatal(err)
	}
	if rec := o.login("code-B", o.link()); rec.Code != http.StatusBadGateway {
		t.Fatalf("login B: HTTP %d %s", rec.Code, rec.Body)
	}
	rec := o.login("code-A", stateA)
	if n := issuer.sent("code-A"); n != 1 {
		t.Errorf("the live session's code-A was sent %d times; the replay answered HTTP %d %q", n, rec.Code, rec.Body.String())
	}
}

var errTransient = apierrors.NewServiceUnavailable("etcdserver: request timed out")

// A reauthorization whose login succeeded: the new refresh token is stored, then the
// reauthorize annotation is removed. When only that last write fails (an API server
// hiccup), the token is stored all the same: the customer and the grant are told the
// login worked, never that the token "could not be stored".
func TestAStoredLoginIsReportedAuthorizedWhenTheRequestCannotBeCleared(t *testing.T) {
	now := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
	issuer := &countingIssuer{answer: func(string, int) (*tokenclient.Token, error) {
		return &tokenclient.Token{AccessToken: "at", TokenType: "Bearer", RefreshToken: "rt-new-login", Scopes: []string{"marketplace", "offline_access"}}, nil
	}}
	funcs := &interceptor.Funcs{Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
		if g, ok := obj.(*cdv1.CDUserGrant); ok {
			if _, requested := g.Annotations[cdv1.ReauthorizeAnnotation]; !requested {
				return errTransient
			}
		}
		return c.Patch(ctx, obj, patch, opts...)
	}}
	o := newOnboarding(t, now, issuer, funcs)
	// The grant asked for a reauthorization (kubectl cd reauthorize).
	g := o.current(t)
	g.Annotations = map[string]string{cdv1.ReauthorizeAnnotation: now.Format(time.RFC3339)}
	if err := o.client.Update(t.Context(), g); err != nil {
		t.Fatal(err)
	}
	rec := o.login("code-A", o.link())

	stored := &corev1.Secret{}
	if err := o.client.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "acme-refresh"}, stored); err != nil || string(stored.Data["refresh_token"]) != "rt-new-login" {
		t.Fatalf("the refresh token was not stored (%v): the premise fails", err)
	}
	a := o.current(t).Status.LastAuthorization
	if body := rec.Body.String(); rec.Code != http.StatusOK || a == nil || a.Reason != cdv1.CustomerAuthorizedReason || strings.Contains(body, "could not be stored") {
		t.Errorf("the refresh token is stored in acme-refresh, yet HTTP %d says %q and lastAuthorization = %+v", rec.Code, body, a)
	}
	// The grant's controller removes the request the login answered: it is named.
	if a != nil && a.AnsweredRequest != now.Format(time.RFC3339) {
		t.Errorf("lastAuthorization.answeredRequest = %q, want the request the login answered, %q", a.AnsweredRequest, now.Format(time.RFC3339))
	}
}

// A login answers the reauthorization request it found, which the callback removes; one
// made after that, before the login is recorded, is not named as answered, so the grant's
// controller keeps it (and it stays on the grant).
func TestALoginNamesOnlyTheReauthorizationRequestItAnswered(t *testing.T) {
	now := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
	issuer := &countingIssuer{answer: func(string, int) (*tokenclient.Token, error) {
		return &tokenclient.Token{AccessToken: "at", TokenType: "Bearer", RefreshToken: "rt-new-login", Scopes: []string{"marketplace", "offline_access"}}, nil
	}}
	answered, again := now.Add(-5*time.Minute).Format(time.RFC3339), now.Format(time.RFC3339)
	funcs := &interceptor.Funcs{Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
		g, ok := obj.(*cdv1.CDUserGrant)
		if !ok || g.Annotations[cdv1.ReauthorizeAnnotation] != "" {
			return c.Patch(ctx, obj, patch, opts...)
		}
		// The callback removes the answered request; an admin asks again at once.
		if err := c.Patch(ctx, obj, patch, opts...); err != nil {
			return err
		}
		cur := &cdv1.CDUserGrant{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(g), cur); err != nil {
			return err
		}
		cur.Annotations = map[string]string{cdv1.ReauthorizeAnnotation: again}
		return c.Update(ctx, cur)
	}}
	o := newOnboarding(t, now, issuer, funcs)
	g := o.current(t)
	g.Annotations = map[string]string{cdv1.ReauthorizeAnnotation: answered}
	if err := o.client.Update(t.Context(), g); err != nil {
		t.Fatal(err)
	}
	if rec := o.login("code-A", o.link()); rec.Code != http.StatusOK {
		t.Fatalf("login: HTTP %d %s", rec.Code, rec.Body)
	}
	g = o.current(t)
	if a := g.Status.LastAuthorization; a == nil || a.Reason != cdv1.CustomerAuthorizedReason || a.AnsweredRequest != answered {
		t.Errorf("lastAuthorization = %+v, want CustomerAuthorized answering %q", a, answered)
	}
	if v := g.Annotations[cdv1.ReauthorizeAnnotation]; v != again {
		t.Errorf("reauthorize annotation %q, want the request made since (%q) left", v, again)
	}
}
