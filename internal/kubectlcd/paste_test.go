package kubectlcd

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
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clocktesting "k8s.io/utils/clock/testing"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

const pasteAuthURL = "https://id.example.com/connect/authorize?client_id=c&state=S1&code_challenge=x"

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
		"the redirect for another link":      {"https://ops.example.com/callback?code=abc&state=S3", "another authorization link"},
		"the redirect for a renewed link":    {"https://ops.example.com/callback?code=abc&state=S2", ""},
		"the authorization link pasted back": {pasteAuthURL, "no state and code"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			// S2 is a link the operator published later in the same wait.
			q, err := redirectQuery(tc.pasted, []string{pasteAuthURL, strings.Replace(pasteAuthURL, "S1", "S2", 1)})
			if tc.wantErr == "" {
				if err != nil || q.Get("state") == "" {
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

func TestReplayReturnsTheStatusAndNeverShowsTheCode(t *testing.T) {
	var got url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.URL.Query()
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte("<html><p>page for people</p></html>"))
	}))
	defer srv.Close()
	q := url.Values{"code": {"the-code"}, "state": {"S1"}}
	status, _, err := replay(context.Background(), srv.URL+"/callback", q)
	if err != nil || status != http.StatusForbidden || got.Encode() != q.Encode() {
		t.Fatalf("status %d err %v, sent %v", status, err, got)
	}
	_, _, err = replay(context.Background(), "http://127.0.0.1:1/callback", q)
	if err == nil || !strings.Contains(err.Error(), "is kubectl port-forward running?") || strings.Contains(err.Error(), "the-code") {
		t.Errorf("unreachable callback: %v", err)
	}
}

func TestCheckCallbackEndpoint(t *testing.T) {
	for endpoint, ok := range map[string]bool{
		"http://127.0.0.1:9443/callback":   true,
		"https://ops.example.com/callback": true,
		"localhost:9443":                   false,
		"ftp://host/callback":              false,
		"http:///callback":                 false,
	} {
		if err := checkCallbackEndpoint(endpoint); (err == nil) != ok {
			t.Errorf("%q: err %v, want ok=%v", endpoint, err, ok)
		}
	}
}

// pasteAgainst runs the paste flow for grant g with the callback answering as answer,
// and returns how many times the callback was called and the flow's error.
func pasteAgainst(t *testing.T, ctx context.Context, g *cdv1.CDUserGrant, answer func(call int, w http.ResponseWriter)) (calls int, err error) {
	t.Helper()
	u := asUnstructured(t, g)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{grantsResource: "CDUserGrantList", credentialsResource: "CDCredentialList", eventsResource: "EventList"}, u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		answer(calls, w)
	}))
	t.Cleanup(srv.Close)
	var errOut bytes.Buffer
	clk := clocktesting.NewFakeClock(now)
	ao := &authorizeOptions{options: &options{env: Env{Streams: genericiooptions.IOStreams{In: strings.NewReader("https://cb.example.com/callback?code=c&state=S1\n"), Out: &bytes.Buffer{}, ErrOut: &errOut}, Clock: clk}}, callbackEndpoint: srv.URL + "/callback"}
	links := &shownLinks{}
	links.add(g.Status.AuthorizationURL)
	err = ao.paste(ctx, &kube{dynamic: dyn, namespace: "team-a"}, "acme", links, newProgress(&errOut, false, clk, now.Add(time.Minute)), make(chan struct{}))
	return calls, err
}

// The customer declined earlier (Ready=False AuthorizationDenied stays, with its link),
// then logged in properly, and the engineer pasted the redirect. The callback's limiter
// answered 429 before claiming anything: the plugin gave up on an unspent code and blamed
// the old denial. It sends the address again; and a refusal the callback records nowhere
// (409: the link already used) is told by its status, not by that old denial.
func TestAPastedLoginIsNotBlamedOnAnEarlierDenial(t *testing.T) {
	g := &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Name: "acme", Namespace: "team-a"}}
	g.Status.AuthorizationURL = "https://id.example.com/connect/authorize?state=S1"
	g.Status.Conditions = []metav1.Condition{{Type: cdv1.ReadyCondition, Status: metav1.ConditionFalse, Reason: cdv1.AuthorizationDeniedReason,
		Message: "The identity server answered access_denied. The customer declined.", LastTransitionTime: metav1.NewTime(now.Add(-time.Hour))}}

	calls, err := pasteAgainst(t, t.Context(), g, func(call int, w http.ResponseWriter) {
		if call == 1 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	if err != nil || calls != 2 {
		t.Errorf("busy once, then accepted: err %v after %d calls, want accepted on the second", err, calls)
	}

	ctx, cancel := context.WithTimeout(t.Context(), time.Second) // nothing new will be recorded
	defer cancel()
	_, err = pasteAgainst(t, ctx, g, func(_ int, w http.ResponseWriter) { w.WriteHeader(http.StatusConflict) })
	if err == nil || strings.Contains(err.Error(), cdv1.AuthorizationDeniedReason) || !strings.Contains(err.Error(), "already used") {
		t.Errorf("a 409 nothing recorded: %v, want the link already used, not the old denial", err)
	}
}
