package integration

import (
	"context"
	"fmt"
	"sync"
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

// A policy or a user sets immutable: true on a customer's refresh-token Secret (a
// "Secrets must be immutable" hardening policy, or `kubectl patch`). The API server would
// still take the in-flight mark (metadata), but never the new refresh token (data): the
// token is not sent, the grant says so, and the Secret created again without immutable,
// as the message says, is rotated at once.
func TestAnImmutableRefreshTokenSecretIsNeverSent(t *testing.T) {
	f := newGrantFixture(t, time.Hour)
	rt := f.idp.SeedGrant(loginClientID, "acme@carrier.example", []string{"marketplace", "offline_access"})
	s := refreshSecret(f.ns, "acme-refresh", rt)
	yes := true
	s.Immutable = &yes
	create(t, s)
	create(t, userGrant(f.ns, "acme", "login", "acme-refresh"))
	startManager(t, f.opts)
	eventually(t, 30*time.Second, "RefreshTokenSecretImmutable", grantCondition(f.ns, "acme", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.RefreshTokenSecretImmutableReason))
	if n := f.refreshCount(); n != 0 {
		t.Errorf("%d refresh requests sent for a refresh token whose successor the API server cannot store (immutable Secret)", n)
	}
	stored, err := getSecret(f.ns, "acme-refresh")
	if err != nil {
		t.Fatal(err)
	}
	if m := stored.Annotations[cdv1.RotationInFlightAnnotation]; m != "" {
		t.Errorf("in-flight mark %q on a Secret whose token was not sent", m)
	}

	// Created again without immutable, as Ready says.
	if err := k8s.Delete(context.Background(), stored); err != nil {
		t.Fatal(err)
	}
	create(t, refreshSecret(f.ns, "acme-refresh", rt))
	eventually(t, 30*time.Second, "rotated", f.rotations("acme", 1))
	f.assertNoTokenReused()
	if st := f.idp.Stats(); st.GrantsRevoked != 0 {
		t.Errorf("%d grants revoked, want none", st.GrantsRevoked)
	}
}

// A user (or a policy) marks a CR's output Secret immutable. The operator owns that
// Secret; the API server would refuse every new token in it, for good (immutable cannot
// be unset). At the next renewal the operator deletes it and creates it again with the
// new token: no write is refused, so no token is held and no failure recorded.
func TestAnImmutableOutputSecretIsCreatedAgainWithTheNextToken(t *testing.T) {
	ns := newNamespace(t)
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients(), AccessTokenTTL: 6 * time.Second})
	startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}})
	create(t, clientSecret(ns, "pricing-client", apiClientID, apiClientSecret))
	create(t, credential(ns, "pricing", cdv1.FlowClientCredentials, "pricing-client", idp.URL))
	eventually(t, 30*time.Second, "ready", credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
	out, err := getSecret(ns, "pricing-token")
	if err != nil {
		t.Fatal(err)
	}
	yes := true
	out.Immutable = &yes
	if err := k8s.Update(context.Background(), out); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the output Secret created again with a new token", func() error {
		now, err := getSecret(ns, "pricing-token")
		if err != nil {
			return err
		}
		if now.UID == out.UID || now.Immutable != nil || string(now.Data["access_token"]) == string(out.Data["access_token"]) {
			return fmt.Errorf("still the immutable Secret (UID %s, immutable %v)", now.UID, now.Immutable)
		}
		c, err := getCredential(ns, "pricing")
		if err != nil {
			return err
		}
		return conditionIs(c.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	})
	c, _ := getCredential(ns, "pricing")
	if c.Status.LastFailure != nil {
		t.Errorf("failure memory %+v: the immutable output was replaced before a token was requested, so no write failed", c.Status.LastFailure)
	}
	evs := &eventsv1.EventList{}
	if err := k8s.List(context.Background(), evs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Items {
		if e.Reason == cdv1.SecretWriteFailedReason {
			t.Errorf("event %s %q: no write of the output should have been refused", e.Reason, e.Note)
		}
	}
}

// writeCounter counts the manager's writes by verb and object name (a faults whose
// check lets everything through).
type writeCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (w *writeCounter) count(verb string, obj client.Object) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n == nil {
		w.n = map[string]int{}
	}
	w.n[verb+" "+obj.GetName()]++
	return nil
}

func (w *writeCounter) reset() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := w.n
	w.n = map[string]int{}
	return n
}

// mutateEverySecret installs a MutatingAdmissionPolicy that applies the CEL apply
// configuration expr to every Secret created or updated in ns, as a Kyverno or
// Gatekeeper mutation would.
func mutateEverySecret(t *testing.T, ns, expr string) {
	t.Helper()
	ctx := context.Background()
	fail := admissionv1.Fail
	never := admissionv1.NeverReinvocationPolicy
	policy := &admissionv1.MutatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "mutate-" + ns},
		Spec: admissionv1.MutatingAdmissionPolicySpec{
			FailurePolicy:      &fail,
			MatchConstraints:   secretWritesIn(ns),
			ReinvocationPolicy: never,
			Mutations: []admissionv1.Mutation{{
				PatchType:          admissionv1.PatchTypeApplyConfiguration,
				ApplyConfiguration: &admissionv1.ApplyConfiguration{Expression: expr},
			}},
		},
	}
	binding := &admissionv1.MutatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: policy.Name},
		Spec: admissionv1.MutatingAdmissionPolicyBindingSpec{
			PolicyName:     policy.Name,
			MatchResources: &admissionv1.MatchResources{NamespaceSelector: secretWritesIn(ns).NamespaceSelector},
		},
	}
	create(t, policy)
	create(t, binding)
	t.Cleanup(func() {
		_ = k8s.Delete(ctx, binding)
		_ = k8s.Delete(ctx, policy)
	})
	eventually(t, 30*time.Second, "the policy mutates", func() error {
		probe := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe"}}
		if err := k8s.Create(ctx, probe, client.DryRunAll); err != nil {
			return err
		}
		if len(probe.Labels)+len(probe.Annotations)+len(probe.Data) == 0 && probe.Immutable == nil {
			return fmt.Errorf("not mutated yet")
		}
		return nil
	})
}

// secretMutations are CEL apply configurations a mutating admission policy puts on
// every Secret: a cost-center label, an annotation, a data key added, a managed-by label
// rewritten, an annotation that changes with every write.
var secretMutations = map[string]string{
	"label and annotation": `Object{metadata: Object.metadata{labels: {"cost.example/center": "platform"}, annotations: {"policy.example/mutated": "true"}}}`,
	"managed-by rewritten": `Object{metadata: Object.metadata{labels: {"app.kubernetes.io/managed-by": "kyverno"}}}`,
	"data key added":       `Object{data: {"policy-stamp": "eA=="}}`,
	"annotation per write": `Object{metadata: Object.metadata{annotations: {"policy.example/seen": (has(object.metadata.resourceVersion) ? object.metadata.resourceVersion : "new")}}}`,
}

// Mutating admission on every Secret: the operator's own writes come back changed. Over a
// window in which no token is due (a 5 s measurement, not a wait for anything), a grant
// and a client-credentials CR that are Ready write nothing and request nothing.
func TestSecretsMutatedByAdmissionCostNothingWhileNoTokenIsDue(t *testing.T) {
	for name, expr := range secretMutations {
		t.Run(name, func(t *testing.T) {
			f := newGrantFixtureOn(t, startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients(), AccessTokenTTL: time.Hour}))
			mutateEverySecret(t, f.ns, expr)
			var wc writeCounter
			fc := &faults{}
			fc.set(wc.count)
			opts := f.opts
			opts.NewClient = fc.newClient()
			create(t, clientSecret(f.ns, "pricing-client", apiClientID, apiClientSecret))
			create(t, credential(f.ns, "pricing", cdv1.FlowClientCredentials, "pricing-client", f.idp.URL))
			f.addGrant("acme")
			startManager(t, opts)
			eventually(t, 30*time.Second, "grant rotated", f.rotations("acme", 1))
			eventually(t, 30*time.Second, "credential ready", credentialCondition(f.ns, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
			wc.reset()
			refresh0, cc0 := f.refreshCount(), f.idp.Stats().TokenRequests["client_credentials"]
			time.Sleep(5 * time.Second)
			writes, refreshes, ccs := wc.reset(), f.refreshCount()-refresh0, f.idp.Stats().TokenRequests["client_credentials"]-cc0
			if len(writes) != 0 || refreshes != 0 || ccs != 0 {
				t.Errorf("over a quiet window: writes %v, %d refreshes, %d client-credentials requests; want none", writes, refreshes, ccs)
			}
		})
	}
}

// The same mutations while a grant rotates every couple of seconds: each renewal costs
// one refresh and a bounded number of writes, never a loop, and no token is reused.
func TestSecretsMutatedByAdmissionCostOneRefreshPerRenewal(t *testing.T) {
	for name, expr := range secretMutations {
		t.Run(name, func(t *testing.T) {
			f := newGrantFixtureOn(t, startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients(), AccessTokenTTL: 3 * time.Second}))
			mutateEverySecret(t, f.ns, expr)
			var wc writeCounter
			fc := &faults{}
			fc.set(wc.count)
			opts := f.opts
			opts.NewClient = fc.newClient()
			f.addGrant("acme")
			startManager(t, opts)
			eventually(t, 30*time.Second, "grant rotated", f.rotations("acme", 1))
			g, _ := getGrant(f.ns, "acme")
			rot0 := g.Status.RotationCount
			wc.reset()
			r0 := f.refreshCount()
			time.Sleep(5 * time.Second) // a measurement window, not a wait
			writes, refreshes := wc.reset(), f.refreshCount()-r0
			g, _ = getGrant(f.ns, "acme")
			rot := int(g.Status.RotationCount - rot0)
			total := 0
			for _, n := range writes {
				total += n
			}
			if refreshes > rot+1 || total > 5*(rot+1) {
				t.Errorf("over 5s: %d rotations, %d refreshes, %d writes %v", rot, refreshes, total, writes)
			}
			f.assertNoTokenReused()
		})
	}
}
