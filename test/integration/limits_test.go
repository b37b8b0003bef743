package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
)

// The API server's limits, which the fake client of the unit tests does not keep.

// A ClientCredentials CDCredential asks for many long scopes (Google-style URL scopes,
// within the CRD's 32 × 128) and the identity server refuses one. Ready's message quotes
// the requested scopes, well over events.k8s.io/v1's 1024-byte note limit: the
// ScopeNotAllowed Event, the one that says what to fix, still reaches the API server.
func TestAScopeRefusalWithLongScopesStillRecordsItsEvent(t *testing.T) {
	ns := newNamespace(t)
	clients := centralDispatchClients()
	clients[0].Scopes = []string{"marketplace"}
	idp := startSandbox(t, cdsandbox.Options{Clients: clients})
	startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}})
	create(t, clientSecret(ns, "api-client", apiClientID, apiClientSecret))
	cc := credential(ns, "pricing", cdv1.FlowClientCredentials, "api-client", idp.URL)
	for i := range 16 {
		cc.Spec.Scopes = append(cc.Spec.Scopes, fmt.Sprintf("https://api.centraldispatch.example/auth/marketplace.listings.readonly.%02d", i))
	}
	create(t, cc)
	eventually(t, 30*time.Second, "ScopeNotAllowed", credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.ScopeNotAllowedReason))
	c, _ := getCredential(ns, "pricing")
	if n := len(conditionMessage(c.Status.Conditions, cdv1.ReadyCondition)); n <= 1024 {
		t.Fatalf("Ready's message is %d bytes: the test needs one over the note limit", n)
	}
	eventually(t, 10*time.Second, "the ScopeNotAllowed event", func() error {
		evs := &eventsv1.EventList{}
		if err := k8s.List(context.Background(), evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == "pricing" && e.Reason == cdv1.ScopeNotAllowedReason {
				return nil
			}
		}
		return fmt.Errorf("no ScopeNotAllowed event on the CDCredential (%d events in the namespace)", len(evs.Items))
	})
}

// A CDCredential whose spec.secretName was renamed many times, with long names: each
// rename leaves the previous output Secret behind, controlled by the CR and named in
// Ready until deleted. Ready names a few and counts the rest; a list of all of them
// passed metav1.Condition's 32768-character limit, and the API server refused the whole
// status patch on every pass: status kept naming the old Secret, though the token was in
// the new one. The leftovers are made here as 130 renames leave them (the operator's
// labels, a controller reference to the CR); a namespace user can create them as well.
func TestManyLongLeftoverSecretsDoNotFreezeStatus(t *testing.T) {
	ns, _ := setupClientCredentials(t, 6*time.Second, func(c *cdv1.CDCredential) { c.Spec.SecretName = "pricing-token" })
	eventually(t, 20*time.Second, "Ready", credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
	c, _ := getCredential(ns, "pricing")
	controller := true
	for i := range 130 {
		create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: fmt.Sprintf("%s-%03d", strings.Repeat("p", 249), i),
			Labels:          map[string]string{cdv1.OwnerLabel: "CDCredential.pricing", cdv1.SecretTypeLabel: cdv1.SecretTypeAccessToken, cdv1.ManagedByLabel: cdv1.ManagedByValue},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: cdv1.GroupVersion.String(), Kind: "CDCredential", Name: "pricing", UID: c.UID, Controller: &controller}},
		}, StringData: map[string]string{"access_token": "old"}})
	}
	c.Spec.SecretName = "pricing-token-2"
	if err := k8s.Update(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "status names the renamed output", func() error {
		c, err := getCredential(ns, "pricing")
		if err != nil {
			return err
		}
		if msg := conditionMessage(c.Status.Conditions, cdv1.ReadyCondition); c.Status.SecretName != "pricing-token-2" || !strings.Contains(msg, "and 128 more") {
			return fmt.Errorf("status.secretName %q; Ready %.120q", c.Status.SecretName, msg)
		}
		return nil
	})
}
