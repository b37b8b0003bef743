package onboarding

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// The callback's page is served from the operator's public domain, which every tenant's
// customers trust. A namespace user holds a genuine state of a grant of their own, and a
// redirect with it and an error is anyone's to forge: its error_description used to be
// put on the page as the identity server's words, bidi overrides included. The page
// shows the error code (syntax-checked) and the advice only; the description is for the
// grant's owner, in status and the event, without format or C1 control characters.
func TestAForgedErrorDescriptionPutsNoTextOfTheAttackersOnTheOperatorsPage(t *testing.T) {
	o := newOnboarding(t, time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC), nil, nil)
	recorder := events.NewFakeRecorder(10)
	o.cb.Recorder = recorder
	lure := "Your session expired. Log in again at https://cd-login.example.net/reauth \u202etxt.exe\u200b\u0085\u009b"
	rec := o.deny(o.link(), lure)
	body := rec.Body.String()
	if rec.Code != http.StatusForbidden || !strings.Contains(body, "access_denied") {
		t.Errorf("HTTP %d %q, want 403 naming the error code", rec.Code, body)
	}
	if strings.Contains(body, "cd-login.example.net") {
		t.Errorf("HTTP %d: the operator's page carries the forged redirect's text: %q", rec.Code, body)
	}
	if strings.ContainsRune(body, '\u202e') {
		t.Errorf("the page keeps a right-to-left override from the redirect")
	}
	a := o.current(t).Status.LastAuthorization
	if a == nil || !strings.Contains(a.Message, "(Your session expired. Log in again at https://cd-login.example.net/reauth txt.exe)") {
		t.Fatalf("lastAuthorization = %+v, want the description for the grant's owner, without format or control characters", a)
	}
	if e := <-recorder.Events; strings.ContainsAny(e, "\u202e\u200b\u0085\u009b") {
		t.Errorf("the event keeps format or C1 control characters: %q", e)
	}
}

// The same namespace user writes their own CDCredential's spec.issuer (admission asks
// isURL, which takes spaces) and sends any tenant's customer a redirect with their genuine
// state and another iss: the refusal named the issuer on the page. The page says a fixed
// sentence; the issuer goes to the grant's owner, in status.
func TestAnIssuerMismatchPutsNoTextOfTheTenantsOnTheOperatorsPage(t *testing.T) {
	o := newOnboarding(t, time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC), nil, nil)
	lure := "https://id.centraldispatch.com/ Your Central Dispatch account is locked. Call support at +1 555 0100 to unlock it"
	cred := &cdv1.CDCredential{}
	if err := o.client.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "login"}, cred); err != nil {
		t.Fatal(err)
	}
	cred.Spec.Issuer = lure
	if err := o.client.Update(t.Context(), cred); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	q := url.Values{"state": {o.link()}, "code": {"anything"}, "iss": {"https://elsewhere.example"}}
	o.cb.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/callback?"+q.Encode(), nil))
	body := rec.Body.String()
	if rec.Code != http.StatusBadRequest || strings.Contains(body, "Call support") || !strings.Contains(body, "Whoever sent you the link can see why") {
		t.Errorf("HTTP %d %q, want 400 with the fixed sentence and none of spec.issuer", rec.Code, body)
	}
	if a := o.current(t).Status.LastAuthorization; a == nil || !strings.Contains(a.Message, "another issuer") {
		t.Errorf("lastAuthorization = %+v, want the issuer mismatch for the grant's owner", a)
	}
}

// The callback's pages are the operator's, on a domain every tenant's customers trust:
// no other site may frame them (clickjacking) and no browser may sniff them as anything
// but the HTML they are. The page has no script or style, so the policy allows nothing.
func TestTheCallbacksPagesForbidFramingAndSniffing(t *testing.T) {
	o := newOnboarding(t, time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC), nil, nil)
	for name, target := range map[string]string{
		"a refusal":      "/callback?state=forged",
		"an OAuth error": "/callback?" + url.Values{"state": {o.link()}, "error": {"access_denied"}}.Encode(),
	} {
		rec := httptest.NewRecorder()
		o.cb.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
		h := rec.Header()
		if got, want := h.Get("Content-Security-Policy"), "default-src 'none'; frame-ancestors 'none'"; got != want {
			t.Errorf("%s: Content-Security-Policy %q, want %q", name, got, want)
		}
		if h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: X-Frame-Options %q, want DENY", name, h.Get("X-Frame-Options"))
		}
		if h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: X-Content-Type-Options %q, want nosniff", name, h.Get("X-Content-Type-Options"))
		}
	}
}
