package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
)

// secretWritesIn matches every Secret created or updated in ns, for an admission policy.
func secretWritesIn(ns string) *admissionv1.MatchResources {
	return &admissionv1.MatchResources{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
		ResourceRules: []admissionv1.NamedRuleWithOperations{{RuleWithOperations: admissionv1.RuleWithOperations{
			Operations: []admissionv1.OperationType{admissionv1.Create, admissionv1.Update},
			Rule:       admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"secrets"}},
		}}},
	}
}

// refuseTokenSecrets installs a ValidatingAdmissionPolicy that refuses, as Invalid,
// every write of an operator output Secret in ns: what a platform team's policy engine
// might do. It returns a func that lifts it.
func refuseTokenSecrets(t *testing.T, ns string) (lift func()) {
	t.Helper()
	probe := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe", Labels: map[string]string{cdv1.OwnerLabel: "probe"}}}
	return refuseSecretWrites(t, "no-tokens-"+ns, ns,
		"!has(object.metadata.labels) || !('"+cdv1.OwnerLabel+"' in object.metadata.labels)",
		"access-token Secrets are not allowed in this namespace", probe)
}

// refuseSecretWrites installs a ValidatingAdmissionPolicy name that refuses, as Invalid
// with message, every Secret created or updated in ns for which expression is false, and
// waits until it refuses probe (a dry-run create). It returns a func that lifts it.
func refuseSecretWrites(t *testing.T, name, ns, expression, message string, probe *corev1.Secret) (lift func()) {
	t.Helper()
	ctx := context.Background()
	invalid := metav1.StatusReasonInvalid
	fail := admissionv1.Fail
	policy := &admissionv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy:    &fail,
			MatchConstraints: secretWritesIn(ns),
			Validations:      []admissionv1.Validation{{Expression: expression, Message: message, Reason: &invalid}},
		},
	}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: policy.Name},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        policy.Name,
			ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
			MatchResources:    &admissionv1.MatchResources{NamespaceSelector: secretWritesIn(ns).NamespaceSelector},
		},
	}
	create(t, policy)
	create(t, binding)
	// The API server takes a moment to load a policy: probe until it refuses.
	eventually(t, 30*time.Second, "the policy refuses", func() error {
		if err := k8s.Create(ctx, probe.DeepCopy(), client.DryRunAll); err == nil {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	return func() {
		_ = k8s.Delete(ctx, binding)
		_ = k8s.Delete(ctx, policy)
	}
}

// TestAnOutputSecretTheAPIServerRefusesIsOnTheCRAndCostsNoSecondToken: a real API
// server refuses the output Secret as Invalid. The CR says so with the API server's
// reason and message, a Warning event is recorded, the write is retried with backoff,
// and no second token is requested; once the policy is lifted the held token lands.
func TestAnOutputSecretTheAPIServerRefusesIsOnTheCRAndCostsNoSecondToken(t *testing.T) {
	ns := newNamespace(t)
	lift := refuseTokenSecrets(t, ns)
	defer lift()
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients()})
	startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}})
	create(t, clientSecret(ns, "pricing-client", apiClientID, apiClientSecret))
	create(t, credential(ns, "pricing", cdv1.FlowClientCredentials, "pricing-client", idp.URL))
	eventually(t, 30*time.Second, "SecretWriteFailed, retried with backoff", func() error {
		c, err := getCredential(ns, "pricing")
		if err != nil {
			return err
		}
		if f := c.Status.LastFailure; f == nil || f.FailedAttempts < 2 {
			return fmt.Errorf("lastFailure %+v", c.Status.LastFailure)
		}
		return conditionIs(c.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretWriteFailedReason)
	})
	c, _ := getCredential(ns, "pricing")
	msg := conditionMessage(c.Status.Conditions, cdv1.ReadyCondition)
	if !strings.Contains(msg, "(Invalid)") || !strings.Contains(msg, "access-token Secrets are not allowed in this namespace") {
		t.Errorf("Ready message %q lacks the API server's reason and message", msg)
	}
	if n := idp.Stats().TokenRequests["client_credentials"]; n != 1 {
		t.Errorf("%d token requests, want 1: the held token is written again, not re-requested", n)
	}
	eventually(t, 10*time.Second, "a SecretWriteFailed warning", func() error {
		evs := &eventsv1.EventList{}
		if err := k8s.List(context.Background(), evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == "pricing" && e.Reason == cdv1.SecretWriteFailedReason && e.Type == corev1.EventTypeWarning {
				return nil
			}
		}
		return fmt.Errorf("no event")
	})
	lift()
	eventually(t, 60*time.Second, "the held token lands", credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
	if n := idp.Stats().TokenRequests["client_credentials"]; n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}
}

// A platform team's admission policy refuses the operator's in-flight mark on a
// refresh-token Secret (before 2026-12-03 the test made the API server refuse it with
// annotations just under its 256 KiB limit; the operator now refuses such a Secret
// itself, over metabound.Max, before any mark). The mark is refused as Invalid on every
// renewal: the grant says so instead of staying Ready while its access token runs out,
// sends nothing, and rotates again once the policy is lifted.
func TestAnInFlightMarkTheAPIServerRefusesIsOnTheGrant(t *testing.T) {
	f := newGrantFixture(t, 4*time.Second)
	startManager(t, f.opts)
	f.addGrant("acme")
	eventually(t, 20*time.Second, "the first rotation", f.rotations("acme", 1))

	probe := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "probe", Annotations: map[string]string{cdv1.RotationInFlightAnnotation: "x"}}}
	lift := refuseSecretWrites(t, "no-marks-"+f.ns, f.ns,
		"!has(object.metadata.annotations) || !('"+cdv1.RotationInFlightAnnotation+"' in object.metadata.annotations)",
		"this namespace's Secrets may not be marked", probe)
	defer lift()
	eventually(t, 20*time.Second, "SecretWriteFailed", grantCondition(f.ns, "acme", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretWriteFailedReason))
	g, _ := getGrant(f.ns, "acme")
	if msg := conditionMessage(g.Status.Conditions, cdv1.ReadyCondition); !strings.Contains(msg, "acme-refresh (Invalid)") || !strings.Contains(msg, "may not be marked") {
		t.Errorf("Ready message %q, want the Secret and the API server's reason and message", msg)
	}

	lift()
	eventually(t, 30*time.Second, "a rotation once the policy is lifted", f.rotations("acme", g.Status.RotationCount+1))
	f.assertNoTokenReused()
}
