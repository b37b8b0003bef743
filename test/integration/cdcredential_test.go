package integration

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
)

// setupClientCredentials starts a sandbox and a manager for one namespace and creates a
// ClientCredentials CDCredential named "pricing" whose client Secret is "pricing-client".
func setupClientCredentials(t *testing.T, ttl time.Duration, mutate func(*cdv1.CDCredential)) (string, identityServer) {
	t.Helper()
	ns := newNamespace(t)
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients(), AccessTokenTTL: ttl})
	startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}})
	create(t, clientSecret(ns, "pricing-client", apiClientID, apiClientSecret))
	cred := credential(ns, "pricing", cdv1.FlowClientCredentials, "pricing-client", idp.URL)
	if mutate != nil {
		mutate(cred)
	}
	create(t, cred)
	return ns, idp
}

func TestClientCredentialsTokenLandsInSecretByContract(t *testing.T) {
	ns, idp := setupClientCredentials(t, 30*time.Minute, func(c *cdv1.CDCredential) {
		c.Spec.Scopes = []string{"marketplace"}
		c.Spec.SecretTemplate = &cdv1.SecretTemplate{Labels: map[string]cdv1.LabelValue{"team": "pricing"}, Annotations: map[string]cdv1.AnnotationValue{"reloader/match": "true"}}
	})
	eventually(t, 20*time.Second, "Ready", credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))

	cred, _ := getCredential(ns, "pricing")
	s, err := getSecret(ns, "pricing-token")
	if err != nil {
		t.Fatalf("output Secret: %v", err)
	}
	tok := string(s.Data[cdv1.AccessTokenKey])
	info, ok := idp.Introspect(tok)
	if !ok || info.ClientID != apiClientID || info.GrantType != "client_credentials" {
		t.Fatalf("token in Secret is not a live client-credentials token of %s: %+v ok=%v", apiClientID, info, ok)
	}
	expires := cred.Status.ExpiresAt.UTC().Format(time.RFC3339)
	wantData := map[string]string{
		cdv1.AccessTokenKey:   tok,
		cdv1.TokenTypeKey:     "Bearer",
		cdv1.ExpiresAtKey:     expires,
		cdv1.ScopeKey:         "marketplace",
		cdv1.AuthorizationKey: "Bearer " + tok,
	}
	if diff := cmp.Diff(wantData, stringData(s)); diff != "" {
		t.Errorf("Secret data (-want +got):\n%s", diff)
	}
	if s.Type != corev1.SecretTypeOpaque {
		t.Errorf("Secret type %q, want Opaque", s.Type)
	}
	for k, v := range map[string]string{cdv1.ManagedByLabel: cdv1.ManagedByValue, cdv1.OwnerLabel: "CDCredential.pricing", "team": "pricing"} {
		if s.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, s.Labels[k], v)
		}
	}
	if s.Annotations[cdv1.ExpiresAtAnnotation] != expires || s.Annotations["reloader/match"] != "true" {
		t.Errorf("annotations %v", s.Annotations)
	}
	if !metav1.IsControlledBy(s, cred) {
		t.Errorf("Secret is not controlled by the CDCredential: %+v", s.OwnerReferences)
	}
	if cred.Status.ClientID != apiClientID || cred.Status.SecretName != "pricing-token" || cred.Status.LastIssuedTime == nil || cred.Status.RenewalTime == nil {
		t.Errorf("status %+v", cred.Status)
	}
	if d := cred.Status.ExpiresAt.Sub(cred.Status.LastIssuedTime.Time); d < 29*time.Minute || d > 30*time.Minute {
		t.Errorf("expiresAt - lastIssuedTime = %s, want the real expires_in (30m)", d)
	}
	if err := conditionIs(cred.Status.Conditions, cdv1.FlowMisuseCondition, metav1.ConditionFalse, cdv1.FlowCorrectReason); err != nil {
		t.Error(err)
	}
	if n := idp.Stats().TokenRequests["client_credentials"]; n != 1 {
		t.Errorf("token requests = %d, want exactly 1", n)
	}
}

func TestClientCredentialsTokenIsRenewedBeforeExpiry(t *testing.T) {
	ns, idp := setupClientCredentials(t, 3*time.Second, nil)
	var seen []string
	eventually(t, 30*time.Second, "three tokens issued in turn", func() error {
		s, err := getSecret(ns, "pricing-token")
		if err != nil {
			return err
		}
		tok := string(s.Data[cdv1.AccessTokenKey])
		if len(seen) == 0 || seen[len(seen)-1] != tok {
			if _, live := idp.Introspect(tok); !live {
				return fmt.Errorf("Secret holds an expired or unknown token")
			}
			seen = append(seen, tok)
		}
		if len(seen) < 3 {
			return fmt.Errorf("%d tokens seen", len(seen))
		}
		return nil
	})
	// Renewed at about 2/3 of a 3 s lifetime: three tokens take about 4-6 s, so there
	// is no room for a request per reconcile, only one per lifetime.
	if n := idp.Stats().TokenRequests["client_credentials"]; n > len(seen)+1 {
		t.Errorf("%d token requests for %d tokens", n, len(seen))
	}
}

func TestMissingClientSecretThenCreatedIsPickedUpAtOnce(t *testing.T) {
	ns := newNamespace(t)
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients()})
	startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}})
	create(t, credential(ns, "pricing", cdv1.FlowClientCredentials, "pricing-client", idp.URL))
	eventually(t, 10*time.Second, "ClientSecretNotFound", credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.ClientSecretNotFoundReason))
	create(t, clientSecret(ns, "pricing-client", apiClientID, apiClientSecret))
	eventually(t, 10*time.Second, "Ready after the Secret appears", credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
}

func TestAClientSecretIsReadOnlyOnceOptedIn(t *testing.T) {
	ns := newNamespace(t)
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients()})
	startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}})
	// Created as `kubectl create secret` does, without the opt-in label: nothing is read
	// from it, and the condition says how to opt it in.
	create(t, unlabelled(clientSecret(ns, "pricing-client", apiClientID, apiClientSecret)))
	create(t, credential(ns, "pricing", cdv1.FlowClientCredentials, "pricing-client", idp.URL))
	eventually(t, 10*time.Second, "SecretNotOptedIn", credentialCondition(ns, "pricing", cdv1.StalledCondition, metav1.ConditionTrue, cdv1.SecretNotOptedInReason))
	c, _ := getCredential(ns, "pricing")
	if ready := meta.FindStatusCondition(c.Status.Conditions, cdv1.ReadyCondition); !strings.Contains(ready.Message, "kubectl -n "+ns+" label secret pricing-client cd.credops.io/secret-type=client") {
		t.Errorf("Ready message %q does not give the command", ready.Message)
	}
	if c.Status.ClientID != "" || idp.Stats().TokenRequests["client_credentials"] != 0 {
		t.Errorf("a Secret that is not opted in was read (clientID %q) or used", c.Status.ClientID)
	}
	// `kubectl label secret pricing-client cd.credops.io/secret-type=client`: the watch
	// brings the CR back at once.
	s, _ := getSecret(ns, "pricing-client")
	s.Labels = map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeClient}
	if err := k8s.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "Ready once opted in", credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
}

func TestClientSecretWithoutKeysIsInvalidUntilFixed(t *testing.T) {
	ns := newNamespace(t)
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients()})
	startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}})
	bad := clientSecret(ns, "pricing-client", apiClientID, "")
	create(t, bad)
	create(t, credential(ns, "pricing", cdv1.FlowClientCredentials, "pricing-client", idp.URL))
	eventually(t, 10*time.Second, "ClientSecretInvalid and Stalled", func() error {
		if err := credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.ClientSecretInvalidReason)(); err != nil {
			return err
		}
		return credentialCondition(ns, "pricing", cdv1.StalledCondition, metav1.ConditionTrue, cdv1.ClientSecretInvalidReason)()
	})
	if n := idp.Stats().TokenRequests["client_credentials"]; n != 0 {
		t.Errorf("%d token requests with an empty secret, want 0", n)
	}
	s, _ := getSecret(ns, "pricing-client")
	s.Data["client_secret"] = []byte(apiClientSecret + "\n") // a trailing newline from `echo` is forgiven
	if err := k8s.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "Ready after the fix", credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
	c, _ := getCredential(ns, "pricing")
	if stalled := meta.FindStatusCondition(c.Status.Conditions, cdv1.StalledCondition); stalled != nil {
		t.Errorf("Stalled still present after recovery: %+v", stalled)
	}
}

func TestInvalidClientIsTerminalUntilTheSecretChanges(t *testing.T) {
	ns := newNamespace(t)
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients()})
	startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}})
	create(t, clientSecret(ns, "pricing-client", apiClientID, "wrong-secret"))
	create(t, credential(ns, "pricing", cdv1.FlowClientCredentials, "pricing-client", idp.URL))
	eventually(t, 10*time.Second, "InvalidClient and Stalled", func() error {
		if err := credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.InvalidClientReason)(); err != nil {
			return err
		}
		return credentialCondition(ns, "pricing", cdv1.StalledCondition, metav1.ConditionTrue, cdv1.InvalidClientReason)()
	})
	c, _ := getCredential(ns, "pricing")
	if msg := fmt.Sprint(c.Status.Conditions); strings.Contains(msg, "wrong-secret") {
		t.Errorf("a condition leaks the client secret: %s", msg)
	}
	if n := idp.Stats().TokenRequests["client_credentials"]; n != 1 {
		t.Errorf("%d token requests after invalid_client, want exactly 1 (terminal, no retry)", n)
	}
	s, _ := getSecret(ns, "pricing-client")
	s.Data["client_secret"] = []byte(apiClientSecret)
	if err := k8s.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "Ready after the fix", credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
}

func TestDeletedOrEditedOutputSecretIsRepaired(t *testing.T) {
	ns, idp := setupClientCredentials(t, 30*time.Minute, nil)
	eventually(t, 20*time.Second, "Ready", credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))

	s, _ := getSecret(ns, "pricing-token")
	s.Data[cdv1.AccessTokenKey] = []byte("hand-edited")
	s.Data["mine"] = []byte("keep me")
	s.Labels["mine"] = "keep-me"
	if err := k8s.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "edited Secret repaired", func() error {
		s, err := getSecret(ns, "pricing-token")
		if err != nil {
			return err
		}
		if _, live := idp.Introspect(string(s.Data[cdv1.AccessTokenKey])); !live {
			return fmt.Errorf("access_token not a live token")
		}
		if string(s.Data["mine"]) != "keep me" || s.Labels["mine"] != "keep-me" {
			return fmt.Errorf("user's key or label wiped: %v %v", stringData(s), s.Labels)
		}
		return nil
	})

	if err := k8s.Delete(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "deleted Secret recreated", func() error {
		s, err := getSecret(ns, "pricing-token")
		if err != nil {
			return err
		}
		if s.UID == "" || s.DeletionTimestamp != nil {
			return fmt.Errorf("not recreated")
		}
		if _, live := idp.Introspect(string(s.Data[cdv1.AccessTokenKey])); !live {
			return fmt.Errorf("access_token not a live token")
		}
		return nil
	})
}

func TestRestartDoesNotReMintAFreshToken(t *testing.T) {
	ns := newNamespace(t)
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients(), AccessTokenTTL: 30 * time.Minute})
	opts := manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}}
	first := startManager(t, opts)
	create(t, clientSecret(ns, "pricing-client", apiClientID, apiClientSecret))
	create(t, credential(ns, "pricing", cdv1.FlowClientCredentials, "pricing-client", idp.URL))
	eventually(t, 20*time.Second, "Ready", credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
	first.Stop(t)
	before, _ := getSecret(ns, "pricing-token")

	startManager(t, opts)
	// The new manager reconciles the CR (its status is patched only on change, so the
	// proof is the sandbox's count after the new manager has seen the object).
	eventually(t, 20*time.Second, "still Ready", credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
	create(t, clientSecret(ns, "probe-client", apiClientID, apiClientSecret))
	create(t, credential(ns, "probe", cdv1.FlowClientCredentials, "probe-client", idp.URL))
	eventually(t, 20*time.Second, "probe Ready (the new manager is working)", credentialCondition(ns, "probe", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
	after, _ := getSecret(ns, "pricing-token")
	if string(after.Data[cdv1.AccessTokenKey]) != string(before.Data[cdv1.AccessTokenKey]) {
		t.Errorf("the restart re-minted a fresh token")
	}
	if n := idp.Stats().TokenRequests["client_credentials"]; n != 2 {
		t.Errorf("%d token requests, want 2 (one per CR, none on restart)", n)
	}
}

func TestTokenHostOutsideAllowListIsRefusedAndNothingSent(t *testing.T) {
	ns := newNamespace(t)
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients()})
	// An attacker's endpoint on loopback: it counts every connection it gets.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var connections atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			connections.Add(1)
			c.Close()
		}
	}()
	startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}})
	create(t, clientSecret(ns, "pricing-client", apiClientID, apiClientSecret))
	create(t, credential(ns, "pricing", cdv1.FlowClientCredentials, "pricing-client", "http://"+l.Addr().String()))
	eventually(t, 10*time.Second, "TokenHostNotAllowed and Stalled", func() error {
		if err := credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.TokenHostNotAllowedReason)(); err != nil {
			return err
		}
		return credentialCondition(ns, "pricing", cdv1.StalledCondition, metav1.ConditionTrue, cdv1.TokenHostNotAllowedReason)()
	})
	c, _ := getCredential(ns, "pricing")
	ready := c.Status.Conditions
	if msg := fmt.Sprint(ready); !strings.Contains(msg, "--allowed-token-hosts") {
		t.Errorf("message does not name the flag: %s", msg)
	}
	if n := connections.Load(); n != 0 {
		t.Errorf("the non-allowed host got %d connections, want 0", n)
	}
	if _, err := getSecret(ns, "pricing-token"); !apierrors.IsNotFound(err) {
		t.Errorf("an output Secret exists: %v", err)
	}
}

func TestAuthorizationCodeCredentialIsReadyWithoutMinting(t *testing.T) {
	ns := newNamespace(t)
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients()})
	startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}})
	create(t, clientSecret(ns, "login-client", loginClientID, loginClientSecret))
	create(t, credential(ns, "login", cdv1.FlowAuthorizationCode, "login-client", idp.URL))
	eventually(t, 10*time.Second, "Ready", credentialCondition(ns, "login", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.ClientReadyReason))
	c, _ := getCredential(ns, "login")
	if c.Status.ClientID != loginClientID {
		t.Errorf("status.clientID = %q", c.Status.ClientID)
	}
	if n := len(idp.Stats().TokenRequests); n != 0 {
		t.Errorf("an AuthorizationCode credential sent %d kinds of token request", n)
	}
}

func stringData(s *corev1.Secret) map[string]string {
	out := map[string]string{}
	for k, v := range s.Data {
		out[k] = string(v)
	}
	return out
}

func TestAnOutputSecretNameTakenByAnotherSecretIsAConflict(t *testing.T) {
	ns := newNamespace(t)
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients()})
	startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}})
	create(t, clientSecret(ns, "api-client", apiClientID, apiClientSecret))
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shared-token"}, StringData: map[string]string{"mine": "keep"}})
	for _, name := range []string{"first", "second"} {
		c := credential(ns, name, cdv1.FlowClientCredentials, "api-client", idp.URL)
		c.Spec.SecretName = "shared-token"
		create(t, c)
		eventually(t, 10*time.Second, name+" SecretNameConflict", credentialCondition(ns, name, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretNameConflictReason))
	}
	s, _ := getSecret(ns, "shared-token")
	if string(s.Data["mine"]) != "keep" || len(s.OwnerReferences) != 0 || s.Data[cdv1.AccessTokenKey] != nil {
		t.Errorf("the user's Secret was taken over: %+v", s)
	}
}

// SecretNameConflict says to delete the Secret that holds the name; when that Secret is
// another CR's output, deleting that CR (its output is garbage-collected) is the same
// fix. The waiting credential must take the name at once, not stay stalled for good: the
// output leaves the manager's cache, and its deletion is an event for whichever CR names
// it in spec.secretName.
func TestAnOutputSecretNameIsTakenOnceTheCRWhoseOutputHeldItIsDeleted(t *testing.T) {
	ns, _ := setupClientCredentials(t, 30*time.Minute, func(c *cdv1.CDCredential) { c.Spec.SecretName = "shared-token" })
	eventually(t, 20*time.Second, "pricing Ready", credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
	pricing, _ := getCredential(ns, "pricing")
	c := credential(ns, "second", cdv1.FlowClientCredentials, "pricing-client", pricing.Spec.Issuer)
	c.Spec.SecretName = "shared-token"
	create(t, c)
	eventually(t, 10*time.Second, "SecretNameConflict", credentialCondition(ns, "second", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretNameConflictReason))

	if err := k8s.Delete(context.Background(), pricing); err != nil {
		t.Fatal(err)
	}
	// envtest runs no garbage collector: delete the output as it would.
	if s, err := getSecret(ns, "shared-token"); err == nil {
		if err := k8s.Delete(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "second Ready once the name is free", credentialCondition(ns, "second", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
	second, _ := getCredential(ns, "second")
	if s, _ := getSecret(ns, "shared-token"); !metav1.IsControlledBy(s, second) {
		t.Errorf("shared-token is controlled by %v, want second", s.OwnerReferences)
	}
}

// The same for a credential on the default output name, <name>-token, held by an
// opted-in Secret (in the manager's cache) that is deleted. A user's Secret without the
// label is not in the cache: the credential finds it gone at its next recheck
// (TestACredentialTakesItsOutputNameOnceTheUsersSecretHoldingItIsDeleted in controllers).
func TestAnOutputSecretNameIsTakenOnceTheOptedInSecretHoldingItIsDeleted(t *testing.T) {
	ns, _ := setupClientCredentials(t, 30*time.Minute, nil)
	create(t, clientSecret(ns, "taken-token", apiClientID, apiClientSecret))
	pricing, err := getCredential(ns, "pricing")
	if err != nil {
		t.Fatal(err)
	}
	create(t, credential(ns, "taken", cdv1.FlowClientCredentials, "pricing-client", pricing.Spec.Issuer))
	eventually(t, 10*time.Second, "SecretNameConflict", credentialCondition(ns, "taken", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretNameConflictReason))

	s, _ := getSecret(ns, "taken-token")
	if err := k8s.Delete(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "Ready once the name is free", credentialCondition(ns, "taken", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
}
