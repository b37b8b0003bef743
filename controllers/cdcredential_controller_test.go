package controllers

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

func TestAClientCredentialsTokenIsOneRequestAndTwoWrites(t *testing.T) {
	w := newWorld(t)
	res, err := w.reconcileCred("pricing")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"apply pricing-token", "status pricing"}, w.takeWrites()); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
	c := w.cred("pricing")
	wantCondition(t, c.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	if c.Status.ClientID != "pricing-id" || !strings.HasPrefix(c.Status.ClientSecretHash, "hmac-sha256:") || strings.Contains(c.Status.ClientSecretHash, "pricing-secret") {
		t.Errorf("status %+v", c.Status)
	}
	w.clock.Step(res.RequeueAfter - time.Second)
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	if n := w.tokens.ccCount(); n != 1 {
		t.Errorf("%d requests before the renewal time, want 1", n)
	}
}

// TestARefusedRequestIsNotSentAgainUntilItChanges: a CR brought back by anything that
// changes nothing about its request (a sharer's status, a resync, a restart, an edit of
// a field that is not sent) reports the refusal again without sending; a new client
// secret, or an edit of what is sent, is a new request.
func TestARefusedRequestIsNotSentAgainUntilItChanges(t *testing.T) {
	w := newWorld(t)
	refused := &tokenclient.Error{Kind: tokenclient.KindGrantTypeNotAllowed, Code: "unauthorized_client", StatusCode: 400}
	w.tokens.failNext(refused, refused, refused)
	steps := []struct {
		name   string
		change func()
		wait   time.Duration // short of the recheck 10 minutes after a refusal
		sent   int
	}{
		{"the first pass sends and is refused", func() {}, time.Minute, 1},
		{"a pass that changes nothing sends nothing", func() {}, time.Minute, 1},
		{"nor does a restarted process", func() {
			w.creds = &CDCredentialReconciler{Client: w.client, APIReader: w.client, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Key: w.creds.Key}
		}, time.Minute, 1},
		{"a new client secret is a new request", func() {
			s := w.secret("pricing-client")
			w.update(s, func() { s.Data["client_secret"] = []byte("secret-2") })
		}, time.Minute, 2},
		{"nor does an edit of a field that is not sent", func() {
			c := w.cred("pricing")
			w.update(c, func() {
				c.Spec.SecretTemplate = &cdv1.SecretTemplate{Labels: map[string]cdv1.LabelValue{"team": "pricing"}}
				c.Generation++
			})
		}, time.Minute, 2},
		// Held to the budget: a third of the (unknown: 30-minute) lifetime after the
		// last refusal.
		{"an edit of what is sent is a new request", func() {
			c := w.cred("pricing")
			w.update(c, func() { c.Spec.Scopes = []string{"marketplace"}; c.Generation++ })
		}, 9 * time.Minute, 3},
	}
	for _, s := range steps {
		s.change()
		w.clock.Step(s.wait)
		if _, err := w.reconcileCred("pricing"); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if n := w.tokens.ccCount(); n != s.sent {
			t.Fatalf("%s: %d requests sent, want %d", s.name, n, s.sent)
		}
		c := w.cred("pricing")
		for _, typ := range []string{cdv1.FlowMisuseCondition, cdv1.StalledCondition} {
			wantCondition(t, c.Status.Conditions, typ, metav1.ConditionTrue, cdv1.GrantTypeNotAllowedReason)
		}
	}
}

// TestEditsOfWhatIsSentGetAtMostThreeRequestsPerTokenLifetime: DESIGN §8, a user who may
// only edit CRs cannot make the operator send more than 3 token requests per token
// lifetime; §4, whatever the spec says, a CR is never renewed sooner than a third of the
// lifetime after issuance. An edit of spec.scopes makes the stored token one issued for
// another request, which used to be replaced at once, once per edit. Flipping it every
// 20 seconds for a whole lifetime now gets the token at issuance and one a third of the
// lifetime after each, and the CR says when the next goes out.
func TestEditsOfWhatIsSentGetAtMostThreeRequestsPerTokenLifetime(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	results := w.editForALifetime(func(i int) {
		if i == 1 { // what the pass after the first edit left
			c := w.cred("pricing")
			wantCondition(t, c.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
			if rt := c.Status.RenewalTime; rt == nil || !rt.Time.Equal(epoch.Add(10*time.Minute)) {
				t.Errorf("renewalTime %v, want 10:10:00, when the token for the edited spec is asked for", rt)
			}
			want := "The spec changed since the token in Secret pricing-token was issued; the token for it is requested at status.renewalTime (at most 3 requests per token lifetime)"
			if got := condition(t, c.Status.Conditions, cdv1.ReconcilingCondition); got.Status != metav1.ConditionTrue || got.Message != want {
				t.Errorf("Reconciling %s %q, want True %q", got.Status, got.Message, want)
			}
		}
		c := w.cred("pricing")
		w.update(c, func() { c.Spec.Scopes = []string{[]string{"a", "b"}[i%2]}; c.Generation++ })
	}, w.reconcileCred, "pricing")
	if want := 9*time.Minute + 40*time.Second; results[0].RequeueAfter != want {
		t.Errorf("RequeueAfter %s after the first edit, want %s (a third of the lifetime after issuance)", results[0].RequeueAfter, want)
	}
	if n := w.tokens.ccCount(); n != 3 {
		t.Errorf("%d requests in one 30-minute lifetime of edits every 20 s, want 3 (at issuance, 10 and 20 minutes later)", n)
	}
	if got := w.secret("pricing-token").Data[cdv1.AccessTokenKey]; string(got) != "cc-access-3" {
		t.Errorf("the Secret holds %q, want the token asked for at 10:20 (cc-access-3)", got)
	}
}

func TestAnUnplacedRefusalOfAClientIsTriedThreeTimes(t *testing.T) {
	w := newWorld(t)
	odd := &tokenclient.Error{Kind: tokenclient.KindRefused, StatusCode: 418, Description: "I'm a teapot"}
	w.tokens.failNext(odd, odd, odd, odd)
	for range 5 {
		res, _ := w.reconcileCred("pricing")
		w.clock.Step(max(res.RequeueAfter, time.Minute))
	}
	if n := w.tokens.ccCount(); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
	wantCondition(t, w.cred("pricing").Status.Conditions, cdv1.StalledCondition, metav1.ConditionTrue, cdv1.TokenRequestRefusedReason)
}

func TestARefusedScopeStopsUntilItsRecheckAndNamesIt(t *testing.T) {
	w := newWorld(t)
	c := w.cred("pricing")
	w.update(c, func() { c.Spec.Scopes = []string{"marketplace", "pricing:write"} })
	w.tokens.failNext(&tokenclient.Error{Kind: tokenclient.KindInvalidScope, Code: "invalid_scope", StatusCode: 400, Scopes: []string{"pricing:write"}}, &tokenclient.Error{Kind: tokenclient.KindInvalidScope, Code: "invalid_scope", StatusCode: 400, Scopes: []string{"pricing:write"}})
	for range 4 {
		_, _ = w.reconcileCred("pricing")
		w.clock.Step(time.Minute)
	}
	if n := w.tokens.ccCount(); n != 1 {
		t.Errorf("%d requests, want 1 before its recheck 5 minutes later", n)
	}
	ready := condition(t, w.cred("pricing").Status.Conditions, cdv1.ReadyCondition)
	if ready.Reason != cdv1.ScopeNotAllowedReason || !strings.Contains(ready.Message, "pricing:write") {
		t.Errorf("Ready %+v", ready)
	}
}

// TestARefusalTheIdentityServerFixesRecoversAtItsRecheck: a refusal of the client's
// registration may be fixed at the identity server alone (a product allocated, a grant
// type enabled, a scope granted, a rotated client secret activated), with nothing in the
// cluster to change: the CR asks again at its recheck time (a third of the lifetime, 10
// minutes when unknown: the request budget), requeued for it, and recovers with no one
// touching it.
func TestARefusalTheIdentityServerFixesRecoversAtItsRecheck(t *testing.T) {
	for name, refusal := range map[string]*tokenclient.Error{
		"402 ProductNotAllocated":           {Kind: tokenclient.KindProductNotAllocated, StatusCode: 402},
		"unauthorized_client":               {Kind: tokenclient.KindGrantTypeNotAllowed, Code: "unauthorized_client", StatusCode: 400},
		"invalid_scope":                     {Kind: tokenclient.KindInvalidScope, Code: "invalid_scope", StatusCode: 400},
		"invalid_client, a secret not live": {Kind: tokenclient.KindInvalidClient, Code: "invalid_client", StatusCode: 401},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			w.tokens.failNext(refusal) // then the identity server is fixed
			res, err := w.reconcileCred("pricing")
			if err != nil || res.RequeueAfter != 10*time.Minute {
				t.Fatalf("the refused pass: requeue %s, err %v; want a recheck 10 minutes later", res.RequeueAfter, err)
			}
			wantCondition(t, w.cred("pricing").Status.Conditions, cdv1.StalledCondition, metav1.ConditionTrue, condition(t, w.cred("pricing").Status.Conditions, cdv1.ReadyCondition).Reason)
			w.clock.Step(res.RequeueAfter)
			if _, err := w.reconcileCred("pricing"); err != nil {
				t.Fatal(err)
			}
			if n := w.tokens.ccCount(); n != 2 {
				t.Errorf("%d requests, want the refused one and the recheck", n)
			}
			wantCondition(t, w.cred("pricing").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
		})
	}
}

func TestAHeldAccessTokenIsWrittenWithoutANewRequest(t *testing.T) {
	w := newWorld(t)
	w.setFault(func(verb string, obj client.Object) error {
		if verb == "apply" {
			return forbidden
		}
		return nil
	})
	res, err := w.reconcileCred("pricing")
	if err != nil {
		t.Fatal(err)
	}
	wantCondition(t, w.cred("pricing").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretWriteFailedReason)
	w.clock.Step(res.RequeueAfter)
	_, _ = w.reconcileCred("pricing")
	w.setFault(nil)
	w.clock.Step(time.Minute)
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	if n := w.tokens.ccCount(); n != 1 {
		t.Errorf("%d requests, want the one token held and written", n)
	}
	if got := string(w.secret("pricing-token").Data[cdv1.AccessTokenKey]); got != "cc-access-1" {
		t.Errorf("token %q", got)
	}
}

func TestAClientSecretIsReadOnlyWhenOptedIn(t *testing.T) {
	w := newWorld(t)
	// The attack: a namespace user points a CR at a Secret that holds something else.
	db := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "db"}, Data: map[string][]byte{"password": []byte("hunter2-db-password")}}
	if err := w.client.Create(t.Context(), db); err != nil {
		t.Fatal(err)
	}
	c := w.cred("pricing")
	w.update(c, func() {
		c.Spec.ClientSecretRef = cdv1.ClientSecretReference{Name: "db", ClientSecretKey: "password"}
	})
	if _, err := w.reconcileCred("pricing"); !errors.Is(err, reconcile.TerminalError(nil)) {
		t.Fatalf("err %v, want terminal", err)
	}
	c = w.cred("pricing")
	ready := condition(t, c.Status.Conditions, cdv1.ReadyCondition)
	if ready.Reason != cdv1.SecretNotOptedInReason || !strings.Contains(ready.Message, "kubectl -n ns label secret db cd.credops.io/secret-type=client") {
		t.Errorf("Ready %+v", ready)
	}
	if strings.Contains(toString(c.Status), "hunter2") || w.tokens.ccCount() != 0 {
		t.Errorf("the Secret's value reached status or a request: %+v", c.Status)
	}
}

// A namespace user who may create CDCredentials but not read Secrets points one at
// another credential's opted-in client Secret, reading the client id from the key that
// holds the client secret (a CR admitted before the CRD refused equal keys, or the same
// value under another key): the client id is published in status and in every login
// link, so the secret must not become one, and nothing is sent with it.
func TestAClientSecretIsNeverPublishedAsTheClientID(t *testing.T) {
	for name, ref := range map[string]cdv1.ClientSecretReference{
		"the secret's own key":          {Name: "pricing-client", ClientIDKey: "client_secret"},
		"a key holding the same secret": {Name: "pricing-client", ClientIDKey: "copy"},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t, &cdv1.CDCredential{
				ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "peek", UID: "uid-peek", Generation: 1},
				Spec:       cdv1.CDCredentialSpec{Flow: cdv1.FlowAuthorizationCode, Issuer: "https://id.example.com", ClientSecretRef: ref},
			})
			s := w.secret("pricing-client")
			w.update(s, func() { s.Data["copy"] = s.Data["client_secret"] })
			secret := strings.TrimSpace(string(s.Data["client_secret"]))
			_, _ = w.reconcileCred("peek")
			c := w.cred("peek")
			if strings.Contains(toString(c.Status), secret) {
				t.Errorf("the client secret of Secret pricing-client is in status: clientID=%q", c.Status.ClientID)
			}
			ready := condition(t, c.Status.Conditions, cdv1.ReadyCondition)
			if ready.Reason != cdv1.ClientSecretInvalidReason || !strings.Contains(ready.Message, "holds the client secret, not a client id") {
				t.Errorf("Ready %+v, want ClientSecretInvalid naming the key", ready)
			}
			for _, e := range w.recorded() {
				if strings.Contains(e, secret) {
					t.Errorf("an event carries the client secret: %s", e)
				}
			}
		})
	}
}

func TestTheClientIDComesFromTheSpecWhenSet(t *testing.T) {
	w := newWorld(t)
	s := w.secret("pricing-client")
	w.update(s, func() { delete(s.Data, "client_id") })
	c := w.cred("pricing")
	w.update(c, func() { c.Spec.ClientID = "public-id" })
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	if got := w.cred("pricing").Status.ClientID; got != "public-id" {
		t.Errorf("clientID %q", got)
	}
}

func TestOneClientDeclaredForBothFlowsIsFlaggedOnlyWhenTheSecretMatchesToo(t *testing.T) {
	cases := map[string]struct {
		secret   string
		flagged  bool
		readyWhy string
	}{
		"the same id and secret: the incident":             {secret: "pricing-secret", flagged: true, readyWhy: cdv1.ClientSharedAcrossFlowsReason},
		"the same public id with another secret: no claim": {secret: "someone-elses-guess", readyWhy: cdv1.TokenIssuedReason},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			other := &cdv1.CDCredential{
				ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "copycat", UID: "uid-copycat", Generation: 1},
				Spec:       cdv1.CDCredentialSpec{Flow: cdv1.FlowAuthorizationCode, ClientID: "pricing-id", ClientSecretRef: cdv1.ClientSecretReference{Name: "copy"}},
			}
			copySecret := optedIn(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "copy"}, Data: map[string][]byte{"client_secret": []byte(tc.secret)}}, cdv1.SecretTypeClient)
			w := newWorld(t, other, copySecret)
			if _, err := w.creds.Reconcile(t.Context(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(other)}); err != nil {
				t.Fatal(err)
			}
			if _, err := w.reconcileCred("pricing"); err != nil {
				t.Fatal(err)
			}
			c := w.cred("pricing")
			wantCondition(t, c.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, tc.readyWhy)
			misuse := condition(t, c.Status.Conditions, cdv1.FlowMisuseCondition)
			if (misuse.Status == metav1.ConditionTrue) != tc.flagged {
				t.Fatalf("FlowMisuse %+v, flagged want %v", misuse, tc.flagged)
			}
			if tc.flagged && (strings.Contains(misuse.Message, "copycat") || !strings.Contains(misuse.Message, "1 CDCredential(s) in other namespaces")) {
				t.Errorf("message %q names another namespace's object or does not count it", misuse.Message)
			}
		})
	}
}

func toString(v any) string { return strings.ReplaceAll(cmp.Diff(nil, v), " ", "") }

// As for a grant: the passes after a refusal, on caches behind their writes, neither
// send the refused request again nor write the refusal away.
func TestACacheThatHasNotSeenTheLastStatusWriteDoesNotResendARefusedRequest(t *testing.T) {
	w := newWorld(t)
	unsent := w.cred("pricing")
	w.tokens.failNext(&tokenclient.Error{Kind: tokenclient.KindGrantTypeNotAllowed, Code: "unauthorized_client", StatusCode: 400})
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	refused := w.cred("pricing")
	for _, cached := range []client.Object{unsent, refused, &cdv1.CDCredential{}} {
		w.lag(cached)
		if _, err := w.reconcileCred("pricing"); err != nil {
			t.Fatalf("cache at %q: %v", cached.GetResourceVersion(), err)
		}
	}
	if n := w.tokens.ccCount(); n != 1 {
		t.Errorf("%d requests sent, want the one refused", n)
	}
	if f := w.cred("pricing").Status.LastFailure; f == nil || f.Reason != cdv1.GrantTypeNotAllowedReason {
		t.Errorf("lastFailure %+v, want the refusal", f)
	}
}

// TestAnOutputSecretNameCannotTakeOverARefreshTokenSecretOrTheOperatorsKey: the callback's
// refresh-token Secrets and the operator's key carry the managed-by label and no owner,
// as an output whose CR was deleted with --cascade=orphan does. A CR naming one as its
// output must not take it over (DESIGN §8): it would be garbage-collected with that CR,
// lose its opt-in label (the grant stops), and its value would sit next to the CR's
// access token in every pod that mounts the output.
func TestAnOutputSecretNameCannotTakeOverARefreshTokenSecretOrTheOperatorsKey(t *testing.T) {
	cases := map[string]func(w *world) string{
		"acme's refresh-token Secret, as the callback creates it": func(w *world) string {
			s := w.secret("acme-refresh")
			w.update(s, func() { s.Labels[cdv1.ManagedByLabel] = cdv1.ManagedByValue })
			return s.Name
		},
		"the operator's key, as the manager creates it": func(w *world) string {
			key := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cd-credentials-operator-key",
				Labels: map[string]string{cdv1.ManagedByLabel: cdv1.ManagedByValue}}, Data: map[string][]byte{"hmac-key": []byte("0123456789abcdef0123456789abcdef")}}
			if err := w.client.Create(t.Context(), key); err != nil {
				t.Fatal(err)
			}
			return key.Name
		},
	}
	for name, victim := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			target := victim(w)
			before := w.secret(target)
			c := w.cred("pricing")
			w.update(c, func() { c.Spec.SecretName = target })

			// Waiting, not terminal: the Secret that holds the name may go without an
			// event for this CR.
			if res, err := w.reconcileCred("pricing"); err != nil || res.RequeueAfter != missingSecretRecheck {
				t.Errorf("result %+v, err %v; want a recheck after %s", res, err, missingSecretRecheck)
			}
			if diff := cmp.Diff([]string{"status pricing"}, w.takeWrites()); diff != "" {
				t.Errorf("writes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(before, w.secret(target)); diff != "" {
				t.Errorf("the Secret changed (-before +after):\n%s", diff)
			}
			if n := w.tokens.ccCount(); n != 0 {
				t.Errorf("%d token requests for an output that cannot be written", n)
			}
			if _, err := w.reconcileGrant("acme"); err != nil {
				t.Errorf("acme's next pass: %v", err)
			}
			wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
			conds := w.cred("pricing").Status.Conditions
			wantCondition(t, conds, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretNameConflictReason)
			if s := meta.FindStatusCondition(conds, cdv1.StalledCondition); s != nil {
				t.Errorf("Stalled %+v, want none", s)
			}
		})
	}
}

// As for a grant, renaming a credential's output over and over requests a token for the
// new name only within the request budget.
func TestRenamingACredentialsOutputGetsAtMostThreeRequestsPerLifetime(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	w.editForALifetime(func(i int) {
		c := w.cred("pricing")
		w.update(c, func() { c.Spec.SecretName = fmt.Sprintf("pricing-out-%d", i) })
	}, w.reconcileCred, "pricing")
	if n := w.tokens.ccCount(); n != 3 {
		t.Errorf("%d client-credentials requests in one 30-minute lifetime of renames every 20 s, want 3", n)
	}
}

// The SecretNameConflict message tells the user to delete the Secret that holds the name.
// A user's Secret without the opt-in label is not in the manager's cache, so its deletion
// is no event for the credential: the credential must look again by itself, and take the
// name once it is free, instead of staying stalled for good.
func TestACredentialTakesItsOutputNameOnceTheUsersSecretHoldingItIsDeleted(t *testing.T) {
	w := newWorld(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pricing-token"}, Data: map[string][]byte{"mine": []byte("x")}})
	res, err := w.reconcileCred("pricing")
	if err != nil || res.RequeueAfter != missingSecretRecheck {
		t.Fatalf("result %+v, err %v; want a recheck after %s", res, err, missingSecretRecheck)
	}
	conds := w.cred("pricing").Status.Conditions
	wantCondition(t, conds, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretNameConflictReason)
	if s := meta.FindStatusCondition(conds, cdv1.StalledCondition); s != nil {
		t.Errorf("Stalled %+v, want none", s)
	}
	if n := w.tokens.ccCount(); n != 0 {
		t.Fatalf("%d token requests while the name is taken", n)
	}

	if err := w.client.Delete(t.Context(), w.secret("pricing-token")); err != nil {
		t.Fatal(err)
	}
	w.clock.Step(res.RequeueAfter)
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	wantCondition(t, w.cred("pricing").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	if s := w.secret("pricing-token"); !metav1.IsControlledBy(s, w.cred("pricing")) || len(s.Data[cdv1.AccessTokenKey]) == 0 {
		t.Errorf("the output Secret after the name was freed: owners %v, keys %d", s.OwnerReferences, len(s.Data))
	}
}

// sharedClientWorld is a world whose ClientCredentials CDCredential "pricing" holds a
// client also declared for the other flow (ClientSharedAcrossFlows) and has a token, and
// whose scopes were then edited sooner than the request budget allows: the changed
// request waits until a third of the token's 30-minute lifetime has passed.
func sharedClientWorld(t *testing.T) *world {
	t.Helper()
	other := &cdv1.CDCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "copycat", UID: "uid-copycat", Generation: 1},
		Spec:       cdv1.CDCredentialSpec{Flow: cdv1.FlowAuthorizationCode, ClientID: "pricing-id", ClientSecretRef: cdv1.ClientSecretReference{Name: "pricing-client"}},
	}
	w := newWorld(t, other)
	if _, err := w.creds.Reconcile(t.Context(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(other)}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	wantCondition(t, w.cred("pricing").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.ClientSharedAcrossFlowsReason)
	c := w.cred("pricing")
	w.update(c, func() { c.Spec.Scopes = []string{"marketplace"}; c.Generation++ })
	return w
}

// TestADeferredRequestStaysReconcilingOnASharedClient: a changed request held back by
// the request budget is Reconciling=True, saying when it goes out (kstatus), on a
// credential whose client is shared across flows too: the ClientSharedAcrossFlows
// wording of Ready does not take it away.
func TestADeferredRequestStaysReconcilingOnASharedClient(t *testing.T) {
	w := sharedClientWorld(t)
	w.clock.Step(time.Minute)
	res, err := w.reconcileCred("pricing")
	if err != nil {
		t.Fatal(err)
	}
	c := w.cred("pricing")
	wantCondition(t, c.Status.Conditions, cdv1.FlowMisuseCondition, metav1.ConditionTrue, cdv1.ClientSharedAcrossFlowsReason)
	wantCondition(t, c.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.ClientSharedAcrossFlowsReason)
	if rc := meta.FindStatusCondition(c.Status.Conditions, cdv1.ReconcilingCondition); rc == nil || rc.Status != metav1.ConditionTrue || !strings.Contains(rc.Message, "status.renewalTime") ||
		c.Status.RenewalTime == nil || !c.Status.RenewalTime.Time.Equal(epoch.Add(10*time.Minute)) {
		t.Errorf("Reconciling %+v, renewalTime %v: want True saying the token for the edited scopes is requested at renewalTime, 10:10:00", rc, c.Status.RenewalTime)
	}
	if want := 9 * time.Minute; res.RequeueAfter != want {
		t.Errorf("RequeueAfter %s, want %s (when the changed request goes out)", res.RequeueAfter, want)
	}
}

// TestTheSharedClientNoteIsSaidOnceThroughADeferral: every pass while a changed request
// waits for the request budget (events: a sharer's status, a Secret, a resync) words
// Ready the same: the ClientSharedAcrossFlows note once, and no status write after the
// first. Appending it to the kept message grew Ready by one copy per pass, a status
// write each, toward the API server's 32 KiB limit on a condition message.
func TestTheSharedClientNoteIsSaidOnceThroughADeferral(t *testing.T) {
	w := sharedClientWorld(t)
	var writes []string
	for range 6 { // passes brought by events during the 10-minute deferral
		w.clock.Step(time.Minute)
		if _, err := w.reconcileCred("pricing"); err != nil {
			t.Fatal(err)
		}
		writes = append(writes, w.takeWrites()...)
	}
	ready := condition(t, w.cred("pricing").Status.Conditions, cdv1.ReadyCondition)
	if n := strings.Count(ready.Message, "but see FlowMisuse"); n != 1 || len(writes) > 1 {
		t.Errorf("after 6 deferred passes: the note is in Ready's message %d times (%d bytes), writes %v; want it once and at most 1 write", n, len(ready.Message), writes)
	}
	if n := w.tokens.ccCount(); n != 1 {
		t.Errorf("%d token requests during the deferral, want the first one only", n)
	}
}

// TestAClampedRenewBeforeIsStillSaidAfterALaterPass: a clamped renewBefore is said in
// Ready's message (DESIGN §4), not only by the pass that stored the token: a later pass
// that finds the token fresh (a restart, a Secret event) says it too, so a restart with
// fresh tokens writes nothing (DESIGN §9).
func TestAClampedRenewBeforeIsStillSaidAfterALaterPass(t *testing.T) {
	w := newWorld(t)
	c := w.cred("pricing")
	w.update(c, func() { c.Spec.RenewBefore = &metav1.Duration{Duration: 25 * time.Minute} })
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	first := condition(t, w.cred("pricing").Status.Conditions, cdv1.ReadyCondition)
	if !strings.Contains(first.Message, "spec.renewBefore 25m0s") {
		t.Fatalf("the storing pass does not say the clamp: %q", first.Message)
	}
	// A restarted manager, a minute later.
	w.creds = &CDCredentialReconciler{Client: w.client, APIReader: w.client, Clock: w.clock, Tokens: w.tokens, Recorder: w.events, Key: w.creds.Key}
	w.clock.Step(time.Minute)
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	writes := w.takeWrites()
	if after := condition(t, w.cred("pricing").Status.Conditions, cdv1.ReadyCondition); after.Message != first.Message || len(writes) != 0 {
		t.Errorf("after a restart: Ready %q (was %q), writes %v; want the clamp still said and no write", after.Message, first.Message, writes)
	}
	// An edit of renewBefore sends nothing new, and is said at once.
	c = w.cred("pricing")
	w.update(c, func() { c.Spec.RenewBefore = &metav1.Duration{Duration: 5 * time.Minute}; c.Generation++ })
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	if msg := condition(t, w.cred("pricing").Status.Conditions, cdv1.ReadyCondition).Message; msg != "Access token is in Secret pricing-token" || w.tokens.ccCount() != 1 {
		t.Errorf("after renewBefore 5m: Ready %q, %d requests; want no clamp said and 1 request", msg, w.tokens.ccCount())
	}
}

// TestAFlowChangedToAuthorizationCodeLeavesNoTokenTimesInStatus: an AuthorizationCode
// CDCredential mints nothing (DESIGN §2.1). One switched from ClientCredentials (the
// GrantTypeNotAllowed fix the README gives: "or change spec.flow") shows no expiry,
// renewal, issuance or scopes of a token it will never renew, and Ready names the output
// Secret it left behind, whose token silently expires. That Secret is kept, not deleted:
// its token is what the request budget counts from, so switching the flow back and forth
// gets no token sooner than the budget allows.
func TestAFlowChangedToAuthorizationCodeLeavesNoTokenTimesInStatus(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	setFlow := func(flow cdv1.Flow) {
		t.Helper()
		c := w.cred("pricing")
		w.update(c, func() { c.Spec.Flow = flow; c.Generation++ })
		w.clock.Step(time.Minute)
		if _, err := w.reconcileCred("pricing"); err != nil {
			t.Fatal(err)
		}
	}
	setFlow(cdv1.FlowAuthorizationCode)
	c := w.cred("pricing")
	if st := c.Status; st.ExpiresAt != nil || st.RenewalTime != nil || st.GrantedScopes != nil || st.SecretName != "" {
		t.Errorf("AuthorizationCode credential: expiresAt %v renewalTime %v grantedScopes %v secretName %q, want none", st.ExpiresAt, st.RenewalTime, st.GrantedScopes, st.SecretName)
	}
	wantCondition(t, c.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.ClientReadyReason)
	if msg := condition(t, c.Status.Conditions, cdv1.ReadyCondition).Message; !strings.Contains(msg, "Secret pricing-token still holds") {
		t.Errorf("Ready %q does not name the output Secret left behind", msg)
	}
	setFlow(cdv1.FlowClientCredentials)
	if n := w.tokens.ccCount(); n != 1 {
		t.Errorf("switching the flow back to ClientCredentials sent %d requests in all, want the first one only (its token is still fresh)", n)
	}
	wantCondition(t, w.cred("pricing").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	setFlow(cdv1.FlowAuthorizationCode)
	if err := w.client.Delete(t.Context(), w.secret("pricing-token")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.reconcileCred("pricing"); err != nil { // the Secret's deletion brings its owner back
		t.Fatal(err)
	}
	if msg := condition(t, w.cred("pricing").Status.Conditions, cdv1.ReadyCondition).Message; strings.Contains(msg, "pricing-token") {
		t.Errorf("Ready %q still names the deleted output Secret", msg)
	}
}

// TestSwitchingTheFlowBackAndForthDoesNotResendARefusedRequest: the failure memory
// survives a switch to AuthorizationCode, so switching back sends the refused request
// no sooner than before.
func TestSwitchingTheFlowBackAndForthDoesNotResendARefusedRequest(t *testing.T) {
	w := newWorld(t)
	w.tokens.failNext(&tokenclient.Error{Kind: tokenclient.KindGrantTypeNotAllowed, Code: "unauthorized_client", StatusCode: 400})
	_, _ = w.reconcileCred("pricing")
	for _, flow := range []cdv1.Flow{cdv1.FlowAuthorizationCode, cdv1.FlowClientCredentials, cdv1.FlowAuthorizationCode, cdv1.FlowClientCredentials} {
		c := w.cred("pricing")
		w.update(c, func() { c.Spec.Flow = flow; c.Generation++ })
		w.clock.Step(time.Minute)
		_, _ = w.reconcileCred("pricing")
	}
	if n := w.tokens.ccCount(); n != 1 {
		t.Errorf("%d requests after switching the flow back and forth twice, want the refused one only", n)
	}
	wantCondition(t, w.cred("pricing").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.GrantTypeNotAllowedReason)
}

// status.secretName is the Secret that holds the CR's access token: the SECRET column of
// `kubectl get cdcred`, and what a platform team mounts. A credential whose output name
// is held by another CR's output (here the grant acme's, which holds a customer's
// token) is SecretNameConflict, and its status must not name that Secret: whoever
// mounts what status says would get a customer's authorization-code token for
// client-credentials calls, the very mix-up the operator exists to prevent. It names the
// Secret its own token is still in, or none.
func TestACredentialWhoseOutputNameIsTakenNamesOnlyASecretHoldingItsOwnToken(t *testing.T) {
	cases := map[string]struct {
		setup func(w *world) // before the credential's spec.secretName becomes acme's output
		want  string
	}{
		"a new credential names no Secret": {
			setup: func(*world) {},
			want:  "",
		},
		"a credential renamed onto the taken name keeps naming the Secret its token is in": {
			setup: func(w *world) {
				if _, err := w.reconcileCred("pricing"); err != nil {
					t.Fatal(err)
				}
			},
			want: "pricing-token",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			tc.setup(w)
			if _, err := w.reconcileGrant("acme"); err != nil {
				t.Fatal(err)
			}
			if s := w.secret("acme-token"); !metav1.IsControlledBy(s, w.grant("acme")) {
				t.Fatalf("acme-token is not the grant's output: %v", s.OwnerReferences)
			}
			c := w.cred("pricing")
			w.update(c, func() { c.Spec.SecretName = "acme-token"; c.Generation++ })
			if _, err := w.reconcileCred("pricing"); err != nil {
				t.Fatal(err)
			}
			c = w.cred("pricing")
			wantCondition(t, c.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretNameConflictReason)
			if c.Status.SecretName != tc.want {
				t.Errorf("status.secretName = %q, want %q: acme-token holds the grant's token, not the credential's", c.Status.SecretName, tc.want)
			}
		})
	}
}

// The same when the credential's own output was deleted and another CR took its name:
// status named that Secret, and the credential's token is no longer in it.
func TestACredentialWhoseOutputWasTakenOverNamesNoSecret(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	if err := w.client.Delete(t.Context(), w.secret("pricing-token")); err != nil {
		t.Fatal(err)
	}
	g := w.grant("acme")
	w.update(g, func() { g.Spec.SecretName = "pricing-token"; g.Generation++ })
	if _, err := w.reconcileGrant("acme"); err != nil {
		t.Fatal(err)
	}
	if s := w.secret("pricing-token"); !metav1.IsControlledBy(s, w.grant("acme")) {
		t.Fatalf("pricing-token is not the grant's output: %v", s.OwnerReferences)
	}
	if _, err := w.reconcileCred("pricing"); err != nil {
		t.Fatal(err)
	}
	c := w.cred("pricing")
	wantCondition(t, c.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretNameConflictReason)
	if c.Status.SecretName != "" {
		t.Errorf("status.secretName = %q, want none: pricing-token holds the grant's token now", c.Status.SecretName)
	}
}
