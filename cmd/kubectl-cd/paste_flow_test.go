package main

// The paste flow against the real operator: the manager with its callback server, the
// sandbox identity server, and kubectl-cd handing the pasted redirect to the callback
// as `kubectl port-forward` would expose it. (Moved here from test/integration when the
// plugin was rebuilt; the outcome is now read from the API, not from the callback page.)

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
	"github.com/credops/cd-credentials-operator/test/support"
)

const (
	loginClientID     = "57fd8af0-login"
	loginClientSecret = "login-secret-value-1"
)

// onboarding is a running operator with its callback and a sandbox whose
// authorization-code client has that callback registered, in a namespace of its own
// with the CDCredential "login".
type onboarding struct {
	t           *testing.T
	ns          string
	idp         *cdsandbox.Server
	idpURL      string
	callbackURL string
}

func newOnboarding(t *testing.T) *onboarding {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "onboard-"}}
	create(t, ns)
	addr := support.FreeAddr(t)
	callbackURL := "http://" + addr + "/callback"
	idp := cdsandbox.New(cdsandbox.Options{Clients: []cdsandbox.Client{
		{ID: loginClientID, Secret: loginClientSecret, GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{callbackURL}},
	}})
	hs := httptest.NewServer(idp)
	t.Cleanup(hs.Close)
	idp.SetIssuer(hs.URL)
	support.StartManager(t, cfg, manager.Options{
		AllowedTokenHosts:   []string{hs.Listener.Addr().String()},
		WatchNamespaces:     []string{ns.Name},
		CallbackBindAddress: addr,
		CallbackURL:         callbackURL,
		Key:                 []byte("kubectl-cd-test-operator-key-0123456789"),
	})
	create(t, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "login-client", Labels: map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeClient}},
		StringData: map[string]string{"client_id": loginClientID, "client_secret": loginClientSecret},
	})
	cred := credential(ns.Name, "login", cdv1.FlowAuthorizationCode, "login-client")
	cred.Spec.Issuer = hs.URL
	create(t, cred)
	return &onboarding{t: t, ns: ns.Name, idp: idp, idpURL: hs.URL, callbackURL: callbackURL}
}

// awaiting creates a grant without a refresh token and returns its link.
func (o *onboarding) awaiting(name string) string {
	o.t.Helper()
	create(o.t, userGrant(o.ns, name, "login", name+"-refresh"))
	var authURL string
	eventually(o.t, 20*time.Second, "the authorization link of "+name, func() error {
		authURL = getGrant(o.t, o.ns, name).Status.AuthorizationURL
		if authURL == "" {
			return fmt.Errorf("no authorizationURL yet")
		}
		return nil
	})
	return authURL
}

// login plays the customer at the sandbox (action "login" or "deny") and returns where
// the identity server redirects the browser.
func (o *onboarding) login(authURL, action string) string {
	o.t.Helper()
	return support.Login(o.t, o.idpURL, authURL, o.callbackURL, action)
}

func (o *onboarding) exchanges() int { return o.idp.Stats().TokenRequests["authorization_code"] }

// authorizeByPaste runs `kubectl cd authorize --callback-endpoint` on a grant and, once
// it asks, pastes what paste returns.
func (o *onboarding) authorizeByPaste(grant, authURL string, paste func() string) result {
	o.t.Helper()
	// What `kubectl port-forward` exposes: the callback's listener under another address
	// than the redirect URI the identity server sends the browser to.
	return o.authorizeByPasteThrough(strings.Replace(o.callbackURL, "127.0.0.1", "localhost", 1), grant, authURL, paste)
}

// authorizeByPasteThrough is authorizeByPaste with the callback reached at endpoint.
func (o *onboarding) authorizeByPasteThrough(endpoint, grant, authURL string, paste func() string) result {
	o.t.Helper()
	p := start(o.t, nil, "-n", o.ns, "authorize", grant, "--callback-endpoint", endpoint, "--timeout", "1m")
	p.waitOutput(authURL)
	eventually(o.t, 10*time.Second, "the prompt", func() error {
		if !strings.Contains(p.stderr.String(), "Paste its full address here and press Enter:\n") {
			return fmt.Errorf("stderr %q", p.stderr.String())
		}
		return nil
	})
	if _, err := fmt.Fprintln(p.stdin, paste()); err != nil {
		o.t.Fatal(err)
	}
	return p.wait()
}

// TestAuthorizePasteFlowOnboardsWithoutAnIngress: a person runs kubectl cd authorize,
// opens the link, logs in as the customer and pastes back the address the browser was
// sent to; the operator's own callback exchanges the code once and the grant rotates.
func TestAuthorizePasteFlowOnboardsWithoutAnIngress(t *testing.T) {
	o := newOnboarding(t)
	authURL := o.awaiting("acme")
	var redirect string
	r := o.authorizeByPaste("acme", authURL, func() string {
		redirect = o.login(authURL, "login")
		return redirect
	})
	if r.code != 0 || !strings.Contains(r.stdout, "CDUserGrant "+o.ns+"/acme is Ready: TokenIssued") || !strings.Contains(r.stderr, "The operator's callback accepted the login.\n") {
		t.Errorf("%s", r)
	}
	u, _ := url.Parse(redirect)
	if code := u.Query().Get("code"); code == "" || strings.Contains(r.stdout+r.stderr, code) {
		t.Errorf("the CLI printed the authorization code (or there was none)")
	}
	if n := o.exchanges(); n != 1 {
		t.Errorf("%d code exchanges, want 1", n)
	}
	if g := getGrant(t, o.ns, "acme"); g.Status.RotationCount < 1 {
		t.Errorf("rotations %d", g.Status.RotationCount)
	}
}

// TestAuthorizePasteFlowRefusals: what the CLI refuses itself sends nothing; what the
// operator refuses comes back with the operator's reason, read from the API. Nothing is
// exchanged.
func TestAuthorizePasteFlowRefusals(t *testing.T) {
	o := newOnboarding(t)
	cases := map[string]struct {
		paste func(authURL string) string
		want  string
	}{
		"an address for another grant's link": {
			paste: func(string) string { return o.login(o.awaiting("other"), "login") },
			want:  "error: that address answers another authorization link (its state differs): open the link printed above and paste where it leads\n",
		},
		"the customer refused": {
			paste: func(authURL string) string { return o.login(authURL, "deny") },
			want:  "is not authorized: AuthorizationDenied: The identity server answered access_denied. The customer declined, or the identity server refused them. They can try again from the same link.\n",
		},
		"something that is not the redirect": {
			paste: func(string) string { return "I logged in" },
			want:  "error: that address carries no state and code: paste the address the browser was sent to after logging in\n",
		},
	}
	i := 0
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			i++
			grant := fmt.Sprintf("refused-%d", i)
			authURL := o.awaiting(grant)
			before := o.exchanges()
			r := o.authorizeByPaste(grant, authURL, func() string { return tc.paste(authURL) })
			if r.code != 1 || !strings.HasSuffix(r.stderr, tc.want) {
				t.Errorf("want exit 1 and %q:\n%s", tc.want, r)
			}
			if o.exchanges() != before {
				t.Errorf("a code was exchanged")
			}
		})
	}
}

// The callback's answer to a pasted address can come after the grant is Ready: the login
// it carries is stored before the answer leaves, and the controller's status write may
// reach the CLI's watch first. The CLI still says how the callback took the login, then
// that the grant is Ready. A proxy in front of the callback holds its answer until the
// grant is Ready, which makes that order certain.
func TestAPastedLoginIsReportedAcceptedWhenTheGrantIsReadyBeforeTheAnswer(t *testing.T) {
	o := newOnboarding(t)
	authURL := o.awaiting("acme")
	target, err := url.Parse(o.callbackURL)
	if err != nil {
		t.Fatal(err)
	}
	forward := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: target.Scheme, Host: target.Host})
	held := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		forward.ServeHTTP(rec, r)
		// Not eventually: this goroutine is the server's, where a test may not stop.
		err := wait.PollUntilContextTimeout(r.Context(), 50*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
			g := &cdv1.CDUserGrant{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: o.ns, Name: "acme"}, g); err != nil {
				return false, nil
			}
			return meta.IsStatusConditionTrue(g.Status.Conditions, cdv1.ReadyCondition), nil
		})
		if err != nil {
			t.Errorf("acme not Ready within 20 s of the callback's answer: %v", err)
		}
		maps.Copy(w.Header(), rec.Header())
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(held.Close)

	r := o.authorizeByPasteThrough(held.URL+"/callback", "acme", authURL, func() string { return o.login(authURL, "login") })
	accepted := strings.Index(r.stderr, "The operator's callback accepted the login.\n")
	if r.code != 0 || accepted < 0 || !strings.Contains(r.stdout, "CDUserGrant "+o.ns+"/acme is Ready: TokenIssued") {
		t.Errorf("want the callback's acceptance said, then Ready:\n%s", r)
	}
}
