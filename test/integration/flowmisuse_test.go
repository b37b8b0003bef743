package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
)

// flowMisuse returns a check that a CDCredential's FlowMisuse has a status and reason,
// and (when True) that Ready and Stalled agree.
func flowMisuse(ns, name string, status metav1.ConditionStatus, reason string) func() error {
	return credentialCondition(ns, name, cdv1.FlowMisuseCondition, status, reason)
}

func conditionMessage(conds []metav1.Condition, typ string) string {
	if c := meta.FindStatusCondition(conds, typ); c != nil {
		return c.Message
	}
	return ""
}

// TestTheIncidentIsReportedAsGrantTypeNotAllowed reproduces the incident: the
// authorization-code client declared for client credentials. Central Dispatch refuses the
// grant type; the CR says so, names the likely cause, stops after one request, and
// clears when the right client is put in its Secret.
func TestTheIncidentIsReportedAsGrantTypeNotAllowed(t *testing.T) {
	ns := newNamespace(t)
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients()})
	opts := manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}}
	first := startManager(t, opts)
	create(t, clientSecret(ns, "login-client", loginClientID, loginClientSecret))
	create(t, credential(ns, "login", cdv1.FlowAuthorizationCode, "login-client", idp.URL))
	create(t, clientSecret(ns, "pricing-client", loginClientID, loginClientSecret))
	create(t, credential(ns, "pricing", cdv1.FlowClientCredentials, "pricing-client", idp.URL))
	eventually(t, 10*time.Second, "FlowMisuse GrantTypeNotAllowed, Ready False, Stalled", func() error {
		for _, typ := range []string{cdv1.FlowMisuseCondition, cdv1.StalledCondition} {
			if err := credentialCondition(ns, "pricing", typ, metav1.ConditionTrue, cdv1.GrantTypeNotAllowedReason)(); err != nil {
				return err
			}
		}
		return credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.GrantTypeNotAllowedReason)()
	})
	c, _ := getCredential(ns, "pricing")
	msg := conditionMessage(c.Status.Conditions, cdv1.FlowMisuseCondition)
	for _, want := range []string{"authorization-code flow", "client-credentials credential set", "login", "unauthorized_client"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, loginClientSecret) {
		t.Errorf("message leaks the client secret")
	}
	// Stable: a restarted manager, which reconciles everything again, changes nothing
	// and sends nothing more (the probe proves it has caught up).
	first.Stop(t)
	startManager(t, opts)
	create(t, clientSecret(ns, "probe-client", apiClientID, apiClientSecret))
	create(t, credential(ns, "probe", cdv1.FlowClientCredentials, "probe-client", idp.URL))
	eventually(t, 10*time.Second, "probe Ready", credentialCondition(ns, "probe", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
	again, _ := getCredential(ns, "pricing")
	before := meta.FindStatusCondition(c.Status.Conditions, cdv1.FlowMisuseCondition)
	after := meta.FindStatusCondition(again.Status.Conditions, cdv1.FlowMisuseCondition)
	if !before.LastTransitionTime.Equal(&after.LastTransitionTime) || before.Message != after.Message {
		t.Errorf("FlowMisuse moved across reconciles: %+v -> %+v", before, after)
	}
	evs := &eventsv1.EventList{}
	if err := k8s.List(context.Background(), evs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	onsets := 0
	for _, e := range evs.Items {
		if e.Regarding.Name == "pricing" && e.Reason == cdv1.FlowMisuseDetectedReason {
			onsets++
			if e.Series != nil {
				onsets += int(e.Series.Count) - 1
			}
		}
	}
	if onsets != 1 {
		t.Errorf("%d FlowMisuseDetected events, want exactly 1 (one onset)", onsets)
	}
	if n := idp.Stats().Rejected["unauthorized_client"]; n > 2 {
		t.Errorf("%d refused requests: a retry storm (want one per manager start at most)", n)
	}

	s, _ := getSecret(ns, "pricing-client")
	s.Data = map[string][]byte{"client_id": []byte(apiClientID), "client_secret": []byte(apiClientSecret)}
	if err := k8s.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "cleared once the right client is used", func() error {
		if err := flowMisuse(ns, "pricing", metav1.ConditionFalse, cdv1.FlowCorrectReason)(); err != nil {
			return err
		}
		return credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)()
	})
}

// TestAClientIDDeclaredForBothFlowsIsReportedOnBoth declares one client (id and secret)
// for both flows in two namespaces: both CRs say so, counting the other namespace's
// object without naming it, and both clear when one is deleted.
func TestAClientIDDeclaredForBothFlowsIsReportedOnBoth(t *testing.T) {
	nsA, nsB := newNamespace(t), newNamespace(t)
	// The check is cluster-wide, and envtest never empties a namespace: a client id of
	// this test's own keeps other tests' (and earlier -count runs') CRs out of it.
	sharedID, sharedSecret := "shared-"+nsA, "shared-secret-value-1"
	clients := append(centralDispatchClients(), cdsandbox.Client{ID: sharedID, Secret: sharedSecret, GrantTypes: []string{"authorization_code"}})
	idp := startSandbox(t, cdsandbox.Options{Clients: clients})
	startClusterWideManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}})
	create(t, clientSecret(nsA, "login-client", sharedID, sharedSecret))
	create(t, credential(nsA, "login", cdv1.FlowAuthorizationCode, "login-client", idp.URL))
	eventually(t, 10*time.Second, "login Ready", credentialCondition(nsA, "login", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.ClientReadyReason))
	create(t, clientSecret(nsB, "api-client", sharedID, sharedSecret))
	create(t, credential(nsB, "api", cdv1.FlowClientCredentials, "api-client", idp.URL))

	eventually(t, 10*time.Second, "both report ClientSharedAcrossFlows", func() error {
		a, err := getCredential(nsA, "login")
		if err != nil {
			return err
		}
		if err := conditionIs(a.Status.Conditions, cdv1.FlowMisuseCondition, metav1.ConditionTrue, cdv1.ClientSharedAcrossFlowsReason); err != nil {
			return err
		}
		if m := conditionMessage(a.Status.Conditions, cdv1.FlowMisuseCondition); !strings.Contains(m, "1 CDCredential(s) in other namespaces") || strings.Contains(m, nsB) {
			return fmt.Errorf("message %q does not count the other namespace's CR, or names it", m)
		}
		b, _ := getCredential(nsB, "api")
		// The identity server's refusal is the more specific finding for the wrong one.
		return conditionIs(b.Status.Conditions, cdv1.FlowMisuseCondition, metav1.ConditionTrue, cdv1.GrantTypeNotAllowedReason)
	})
	// The right credential keeps working (its customers' rotations must not stop), and
	// its Ready reason shows the misuse in the Reason column of `kubectl get cdcred`.
	if err := credentialCondition(nsA, "login", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.ClientSharedAcrossFlowsReason)(); err != nil {
		t.Error(err)
	}

	b, _ := getCredential(nsB, "api")
	if err := k8s.Delete(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "cleared when the other is deleted", func() error {
		if err := flowMisuse(nsA, "login", metav1.ConditionFalse, cdv1.FlowCorrectReason)(); err != nil {
			return err
		}
		return credentialCondition(nsA, "login", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.ClientReadyReason)()
	})
}

func TestAUserGrantOnClientCredentialsClearsWhenPointedAtTheRightCredential(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	startManager(t, f.opts)
	create(t, clientSecret(f.ns, "api-client", apiClientID, apiClientSecret))
	create(t, credential(f.ns, "api", cdv1.FlowClientCredentials, "api-client", f.idp.URL))
	create(t, refreshSecret(f.ns, "acme-refresh", f.idp.SeedGrant(loginClientID, "acme", nil)))
	create(t, userGrant(f.ns, "acme", "api", "acme-refresh"))
	eventually(t, 10*time.Second, "UserGrantOnClientCredentials", grantCondition(f.ns, "acme", cdv1.FlowMisuseCondition, metav1.ConditionTrue, cdv1.UserGrantOnClientCredentialsReason))
	g, _ := getGrant(f.ns, "acme")
	g.Spec.CredentialRef.Name = "login"
	if err := k8s.Update(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "rotating with the right credential", func() error {
		if err := f.rotations("acme", 1)(); err != nil {
			return err
		}
		return grantCondition(f.ns, "acme", cdv1.FlowMisuseCondition, metav1.ConditionFalse, cdv1.FlowCorrectReason)()
	})
}

// TestAGrantWhoseClientMayNotRefreshIsGrantTypeNotAllowed declares the
// client-credentials client as the AuthorizationCode credential: Central Dispatch refuses
// refresh_token for it, and the grant says so after exactly one request.
func TestAGrantWhoseClientMayNotRefreshIsGrantTypeNotAllowed(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	startManager(t, f.opts)
	create(t, clientSecret(f.ns, "wrong-client", apiClientID, apiClientSecret))
	create(t, credential(f.ns, "wrong", cdv1.FlowAuthorizationCode, "wrong-client", f.idp.URL))
	create(t, refreshSecret(f.ns, "acme-refresh", f.idp.SeedGrant(loginClientID, "acme", nil)))
	create(t, userGrant(f.ns, "acme", "wrong", "acme-refresh"))
	eventually(t, 10*time.Second, "GrantTypeNotAllowed on the grant", func() error {
		if err := grantCondition(f.ns, "acme", cdv1.FlowMisuseCondition, metav1.ConditionTrue, cdv1.GrantTypeNotAllowedReason)(); err != nil {
			return err
		}
		return grantCondition(f.ns, "acme", cdv1.StalledCondition, metav1.ConditionTrue, cdv1.GrantTypeNotAllowedReason)()
	})
	if n := f.refreshCount(); n != 1 {
		t.Errorf("%d refresh requests, want exactly 1", n)
	}
	rs, _ := getSecret(f.ns, "acme-refresh")
	if rs.Annotations[cdv1.RotationInFlightAnnotation] != "" {
		t.Errorf("the refusal spent nothing, yet the in-flight mark stayed")
	}
}

func TestA402IsProductNotAllocated(t *testing.T) {
	ns := newNamespace(t)
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients()})
	idp.InjectFault(cdsandbox.Fault{GrantType: "client_credentials", Mode: cdsandbox.FaultStatus, Status: 402})
	startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}})
	create(t, clientSecret(ns, "pricing-client", apiClientID, apiClientSecret))
	create(t, credential(ns, "pricing", cdv1.FlowClientCredentials, "pricing-client", idp.URL))
	eventually(t, 10*time.Second, "ProductNotAllocated, Stalled", func() error {
		if err := credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.ProductNotAllocatedReason)(); err != nil {
			return err
		}
		return credentialCondition(ns, "pricing", cdv1.StalledCondition, metav1.ConditionTrue, cdv1.ProductNotAllocatedReason)()
	})
}
