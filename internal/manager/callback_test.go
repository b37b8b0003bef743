package manager

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The chart's Ingress and HTTPRoute forward the path of callback.url unchanged, so the
// callback must answer there: a prefix such as /cd-operator is how one host serves
// several apps. /callback stays for a proxy that strips the prefix.
func TestTheCallbackAnswersAtThePathOfItsURL(t *testing.T) {
	cases := map[string]struct {
		callbackURL string
		served      []string
		notServed   []string
	}{
		"a path under a prefix": {
			callbackURL: "https://apps.example.com/cd-operator/callback",
			served:      []string{"/cd-operator/callback", "/callback"},
			notServed:   []string{"/", "/cd-operator", "/cd-operator/callback/x", "/other/callback"},
		},
		"the plain /callback": {
			callbackURL: "https://cd-callback.example.com/callback",
			served:      []string{"/callback"},
			notServed:   []string{"/", "/callback/x"},
		},
		"a path holding what a ServeMux pattern would read as a wildcard": {
			callbackURL: "https://apps.example.com/{tenant}/callback",
			served:      []string{"/{tenant}/callback", "/callback"},
			notServed:   []string{"/acme/callback"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			path, err := callbackPath(tc.callbackURL)
			if err != nil {
				t.Fatal(err)
			}
			h := serveCallbackAt(path, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }))
			for _, p := range tc.served {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
				if rec.Code != http.StatusTeapot {
					t.Errorf("%s: HTTP %d, want the callback", p, rec.Code)
				}
			}
			for _, p := range tc.notServed {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
				if rec.Code != http.StatusNotFound {
					t.Errorf("%s: HTTP %d, want 404", p, rec.Code)
				}
			}
		})
	}
}

// A --callback-url the callback cannot be served at would turn every login into a 404;
// the manager refuses to start and says what the flag needs.
func TestACallbackURLWithoutAUsablePathIsAFlagError(t *testing.T) {
	cases := map[string]struct{ callbackURL, want string }{
		"missing":               {"", "--callback-url is required"},
		"no path":               {"https://cd-callback.example.com", "has no path"},
		"only a slash":          {"https://cd-callback.example.com/", "has no path"},
		"not absolute":          {"/callback", "must be an absolute http(s) URL with a path"},
		"another scheme":        {"ftp://cd-callback.example.com/callback", "must be an absolute http(s) URL with a path"},
		"a fragment":            {"https://cd-callback.example.com/callback#x", "must not have a fragment"},
		"not a URL":             {"https://cd callback/%zz", "--callback-url"},
		"an empty fragment too": {"https://cd-callback.example.com/callback#", "must not have a fragment"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := callbackPath(tc.callbackURL)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}
