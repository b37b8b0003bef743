package integration

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
)

// A common first mistake: the token URL from Central Dispatch's documentation pasted as
// spec.issuer. The operator appends /connect/token and the identity server answers 404.
// The condition must name the URL that was called, so the doubled path shows, and the
// fields to check; and a 404 is not asked again and again before the user hears of it.
func TestAWrongIssuerStallsAtOnceNamingTheURLCalledAndTheFieldsToCheck(t *testing.T) {
	ns := newNamespace(t)
	sandbox := cdsandbox.New(cdsandbox.Options{Clients: centralDispatchClients()})
	const doubled = "/connect/token/connect/token"
	var calls atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == doubled {
			calls.Add(1)
		}
		sandbox.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	sandbox.SetIssuer(hs.URL)
	startManager(t, manager.Options{AllowedTokenHosts: []string{hs.Listener.Addr().String()}, WatchNamespaces: []string{ns}})
	create(t, clientSecret(ns, "api-client", apiClientID, apiClientSecret))
	create(t, credential(ns, "pricing", cdv1.FlowClientCredentials, "api-client", hs.URL+"/connect/token"))

	eventually(t, 30*time.Second, "TokenRequestRefused and Stalled", func() error {
		if err := credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.TokenRequestRefusedReason)(); err != nil {
			return err
		}
		return credentialCondition(ns, "pricing", cdv1.StalledCondition, metav1.ConditionTrue, cdv1.TokenRequestRefusedReason)()
	})
	// Stalled is reported in the pass that got the answer: anything sent after the
	// first request would have been sent before it.
	if n := calls.Load(); n != 1 {
		t.Errorf("%s was called %d times before the credential stalled, want once", doubled, n)
	}
	c, err := getCredential(ns, "pricing")
	if err != nil {
		t.Fatal(err)
	}
	msg := meta.FindStatusCondition(c.Status.Conditions, cdv1.ReadyCondition).Message
	for _, want := range []string{hs.URL + doubled, "HTTP 404", "spec.issuer", "spec.tokenURL"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Ready message %q does not say %q", msg, want)
		}
	}
}
