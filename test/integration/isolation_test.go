package integration

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/util/retry"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
)

// TestACRCannotReadASecretInAnotherNamespace: a CR in namespace A naming a Secret that
// exists only in namespace B, opted in there, gets ClientSecretNotFound; B's Secret is
// never read and nothing is sent.
func TestACRCannotReadASecretInAnotherNamespace(t *testing.T) {
	nsA, nsB := newNamespace(t), newNamespace(t)
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients()})
	startClusterWideManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}})
	create(t, clientSecret(nsB, "shared-client", apiClientID, apiClientSecret))
	create(t, credential(nsA, "thief", cdv1.FlowClientCredentials, "shared-client", idp.URL))
	eventually(t, 10*time.Second, "ClientSecretNotFound", credentialCondition(nsA, "thief", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.ClientSecretNotFoundReason))
	if c, _ := getCredential(nsA, "thief"); c.Status.ClientID != "" {
		t.Errorf("status.clientID %q came from another namespace's Secret", c.Status.ClientID)
	}
	if n := len(idp.Stats().TokenRequests); n != 0 {
		t.Errorf("token requests were sent with another namespace's Secret")
	}
}

// TestWatchNamespacesIgnoresOthers: a manager limited to namespace A never touches a
// CR in namespace B.
func TestWatchNamespacesIgnoresOthers(t *testing.T) {
	nsA, nsB := newNamespace(t), newNamespace(t)
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients()})
	startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{nsA}})
	for _, ns := range []string{nsB, nsA} {
		create(t, clientSecret(ns, "api-client", apiClientID, apiClientSecret))
		create(t, credential(ns, "api", cdv1.FlowClientCredentials, "api-client", idp.URL))
	}
	eventually(t, 10*time.Second, "the watched namespace is served", credentialCondition(nsA, "api", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
	c, _ := getCredential(nsB, "api")
	if len(c.Status.Conditions) != 0 {
		t.Errorf("a CR outside --watch-namespaces got conditions: %+v", c.Status.Conditions)
	}
	if n := idp.Stats().TokenRequests["client_credentials"]; n != 1 {
		t.Errorf("%d token requests, want 1 (namespace %s only)", n, nsA)
	}
}

// TestShardsSplitTheCRsByLabel runs two managers with different shard selectors: each
// serves only its own CRs.
func TestShardsSplitTheCRsByLabel(t *testing.T) {
	ns := newNamespace(t)
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients()})
	for _, shard := range []string{"a", "b"} {
		sel, _ := labels.Parse("shard=" + shard)
		startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}, ShardSelector: sel, LeaderElectionID: "shard-" + shard})
	}
	create(t, clientSecret(ns, "api-client", apiClientID, apiClientSecret))
	for _, name := range []string{"a1", "b1", "a2", "unsharded"} {
		c := credential(ns, name, cdv1.FlowClientCredentials, "api-client", idp.URL)
		if name != "unsharded" {
			c.Labels = map[string]string{"shard": name[:1]}
		}
		create(t, c)
	}
	for _, name := range []string{"a1", "b1", "a2"} {
		eventually(t, 10*time.Second, name+" Ready", credentialCondition(ns, name, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
	}
	if n := idp.Stats().TokenRequests["client_credentials"]; n != 3 {
		t.Errorf("%d token requests, want 3: one per sharded CR, none twice", n)
	}
	c, _ := getCredential(ns, "unsharded")
	if len(c.Status.Conditions) != 0 {
		t.Errorf("a CR outside every shard was reconciled")
	}
}

// TestACRRelabelledOutOfEveryShardSaysSo: a CR relabelled to a shard no manager serves
// (a typo, a retired shard) leaves its manager's cache as if deleted: nobody renews its
// token, and its status used to go on saying Ready=True. The shard it left says
// NotInShard; a shard that selects it later replaces that at once.
func TestACRRelabelledOutOfEveryShardSaysSo(t *testing.T) {
	ns := newNamespace(t)
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients()})
	for _, shard := range []string{"a", "b"} {
		sel, _ := labels.Parse("shard=" + shard)
		startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}, ShardSelector: sel, LeaderElectionID: "shard-" + shard})
	}
	create(t, clientSecret(ns, "api-client", apiClientID, apiClientSecret))
	c := credential(ns, "api", cdv1.FlowClientCredentials, "api-client", idp.URL)
	c.Labels = map[string]string{"shard": "a"}
	create(t, c)
	eventually(t, 10*time.Second, "shard a serves it", credentialCondition(ns, "api", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
	relabel := func(shard string) {
		t.Helper()
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			c, err := getCredential(ns, "api")
			if err != nil {
				return err
			}
			c.Labels["shard"] = shard
			return k8s.Update(t.Context(), c)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	relabel("c")
	eventually(t, 10*time.Second, "the shard it left says so", credentialCondition(ns, "api", cdv1.ReadyCondition, metav1.ConditionUnknown, cdv1.NotInShardReason))
	// And goes on publishing its series, which went with its cache entry: CDNotInShard
	// and CDTokenExpiresSoon read them.
	eventually(t, 10*time.Second, "its series published", func() error {
		left := map[string]string{"kind": "CDCredential", "namespace": ns, "name": "api"}
		if n := len(series(t, "cdcredops_condition", map[string]string{"kind": "CDCredential", "namespace": ns, "name": "api", "type": cdv1.ReadyCondition, "status": "Unknown", "reason": cdv1.NotInShardReason})); n != 1 {
			return fmt.Errorf("%d Ready NotInShard series", n)
		}
		if n := len(series(t, "cdcredops_token_expiration_timestamp_seconds", left)); n != 1 {
			return fmt.Errorf("%d expiry series", n)
		}
		return nil
	})
	relabel("b")
	eventually(t, 10*time.Second, "shard b serves it", credentialCondition(ns, "api", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
}
