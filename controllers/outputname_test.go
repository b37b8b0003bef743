package controllers

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// TestAnOutputSecretNameTheAPIServerWouldRefuseStallsBeforeAnyTokenRequest: a CR name
// may have 253 characters, but the default output Secret <name>-token of one over 247 is
// no valid Secret name. Admission refuses such a CR now; one created before the rule must
// not spend a token (for a grant: the customer's single-use refresh token) that the API
// server then refuses to store, again after every restart. It stalls naming the name and
// the fix, and setting spec.secretName lets it go on.
func TestAnOutputSecretNameTheAPIServerWouldRefuseStallsBeforeAnyTokenRequest(t *testing.T) {
	long := strings.Repeat("a", 250)
	for _, kind := range []struct {
		name      string
		objs      []client.Object
		pass      func(w *world) (reconcile.Result, error)
		requests  func(w *world) int
		status    func(w *world) ([]metav1.Condition, string)
		setSecret func(w *world)
	}{
		{
			name: "CDCredential",
			objs: []client.Object{&cdv1.CDCredential{
				ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: long, UID: "uid-long", Generation: 1},
				Spec:       cdv1.CDCredentialSpec{Flow: cdv1.FlowClientCredentials, ClientSecretRef: cdv1.ClientSecretReference{Name: "pricing-client"}, Issuer: "https://id.example.com"},
			}},
			pass:     func(w *world) (reconcile.Result, error) { return w.reconcileCred(long) },
			requests: func(w *world) int { return w.tokens.ccCount() },
			status: func(w *world) ([]metav1.Condition, string) {
				c := w.cred(long)
				return c.Status.Conditions, c.Status.SecretName
			},
			setSecret: func(w *world) {
				c := w.cred(long)
				w.update(c, func() { c.Spec.SecretName = "long-token"; c.Generation++ })
			},
		},
		{
			name: "CDUserGrant",
			objs: []client.Object{
				optedIn(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "long-refresh", Annotations: map[string]string{cdv1.BoundToAnnotation: long + "/uid-" + long}},
					Data: map[string][]byte{"refresh_token": []byte("refresh-0")}}, cdv1.SecretTypeRefreshToken),
				grantObj(long, "long-refresh"),
			},
			pass:     func(w *world) (reconcile.Result, error) { return w.reconcileGrant(long) },
			requests: func(w *world) int { return len(w.tokens.refreshes()) },
			status: func(w *world) ([]metav1.Condition, string) {
				g := w.grant(long)
				return g.Status.Conditions, g.Status.SecretName
			},
			setSecret: func(w *world) {
				g := w.grant(long)
				w.update(g, func() { g.Spec.SecretName = "long-token"; g.Generation++ })
			},
		},
	} {
		t.Run(kind.name, func(t *testing.T) {
			w := newWorld(t, kind.objs...)
			_, err := kind.pass(w)
			if !errors.Is(err, reconcile.TerminalError(nil)) {
				t.Errorf("err %v, want a terminal error", err)
			}
			if n := kind.requests(w); n != 0 {
				t.Fatalf("%d token requests for an output Secret named %d characters, want 0: the token could never be stored", n, len(long+"-token"))
			}
			conds, secretName := kind.status(w)
			wantCondition(t, conds, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretTemplateInvalidReason)
			wantCondition(t, conds, cdv1.StalledCondition, metav1.ConditionTrue, cdv1.SecretTemplateInvalidReason)
			msg := meta.FindStatusCondition(conds, cdv1.ReadyCondition).Message
			for _, want := range []string{long + "-token", "set spec.secretName", "no more than 253 characters"} {
				if !strings.Contains(strings.ToLower(msg), strings.ToLower(want)) {
					t.Errorf("Ready message %q does not say %q", msg, want)
				}
			}
			if secretName != "" {
				t.Errorf("status.secretName %q, want none: no token is in any Secret", secretName)
			}

			kind.setSecret(w)
			if _, err := kind.pass(w); err != nil {
				t.Fatal(err)
			}
			if n := kind.requests(w); n != 1 {
				t.Errorf("%d token requests once spec.secretName is set, want 1", n)
			}
			conds, secretName = kind.status(w)
			wantCondition(t, conds, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
			if secretName != "long-token" || len(w.secret("long-token").Data[cdv1.AccessTokenKey]) == 0 {
				t.Errorf("status.secretName %q, want long-token holding the token", secretName)
			}
		})
	}
}
