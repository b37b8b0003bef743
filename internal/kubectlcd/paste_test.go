package kubectlcd

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
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
	status, err := replay(context.Background(), srv.URL+"/callback", q)
	if err != nil || status != http.StatusForbidden || got.Encode() != q.Encode() {
		t.Fatalf("status %d err %v, sent %v", status, err, got)
	}
	_, err = replay(context.Background(), "http://127.0.0.1:1/callback", q)
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
