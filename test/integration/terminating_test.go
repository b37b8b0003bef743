package integration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// kubectl delete namespace: the namespace controller deletes the namespace's content
// type by type, core Secrets before the cd.credops.io CRs, and the API server refuses
// every create in a Terminating namespace (NamespaceLifecycle admission; envtest runs no
// namespace controller, so the namespace stays Terminating). Between the two sweeps a
// CDCredential sees its output Secret deleted: it must neither request a token for a
// namespace that is going away nor report the refused create (SecretWriteFailed).
func TestATerminatingNamespaceGetsNoNewTokens(t *testing.T) {
	ns, idp := setupClientCredentials(t, 30*time.Minute, nil)
	eventually(t, 20*time.Second, "Ready", credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
	before := idp.Stats().TokenRequests["client_credentials"]
	ctx := context.Background()
	if err := k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	// The namespace controller's first sweep: the Secrets.
	s, err := getSecret(ns, "pricing-token")
	if err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(ctx, s); err != nil {
		t.Fatal(err)
	}
	// Until the pass that found the output gone has run: it says why it requests
	// nothing, or it requested a token.
	eventually(t, 20*time.Second, "the pass after the output's deletion", func() error {
		if idp.Stats().TokenRequests["client_credentials"] != before {
			return nil
		}
		for _, line := range strings.Split(logSink.String(), "\n") {
			if strings.Contains(line, "Not requesting a token: the namespace is being deleted") && strings.Contains(line, ns) {
				return nil
			}
		}
		return errors.New("no token requested, and no log line says the namespace is being deleted")
	})
	if after := idp.Stats().TokenRequests["client_credentials"]; after != before {
		t.Errorf("%d token request(s) for a CDCredential in a Terminating namespace", after-before)
	}
	if err := credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)(); err != nil {
		t.Errorf("Ready changed: %v", err)
	}
}
