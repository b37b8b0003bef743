package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
	"github.com/credops/cd-credentials-operator/test/support"
)

// The operator's key Secret is created on first start and shared by all replicas
// (README). Deleted while the replicas run (a GitOps prune, a cleanup script: the chart
// does not render it, so nothing else owns it), the running manager puts it back with
// the key it holds, so a replica started afterwards (a rollout, an eviction) signs with
// the same key, and its callback accepts the links the leader put in status. Before, the
// new replica created a key of its own and refused the leader's links, which the Service
// sends half the customers to.
func TestADeletedKeySecretIsRecreatedWithTheKeyTheReplicasHold(t *testing.T) {
	ns := newNamespace(t)
	addrA, addrB := freeAddr(t), freeAddr(t)
	callbackURL := "http://" + addrA + "/callback" // the external URL both replicas are configured with
	idp := startSandbox(t, cdsandbox.Options{Clients: []cdsandbox.Client{{
		ID: loginClientID, Secret: loginClientSecret, GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{callbackURL},
	}}})
	replica := func(bind string) manager.Options {
		return manager.Options{
			AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns},
			CallbackBindAddress: bind, CallbackURL: callbackURL, KeySecret: types.NamespacedName{Namespace: ns, Name: "operator-key"},
			LeaderElection: true, LeaderElectionNamespace: ns, LeaderElectionID: "key-secret",
		}
	}
	startManager(t, replica(addrA)) // the leader
	create(t, clientSecret(ns, "login-client", loginClientID, loginClientSecret))
	create(t, credential(ns, "login", cdv1.FlowAuthorizationCode, "login-client", idp.URL))
	eventually(t, 20*time.Second, "the credential Ready", credentialCondition(ns, "login", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.ClientReadyReason))

	original, err := getSecret(ns, "operator-key")
	if err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(context.Background(), original); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the key Secret recreated with the key the manager holds", func() error {
		s, err := getSecret(ns, "operator-key")
		if err != nil {
			return err
		}
		if s.UID == original.UID {
			return fmt.Errorf("still the deleted Secret")
		}
		if !bytes.Equal(s.Data["hmac-key"], original.Data["hmac-key"]) {
			return fmt.Errorf("recreated with another key")
		}
		return nil
	})

	startManager(t, replica(addrB)) // a follower, started after the deletion
	create(t, userGrant(ns, "acme", "login", "acme-refresh"))
	var authURL string
	eventually(t, 20*time.Second, "authorizationURL", func() error {
		g, err := getGrant(ns, "acme")
		if err != nil {
			return err
		}
		if authURL = g.Status.AuthorizationURL; authURL == "" {
			return fmt.Errorf("no authorizationURL")
		}
		return nil
	})
	redirect := support.Login(t, idp.URL, authURL, callbackURL, "login")
	u, _ := url.Parse(redirect)
	u.Host = addrB // the Service sends this customer to the follower
	resp, err := noFollow.Get(u.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the follower's callback answered HTTP %d to the leader's link: %.300s", resp.StatusCode, body)
	}
}

// A key Secret that comes to hold another key (rotated on purpose) ends the manager
// with an error, so that the pod restarts and reads the new key, rather than signing
// links the other replicas refuse.
func TestAManagerWhoseKeySecretGetsAnotherKeyExits(t *testing.T) {
	ns := newNamespace(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	op, err := manager.New(ctx, cfg, manager.Options{
		WatchNamespaces: []string{ns}, KeySecret: types.NamespacedName{Namespace: ns, Name: "operator-key"},
		MetricsBindAddress: "0", HealthProbeBindAddress: "0", SeveralPerProcess: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- op.Start(ctx) }()

	s, err := getSecret(ns, "operator-key")
	if err != nil {
		t.Fatal(err)
	}
	s.Data = map[string][]byte{"hmac-key": []byte("a-new-key-rotated-on-purpose-0123456789")}
	if err := k8s.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "holds another key") {
			t.Errorf("the manager returned %v, want an error saying its key Secret holds another key", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the manager still runs 20s after its key Secret got another key")
	}
	if !logged("The operator's key Secret holds another key", ns) {
		t.Errorf("no log line says the key Secret %s/operator-key holds another key", ns)
	}
}

// logged tells whether a log line holds every one of words.
func logged(words ...string) bool {
	for _, line := range strings.Split(logSink.String(), "\n") {
		all := true
		for _, w := range words {
			all = all && strings.Contains(line, w)
		}
		if all {
			return true
		}
	}
	return false
}
