package authorizecli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/manager"
)

const authURL = "https://id.example.com/connect/authorize?client_id=c&state=S1&code_challenge=x"

func TestRedirectQuery(t *testing.T) {
	cases := map[string]struct {
		pasted  string
		wantErr string
	}{
		"the redirect with a code":           {"https://ops.example.com/callback?code=abc&state=S1&iss=x", ""},
		"the redirect with an error":         {"https://ops.example.com/callback?error=access_denied&state=S1", ""},
		"nothing":                            {"", "not an address"},
		"not a URL":                          {"%%%", "not an address"},
		"no state":                           {"https://ops.example.com/callback?code=abc", "no state and code"},
		"neither code nor error":             {"https://ops.example.com/callback?state=S1", "no state and code"},
		"the redirect for another link":      {"https://ops.example.com/callback?code=abc&state=S2", "another authorization link"},
		"the authorization link pasted back": {authURL, "no state and code"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			q, err := redirectQuery(tc.pasted, authURL)
			if tc.wantErr == "" {
				if err != nil || q.Get("state") != "S1" {
					t.Fatalf("got %v, %v", q, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// callbackServer records the queries it was sent and answers like internal/onboarding.
type callbackServer struct {
	*httptest.Server
	queries []url.Values
}

func newCallbackServer(t *testing.T, status int, message string) *callbackServer {
	cs := &callbackServer{}
	cs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cs.queries = append(cs.queries, r.URL.Query())
		w.WriteHeader(status)
		_, _ = w.Write([]byte("<!doctype html><html><body><h1>T</h1><p>" + message + "</p></body></html>"))
	}))
	t.Cleanup(cs.Close)
	return cs
}

func grantWith(status cdv1.CDUserGrantStatus) *cdv1.CDUserGrant {
	return &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme"}, Status: status}
}

var awaiting = cdv1.CDUserGrantStatus{
	AuthorizationURL: authURL,
	Conditions: []metav1.Condition{
		{Type: cdv1.ReadyCondition, Status: metav1.ConditionFalse, Reason: cdv1.AwaitingAuthorizationReason},
		{Type: cdv1.ReauthorizationRequiredCondition, Status: metav1.ConditionTrue, Reason: cdv1.RefreshTokenMissingReason},
	},
}

func run(t *testing.T, grant *cdv1.CDUserGrant, endpoint, pasted string) (string, error) {
	t.Helper()
	c := fake.NewClientBuilder().WithScheme(manager.Scheme()).WithObjects(grant).WithStatusSubresource(grant).Build()
	var out bytes.Buffer
	err := Run(context.Background(), c, Options{Grant: types.NamespacedName{Namespace: "ns", Name: "acme"}, CallbackEndpoint: endpoint}, strings.NewReader(pasted), &out)
	return out.String(), err
}

func TestRunReplaysThePastedQueryToTheCallback(t *testing.T) {
	cs := newCallbackServer(t, http.StatusOK, "Thank you")
	pasted := "https://ops.example.com/callback?code=the-code&state=S1&iss=https%3A%2F%2Fid.example.com\n"
	out, err := run(t, grantWith(awaiting), cs.URL+"/callback", pasted)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out)
	}
	if len(cs.queries) != 1 {
		t.Fatalf("%d callback requests, want 1", len(cs.queries))
	}
	want := url.Values{"code": {"the-code"}, "state": {"S1"}, "iss": {"https://id.example.com"}}
	if got := cs.queries[0]; got.Encode() != want.Encode() {
		t.Errorf("replayed %v, want %v", got, want)
	}
	if !strings.Contains(out, authURL) || strings.Contains(out, "the-code") {
		t.Errorf("output should show the link and never the code:\n%s", out)
	}
}

func TestRunRefusals(t *testing.T) {
	refusing := newCallbackServer(t, http.StatusConflict, "this authorization link was already used")
	cases := map[string]struct {
		grant    *cdv1.CDUserGrant
		endpoint string
		pasted   string
		wantErr  string
		sent     bool
	}{
		"the operator refuses": {
			grant: grantWith(awaiting), endpoint: refusing.URL, pasted: "https://x/cb?code=c&state=S1",
			wantErr: "refused the authorization (HTTP 409): this authorization link was already used", sent: true,
		},
		"a grant already authorized": {
			grant:   grantWith(cdv1.CDUserGrantStatus{Conditions: []metav1.Condition{{Type: cdv1.ReauthorizationRequiredCondition, Status: metav1.ConditionFalse, Reason: cdv1.RefreshTokenValidReason}}}),
			wantErr: "does not need authorizing",
		},
		"no callback server": {
			grant:   grantWith(cdv1.CDUserGrantStatus{Conditions: awaiting.Conditions}),
			wantErr: "--callback-bind-address",
		},
		"the callback cannot be reached": {
			grant: grantWith(awaiting), endpoint: "http://127.0.0.1:1/callback", pasted: "https://x/cb?code=secret-code&state=S1",
			wantErr: "is `kubectl port-forward` running?",
		},
		"an endpoint that is not a URL": {
			grant: grantWith(awaiting), endpoint: "localhost:9443", pasted: "https://x/cb?code=c&state=S1",
			wantErr: "is not an http(s) URL",
		},
		"nothing pasted": {
			grant: grantWith(awaiting), endpoint: refusing.URL, pasted: "",
			wantErr: "reading the redirected address",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			before := len(refusing.queries)
			_, err := run(t, tc.grant, tc.endpoint, tc.pasted)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "secret-code") {
				t.Errorf("the error shows the code: %v", err)
			}
			if sent := len(refusing.queries) > before; sent != tc.sent {
				t.Errorf("sent to the callback: %v, want %v", sent, tc.sent)
			}
		})
	}
}

func TestWaitReadySaysWhyItGaveUp(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(manager.Scheme()).Build() // the grant is gone
	err := waitReady(context.Background(), c, types.NamespacedName{Namespace: "ns", Name: "acme"}, 1500*time.Millisecond, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("err %v, want it to say the grant was not found", err)
	}
}
