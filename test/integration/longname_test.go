package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// A CR name is valid up to 253 characters, but its default output Secret <name>-token
// is no valid Secret name past 247. Such a CR used to have its token requested (for a
// grant: the customer's single-use refresh token rotated) and the write refused as
// Invalid, again after every restart. Admission now refuses it unless spec.secretName
// names the output, and refuses an edit that drops spec.secretName from one.

// wantRefused fails the test unless err is an admission refusal that says to set
// spec.secretName.
func wantRefused(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), "needs spec.secretName") {
		t.Errorf("%s: %v, want a refusal that says to set spec.secretName", what, err)
	}
}

func TestALongCRNameWithoutSecretNameIsRefusedAndSpendsNoToken(t *testing.T) {
	named := strings.Repeat("a", 250)
	ns, idp := setupClientCredentials(t, 30*time.Minute, func(c *cdv1.CDCredential) { c.Name = named; c.Spec.SecretName = "long-token" })
	unnamed := credential(ns, strings.Repeat("b", 250), cdv1.FlowClientCredentials, "pricing-client", idp.URL)
	wantRefused(t, "a ClientCredentials CDCredential named with 250 characters and no spec.secretName", k8s.Create(context.Background(), unnamed))

	eventually(t, 20*time.Second, "Ready", credentialCondition(ns, named, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
	if n := idp.Stats().TokenRequests["client_credentials"]; n != 1 {
		t.Errorf("%d token requests, want 1: the one with spec.secretName", n)
	}
	c, _ := getCredential(ns, named)
	wantRefused(t, "dropping spec.secretName", k8s.Patch(context.Background(), c, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"secretName":null}}`))))

	// An AuthorizationCode credential mints nothing of its own: any valid name does.
	create(t, credential(ns, strings.Repeat("c", 253), cdv1.FlowAuthorizationCode, "pricing-client", idp.URL))
}

func TestALongGrantNameWithoutSecretNameIsRefusedAndSpendsNoRefreshToken(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	startManager(t, f.opts)
	rt := f.idp.SeedGrant(loginClientID, "long@carrier.example", []string{"marketplace", "offline_access"})
	create(t, refreshSecret(f.ns, "long-refresh", rt))
	wantRefused(t, "a CDUserGrant named with 250 characters and no spec.secretName", k8s.Create(context.Background(), userGrant(f.ns, strings.Repeat("g", 250), "login", "long-refresh")))

	named := userGrant(f.ns, strings.Repeat("h", 250), "login", "long-refresh")
	named.Spec.SecretName = "long-token"
	create(t, named)
	eventually(t, 20*time.Second, "the first rotation", f.rotations(named.Name, 1))
	if n := f.refreshCount(); n != 1 {
		t.Errorf("%d refresh requests, want 1: the one of the grant with spec.secretName", n)
	}
	g, _ := getGrant(f.ns, named.Name)
	wantRefused(t, "dropping spec.secretName", k8s.Patch(context.Background(), g, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"secretName":null}}`))))
	f.assertNoTokenReused()
}
