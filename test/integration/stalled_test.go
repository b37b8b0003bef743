package integration

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	clocktesting "k8s.io/utils/clock/testing"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
)

// editBy is how long after status.lastFailure.lastFailureTime Stalled's message says a
// spec edit is tried at the latest.
var editBy = regexp.MustCompile(`a spec edit no later than (\S+) after status\.lastFailure\.lastFailureTime \(`)

// sentBy is how long after status.lastFailure.lastFailureTime Reconciling's message says
// a deferred edit is sent at the latest.
var sentBy = regexp.MustCompile(`the request for it is sent no later than (\S+) after status\.lastFailure\.lastFailureTime \(`)

// A new user's first mistakes, fixed as Stalled's message says: the message names when
// a spec edit is tried (the request budget: a third of the token lifetime after the
// failure, 10 minutes when no token was stored yet), and the fixed spec is sent then,
// not sooner, with nothing else to do. While it waits, Reconciling names the same time
// and status.renewalTime stays where the token's schedule put it (none here): the expiry
// alert reads it, and must not be put off until the edit goes. The manager runs on a
// fake clock.
func TestAFixedSpecIsSentByTheTimeTheStalledMessageNames(t *testing.T) {
	cases := map[string]struct {
		wrong  func(idp identityServer) string
		reason string
		then   string // what else Stalled says brings the CR back
	}{
		"host not on --allowed-token-hosts": {func(identityServer) string { return "https://id.example.com" }, cdv1.TokenHostNotAllowedReason, "in case the manager now allows the host"},
		"token URL pasted as issuer":        {func(idp identityServer) string { return idp.URL + "/connect/token" }, cdv1.TokenRequestRefusedReason, "Check spec.issuer"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ns := newNamespace(t)
			idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients()})
			clock := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
			startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}, Clock: clock})
			create(t, clientSecret(ns, "api-client", apiClientID, apiClientSecret))
			create(t, credential(ns, "pricing", cdv1.FlowClientCredentials, "api-client", tc.wrong(idp)))
			eventually(t, 30*time.Second, tc.reason, func() error {
				c, err := getCredential(ns, "pricing")
				if err == nil && c.Status.LastFailure != nil && c.Status.LastFailure.RetryTime != nil {
					clock.SetTime(c.Status.LastFailure.RetryTime.Time) // an unknown refusal is tried three times
				}
				return credentialCondition(ns, "pricing", cdv1.StalledCondition, metav1.ConditionTrue, tc.reason)()
			})
			c, err := getCredential(ns, "pricing")
			if err != nil {
				t.Fatal(err)
			}
			said := meta.FindStatusCondition(c.Status.Conditions, cdv1.StalledCondition).Message
			if !strings.Contains(said, tc.then) {
				t.Errorf("Stalled's message %q does not say %q", said, tc.then)
			}
			m := editBy.FindStringSubmatch(said)
			if m == nil {
				t.Fatalf("Stalled's message does not say when a spec edit is tried: %q", said)
			}
			after, err := time.ParseDuration(m[1])
			if err != nil {
				t.Fatal(err)
			}
			if after != 10*time.Minute {
				t.Errorf("Stalled says a spec edit is tried %s after the failure; the budget holds it to 10 minutes", after)
			}
			by := c.Status.LastFailure.LastFailureTime.Time.Add(after)
			renewal := c.Status.RenewalTime

			// Fixed just before that time: it waits for it, and says so.
			clock.SetTime(by.Add(-3 * time.Second))
			err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
				c, err := getCredential(ns, "pricing")
				if err != nil {
					return err
				}
				c.Spec.Issuer = idp.URL
				return k8s.Update(context.Background(), c)
			})
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, 30*time.Second, "the edit held until "+by.String(), func() error {
				c, err := getCredential(ns, "pricing")
				if err != nil {
					return err
				}
				r := meta.FindStatusCondition(c.Status.Conditions, cdv1.ReconcilingCondition)
				if r == nil || r.Status != metav1.ConditionTrue {
					return fmt.Errorf("Reconciling %+v", r)
				}
				if m := sentBy.FindStringSubmatch(r.Message); m == nil || m[1] != after.String() {
					return fmt.Errorf("Reconciling %q does not say the edit is sent no later than %s after status.lastFailure.lastFailureTime", r.Message, after)
				}
				if !c.Status.RenewalTime.Equal(renewal) {
					return fmt.Errorf("renewalTime %v while the edit waits, want %v as before: it follows the token's schedule", c.Status.RenewalTime, renewal)
				}
				return nil
			})
			if n := idp.Stats().TokenRequests["client_credentials"]; n != 0 {
				t.Errorf("%d token requests before %s", n, by)
			}

			// At that time it goes, on the requeue the deferral set.
			clock.SetTime(by)
			eventually(t, 30*time.Second, "Ready by "+by.String()+" (Stalled said: "+said+")", credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
		})
	}
}
