package onboarding

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// identityServer is the sandbox identity server behind the onboarding's credential:
// each code exchange opens a real customer session there, so a test can tell whether the
// refresh token the callback obtained is still live, and the callback revokes through
// the real client (RFC 7009).
type identityServer struct {
	sb     *cdsandbox.Server
	url    string
	client *tokenclient.Client
	mu     sync.Mutex
	issued []string
}

func newIdentityServer(t *testing.T) *identityServer {
	t.Helper()
	sb := cdsandbox.New(cdsandbox.Options{Clients: []cdsandbox.Client{
		{ID: "login-client", Secret: "s3cr3t-value", GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"https://cd-callback.example.com/callback"}},
	}})
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	sb.SetIssuer(srv.URL)
	return &identityServer{sb: sb, url: srv.URL, client: tokenclient.New(tokenclient.Options{AllowedHosts: []string{strings.TrimPrefix(srv.URL, "http://")}})}
}

// serve points the onboarding's credential at the server, revocation endpoint included.
func (s *identityServer) serve(t *testing.T, o *onboarding) {
	t.Helper()
	cred := &cdv1.CDCredential{}
	if err := o.client.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "login"}, cred); err != nil {
		t.Fatal(err)
	}
	cred.Spec.TokenURL = s.url + "/connect/token"
	cred.Spec.RevocationURL = s.url + "/connect/revocation"
	if err := o.client.Update(t.Context(), cred); err != nil {
		t.Fatal(err)
	}
	o.cb.Revoker = s.client
}

// withoutRevocation removes the credential's revocationURL.
func (o *onboarding) withoutRevocation(t *testing.T) {
	t.Helper()
	cred := &cdv1.CDCredential{}
	if err := o.client.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "login"}, cred); err != nil {
		t.Fatal(err)
	}
	cred.Spec.RevocationURL = ""
	if err := o.client.Update(t.Context(), cred); err != nil {
		t.Fatal(err)
	}
}

func (s *identityServer) ClientCredentials(context.Context, tokenclient.Endpoint) (*tokenclient.Token, error) {
	return nil, errors.New("not used")
}

func (s *identityServer) Refresh(context.Context, tokenclient.Endpoint, string) (*tokenclient.Token, error) {
	return nil, errors.New("not used")
}

// Exchange opens a session as if the customer had consented to offline access.
func (s *identityServer) Exchange(context.Context, tokenclient.Endpoint, string, string, string) (*tokenclient.Token, error) {
	rt := s.sb.SeedGrant("login-client", "customer", []string{"marketplace", "offline_access"})
	s.mu.Lock()
	s.issued = append(s.issued, rt)
	s.mu.Unlock()
	return &tokenclient.Token{AccessToken: "at", TokenType: "Bearer", RefreshToken: rt, Scopes: []string{"marketplace", "offline_access"}}, nil
}

// only is the one refresh token the server issued.
func (s *identityServer) only(t *testing.T) string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.issued) != 1 {
		t.Fatalf("the identity server issued %d refresh tokens, want 1", len(s.issued))
	}
	return s.issued[0]
}

// live reports whether rt still opens its session: a refresh with it is answered.
func (s *identityServer) live(t *testing.T, rt string) bool {
	t.Helper()
	ep := tokenclient.Endpoint{TokenURL: s.url + "/connect/token", AuthMethod: tokenclient.ClientSecretPost, ClientID: "login-client", ClientSecret: "s3cr3t-value"}
	_, err := s.client.Refresh(t.Context(), ep, rt)
	return err == nil
}

// refreshSecret is a refresh-token Secret named acme-refresh, opted in, holding token
// and bound to the grant named by bound ("name/uid"; "" for none).
func refreshSecret(bound, token string) *corev1.Secret {
	s := &corev1.Secret{
		// A UID, as the API server gives every object (the fake client gives none).
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme-refresh", UID: types.UID("uid-secret-" + token), Labels: map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeRefreshToken}},
		Data:       map[string][]byte{"refresh_token": []byte(token)},
	}
	if bound != "" {
		s.Annotations = map[string]string{cdv1.BoundToAnnotation: bound}
	}
	return s
}

// meddler runs fn, through the unintercepted client, just before the callback's first
// write of the acme-refresh Secret once armed: after the check and the exchange.
type meddler struct {
	fn    func(ctx context.Context, c client.WithWatch) error
	armed atomic.Bool
	once  sync.Once
}

func (m *meddler) before(ctx context.Context, c client.WithWatch, obj client.Object) (err error) {
	if s, ok := obj.(*corev1.Secret); ok && s.Name == "acme-refresh" && m.armed.Load() {
		m.once.Do(func() { err = m.fn(ctx, c) })
	}
	return err
}

func (m *meddler) funcs() *interceptor.Funcs {
	return &interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if err := m.before(ctx, c, obj); err != nil {
				return err
			}
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if err := m.before(ctx, c, obj); err != nil {
				return err
			}
			return c.Update(ctx, obj, opts...)
		},
	}
}

// Two grants name the same refresh-token Secret and both customers log in at once: each
// callback finds the Secret missing (or free), exchanges its code, and one write loses
// (AlreadyExists, or a Conflict of the guarded Update). The loser reads the Secret again
// and decides by the rule it checked before the exchange; a refresh token it does not
// store is a live session nobody holds, so it is revoked at the identity server.
func TestARefreshTokenSecretTakenDuringTheLoginIsJudgedAgainAndAnUnstoredTokenRevoked(t *testing.T) {
	globex := &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "globex", UID: "uid-globex"}}
	globex.Spec.CredentialRef.Name = "login"
	globex.Spec.RefreshTokenSecretRef.Name = "acme-refresh"
	cases := map[string]struct {
		before     *corev1.Secret // acme-refresh when the customer logs in; nil: missing
		meddle     func(ctx context.Context, c client.WithWatch) error
		wantStatus int
		wantReason string
		wantIn     []string // in the page and status message
		wantStored bool     // the login's token is in acme-refresh and live
		// noRevocation: the CDCredential has no revocationURL, so an unstored token
		// stays live and the message says so.
		noRevocation bool
	}{
		"another live grant's Secret created first: a conflict, the token revoked": {
			meddle: func(ctx context.Context, c client.WithWatch) error {
				return c.Create(ctx, refreshSecret("globex/uid-globex", "rt-globex"))
			},
			wantStatus: http.StatusConflict, wantReason: cdv1.RefreshTokenSecretConflictReason,
			wantIn: []string{"bound to grant globex", "revoked at the identity server", "Point spec.refreshTokenSecretRef at"},
		},
		"another live grant's Secret created first, no revocation endpoint: the session is said to stay valid": {
			meddle: func(ctx context.Context, c client.WithWatch) error {
				return c.Create(ctx, refreshSecret("globex/uid-globex", "rt-globex"))
			},
			noRevocation: true,
			wantStatus:   http.StatusConflict, wantReason: cdv1.RefreshTokenSecretConflictReason,
			wantIn: []string{"bound to grant globex", "has no spec.revocationURL", "stays valid at the identity server", "Point spec.refreshTokenSecretRef at"},
		},
		"a free Secret bound by another live grant first: a conflict, the token revoked": {
			before: refreshSecret("", "rt-prepared"),
			meddle: func(ctx context.Context, c client.WithWatch) error {
				s := &corev1.Secret{}
				if err := c.Get(ctx, client.ObjectKey{Namespace: "ns", Name: "acme-refresh"}, s); err != nil {
					return err
				}
				s.Annotations = map[string]string{cdv1.BoundToAnnotation: "globex/uid-globex"}
				s.Data["refresh_token"] = []byte("rt-globex")
				return c.Update(ctx, s)
			},
			wantStatus: http.StatusConflict, wantReason: cdv1.RefreshTokenSecretConflictReason,
			wantIn: []string{"bound to grant globex", "revoked at the identity server", "Point spec.refreshTokenSecretRef at"},
		},
		"an opted-in Secret bound to no grant created first: the token is stored in it": {
			meddle: func(ctx context.Context, c client.WithWatch) error {
				return c.Create(ctx, refreshSecret("", "rt-prepared"))
			},
			wantStatus: http.StatusOK, wantReason: cdv1.CustomerAuthorizedReason, wantStored: true,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			now := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
			idp := newIdentityServer(t)
			m := &meddler{fn: tc.meddle}
			o := newOnboarding(t, now, idp, m.funcs())
			idp.serve(t, o)
			if tc.noRevocation {
				o.withoutRevocation(t)
			}
			if err := o.client.Create(t.Context(), globex.DeepCopy()); err != nil {
				t.Fatal(err)
			}
			rec, rt := o.loginMeddled(t, idp, m, tc.before)
			body := rec.Body.String()
			a := o.current(t).Status.LastAuthorization
			if a == nil {
				t.Fatalf("HTTP %d %q recorded no lastAuthorization", rec.Code, body)
			}
			if rec.Code != tc.wantStatus || a.Reason != tc.wantReason {
				t.Errorf("HTTP %d %q, lastAuthorization %+v; want %d and %s", rec.Code, body, a, tc.wantStatus, tc.wantReason)
			}
			for _, want := range tc.wantIn {
				if !strings.Contains(body, want) || !strings.Contains(a.Message, want) {
					t.Errorf("page %q or status message %q does not say %q", body, a.Message, want)
				}
			}
			s := &corev1.Secret{}
			if err := o.client.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "acme-refresh"}, s); err != nil {
				t.Fatal(err)
			}
			if stored := string(s.Data["refresh_token"]) == rt; stored != tc.wantStored {
				t.Errorf("acme-refresh holds %q, bound %q; the login's token stored: %v, want %v", s.Data["refresh_token"], s.Annotations[cdv1.BoundToAnnotation], stored, tc.wantStored)
			}
			if live, want := idp.live(t, rt), tc.wantStored || tc.noRevocation; live != want {
				t.Errorf("the login's refresh token is live at the identity server: %v, want %v (revoked unless stored, or no revocation endpoint)", live, want)
			}
		})
	}
}

// A grant deleted, or deleted and created again under its name, after the callback
// claimed its link and before the refresh token is written: the token would sit in a
// Secret bound to a UID that is gone, which by the binding rule any grant naming the
// Secret may adopt (a new grant of the same name would inherit another customer's
// session). The callback confirms the grant after the write and takes the token back
// (the Secret it created is deleted; one it updated loses the token) and revokes it.
func TestALoginForAGrantRemovedDuringItLeavesNoSessionBehind(t *testing.T) {
	cases := map[string]struct {
		before   *corev1.Secret // acme-refresh when the customer logs in; nil: missing
		recreate bool           // a new grant acme is created after the deletion
		// finalizer holds the deleted grant (deletionPolicy Delete): it is still there,
		// being deleted, and its controller may have looked for the Secret already.
		finalizer bool
	}{
		"being deleted, held by a finalizer, before its Secret was created": {finalizer: true},
		"deleted before its Secret was created":                             {},
		"deleted and created again under the same name":                     {recreate: true},
		"deleted before its bound Secret was updated":                       {before: refreshSecret("acme/uid-acme", "rt-dead")},
		"re-created before its bound Secret was updated":                    {before: refreshSecret("acme/uid-acme", "rt-dead"), recreate: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			now := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
			idp := newIdentityServer(t)
			m := &meddler{fn: func(ctx context.Context, c client.WithWatch) error {
				acme := &cdv1.CDUserGrant{}
				if err := c.Get(ctx, client.ObjectKey{Namespace: "ns", Name: "acme"}, acme); err != nil {
					return err
				}
				if tc.finalizer {
					acme.Finalizers = []string{"cd.credops.io/delete-refresh-token"}
					if err := c.Update(ctx, acme); err != nil {
						return err
					}
				}
				if err := c.Delete(ctx, acme); err != nil || !tc.recreate {
					return err
				}
				again := &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme", UID: "uid-acme-2"}}
				again.Spec.CredentialRef.Name = "login"
				again.Spec.RefreshTokenSecretRef.Name = "acme-refresh"
				return c.Create(ctx, again)
			}}
			o := newOnboarding(t, now, idp, m.funcs())
			idp.serve(t, o)
			rec, rt := o.loginMeddled(t, idp, m, tc.before)
			if body := rec.Body.String(); rec.Code == http.StatusOK || !strings.Contains(body, "removed while you logged in") || !strings.Contains(body, "revoked at the identity server") {
				t.Errorf("HTTP %d %q, want a refusal saying what the login was for was removed and the session revoked", rec.Code, body)
			}
			list := &corev1.SecretList{}
			if err := o.client.List(t.Context(), list, client.InNamespace("ns")); err != nil {
				t.Fatal(err)
			}
			for _, s := range list.Items {
				for k, v := range s.Data {
					if string(v) == rt {
						t.Errorf("Secret %s (bound %q) holds the login's refresh token under %s", s.Name, s.Annotations[cdv1.BoundToAnnotation], k)
					}
				}
			}
			if idp.live(t, rt) {
				t.Error("the login's refresh token is live at the identity server, want revoked")
			}
			if tc.recreate {
				if a := o.current(t).Status.LastAuthorization; a != nil {
					t.Errorf("the new grant acme records the old grant's login: %+v", a)
				}
			}
		})
	}
}

// loginMeddled logs the customer in with before (a Secret, if any) already there and m
// armed to meddle at the callback's first write of the refresh-token Secret, and returns
// the answer and the refresh token the identity server issued.
func (o *onboarding) loginMeddled(t *testing.T, idp *identityServer, m *meddler, before *corev1.Secret) (*httptest.ResponseRecorder, string) {
	t.Helper()
	if before != nil {
		if err := o.client.Create(t.Context(), before.DeepCopy()); err != nil {
			t.Fatal(err)
		}
	}
	m.armed.Store(true)
	rec := o.login("code-A", o.link())
	return rec, idp.only(t)
}

// An error of the read that confirms the grant after the refresh token was written (a
// timeout, a 500 of the API server) is not the grant gone: the login was good, so the
// token stays stored and live, and the customer is told so. One error is retried; a
// grant that cannot be read at all keeps the login too (its controller finds the token).
// Taking the token back on any error used to lose the login and spend the link.
func TestAnErrorOnTheConfirmingReadKeepsAGoodLogin(t *testing.T) {
	cases := map[string]struct{ failures int32 }{
		"one API timeout":             {failures: 1},
		"API timeouts on every retry": {failures: 1000},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			now := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
			idp := newIdentityServer(t)
			var written atomic.Bool
			var failed atomic.Int32
			funcs := &interceptor.Funcs{
				Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
					if s, ok := obj.(*corev1.Secret); ok && s.Name == "acme-refresh" {
						written.Store(true)
					}
					return c.Create(ctx, obj, opts...)
				},
				Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
					if _, ok := obj.(*cdv1.CDUserGrant); ok && written.Load() && failed.Add(1) <= tc.failures {
						return apierrors.NewServerTimeout(schema.GroupResource{Group: "cd.credops.io", Resource: "cdusergrants"}, "get", 1)
					}
					return c.Get(ctx, key, obj, opts...)
				},
			}
			o := newOnboarding(t, now, idp, funcs)
			idp.serve(t, o)
			rec := o.login("code-A", o.link())
			rt := idp.only(t)
			if rec.Code != http.StatusOK {
				t.Errorf("a good login whose confirming read met %s: HTTP %d %q, want 200", name, rec.Code, rec.Body.String())
			}
			s := &corev1.Secret{}
			if err := o.client.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "acme-refresh"}, s); err != nil || string(s.Data["refresh_token"]) != rt {
				t.Errorf("refresh-token Secret after the login: %v (data %q), want it holding the login's token", err, s.Data)
			}
			if !idp.live(t, rt) {
				t.Error("the good login's refresh token was revoked at the identity server")
			}
		})
	}
}
