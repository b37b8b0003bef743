package onboarding

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// openExpiredLink serves, at now, the callback of a link for grant that expired 45
// minutes earlier (issued an hour before, good for 15 minutes), with a code.
func openExpiredLink(t *testing.T, now time.Time, grant *cdv1.CDUserGrant) (*httptest.ResponseRecorder, client.Client, *events.FakeRecorder) {
	t.Helper()
	signer, err := NewSigner([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	cb, c, recorder := newCallback(t, signer, now, grant)
	old := NewState(grant.Namespace, grant.Name, grant.UID, now.Add(-time.Hour), 15*time.Minute)
	rec := httptest.NewRecorder()
	cb.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/callback?"+url.Values{"code": {"c"}, "state": {signer.Sign(old)}}.Encode(), nil))
	return rec, c, recorder
}

// A customer who logged in from the newest link may later open an older one (an earlier
// e-mail) that has since expired. The grant is authorized: there is nothing to do and
// nothing failed, so the page says so and the grant records nothing; a failure recorded
// on a Ready grant would send its owner looking for a problem that is not there.
func TestAnExpiredLinkOfAnAuthorizedGrantSaysAlreadyAuthorizedAndRecordsNothing(t *testing.T) {
	now := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
	authorized := metav1.Condition{Type: cdv1.ReauthorizationRequiredCondition, Status: metav1.ConditionFalse, Reason: cdv1.RefreshTokenValidReason, LastTransitionTime: metav1.NewTime(now)}
	grant := &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme", UID: "uid-acme"}}
	grant.Status.Conditions = []metav1.Condition{authorized}
	grant.Status.LastAuthorization = &cdv1.AuthorizationResult{Time: metav1.NewTime(now), Reason: cdv1.CustomerAuthorizedReason}
	rec, c, recorder := openExpiredLink(t, now, grant)

	if body := rec.Body.String(); rec.Code != http.StatusConflict || !strings.Contains(body, "already authorized") || strings.Contains(body, "Not authorized") {
		t.Errorf("HTTP %d %q, want 409 saying the integration is already authorized", rec.Code, body)
	}
	got := &cdv1.CDUserGrant{}
	if err := c.Get(t.Context(), client.ObjectKeyFromObject(grant), got); err != nil {
		t.Fatal(err)
	}
	if a := got.Status.LastAuthorization; a == nil || a.Reason != cdv1.CustomerAuthorizedReason {
		t.Errorf("lastAuthorization of the authorized grant became %+v", a)
	}
	select {
	case e := <-recorder.Events:
		t.Errorf("event %q recorded for a link with nothing left to do", e)
	default:
	}
}

// The customer reads the callback's pages: they say what to do in the customer's words,
// never the operator's (states, grants, status fields).
func TestAnExpiredLinkTellsTheCustomerToAskForANewOne(t *testing.T) {
	now := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
	waiting := metav1.Condition{Type: cdv1.ReauthorizationRequiredCondition, Status: metav1.ConditionTrue, Reason: cdv1.RefreshTokenMissingReason, LastTransitionTime: metav1.NewTime(now)}
	grant := &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "acme", UID: "uid-acme"}}
	grant.Status.Conditions = []metav1.Condition{waiting}
	rec, _, _ := openExpiredLink(t, now, grant)

	body := rec.Body.String()
	if rec.Code != http.StatusBadRequest || !strings.Contains(body, "This link has expired. Ask for a new one.") {
		t.Errorf("HTTP %d %q, want 400 telling the customer to ask for a new link", rec.Code, body)
	}
	for _, jargon := range []string{"authorizationURL", "grant", "state"} {
		if strings.Contains(body, jargon) {
			t.Errorf("the customer's page says %q: %q", jargon, body)
		}
	}
}

func newCallback(t *testing.T, signer *Signer, now time.Time, objs ...client.Object) (*Callback, client.Client, *events.FakeRecorder) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := cdv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithStatusSubresource(&cdv1.CDUserGrant{}).Build()
	recorder := events.NewFakeRecorder(10)
	return &Callback{Client: c, APIReader: c, Signer: signer, Recorder: recorder, Clock: clocktesting.NewFakeClock(now), CallbackURL: "https://cd-callback.example.com/callback"}, c, recorder
}
