package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
)

// The tenant suite: each test is an attack by a user who may create, edit and delete
// the operator's CRs in a namespace, and nothing else (DESIGN §8). The victims' Secrets
// are created by someone else, as an administrator would.

// everythingVisible is what a namespace user can see of the operator's doing: the CRs as
// `kubectl get -o yaml` shows them, the namespace's events, and the manager's logs.
func everythingVisible(t *testing.T, ns string, objs ...client.Object) string {
	t.Helper()
	var b strings.Builder
	for _, o := range objs {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(o), o); err != nil {
			t.Fatal(err)
		}
		y, _ := yaml.Marshal(o)
		b.Write(y)
	}
	evs := &eventsv1.EventList{}
	if err := k8s.List(context.Background(), evs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Items {
		b.WriteString(e.Reason + " " + e.Note + "\n")
	}
	b.WriteString(logSink.String())
	return b.String()
}

func assertNotDisclosed(t *testing.T, haystack, secret string) {
	t.Helper()
	for form, encoded := range encodings(secret) {
		if strings.Contains(haystack, encoded) {
			t.Errorf("the victim's secret is disclosed %s", form)
		}
	}
}

// Finding 1: a CR that names a Secret's key as its client id must not copy that key's
// value into status, conditions, events, logs or an authorization URL.
func TestTenantCannotReadASecretThroughAClientSecretRef(t *testing.T) {
	ns := newNamespace(t)
	const password = "the-database-password-9f2b"
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"}, StringData: map[string]string{"password": password}})
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients()})
	addr := freeAddr(t)
	startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}, CallbackBindAddress: addr, CallbackURL: "http://" + addr + "/callback"})

	// The attack.
	cred := credential(ns, "app", cdv1.FlowAuthorizationCode, "db", idp.URL)
	cred.Spec.ClientSecretRef.ClientSecretKey = "password"
	create(t, cred)
	grant := userGrant(ns, "g", "app", "g-refresh")
	create(t, grant)

	eventually(t, 10*time.Second, "SecretNotOptedIn", credentialCondition(ns, "app", cdv1.StalledCondition, metav1.ConditionTrue, cdv1.SecretNotOptedInReason))
	eventually(t, 10*time.Second, "the grant waits for its credential", grantCondition(ns, "g", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.CredentialNotReadyReason))
	assertNotDisclosed(t, everythingVisible(t, ns, cred, grant), password)
	if n := len(idp.AuthorizationRequests()) + len(idp.Stats().TokenRequests); n != 0 {
		t.Errorf("%d requests reached the identity server", n)
	}
}

// Finding 2: a second grant naming a refresh-token Secret another grant uses must send
// nothing: two grants spending one single-use token revoke the customer's whole grant.
func TestTenantCannotSpendAnotherGrantsRefreshToken(t *testing.T) {
	f := newGrantFixture(t, 3*time.Second)
	startManager(t, f.opts)
	f.addGrant("victim")
	eventually(t, 20*time.Second, "the victim rotates", f.rotations("victim", 1))

	// The attack.
	create(t, userGrant(f.ns, "thief", "login", "victim-refresh"))

	eventually(t, 10*time.Second, "RefreshTokenSecretInUse", grantCondition(f.ns, "thief", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.RefreshTokenSecretInUseReason))
	g, _ := getGrant(f.ns, "victim")
	eventually(t, 30*time.Second, "the victim keeps rotating", f.rotations("victim", g.Status.RotationCount+3))
	st := f.idp.Stats()
	if st.RefreshTokensReused != 0 || st.GrantsRevoked != 0 {
		t.Errorf("the identity server saw %d reused tokens and revoked %d grants", st.RefreshTokensReused, st.GrantsRevoked)
	}
	thief, _ := getGrant(f.ns, "thief")
	if thief.Status.RotationCount != 0 || thief.Status.ExpiresAt != nil {
		t.Errorf("the thief's grant got a token: %+v", thief.Status)
	}
	rs, _ := getSecret(f.ns, "victim-refresh")
	assertNotDisclosed(t, fmt.Sprintf("%+v", thief.Status), string(rs.Data["refresh_token"]))
}

// A grant on another shard must not spend a refresh token either. The binding check
// looks the bound grant up; a shard's cache holds only its own grants, so it must ask the
// API server, or a grant in shard b finds shard a's live grant "gone", takes its Secret
// over and spends the token.
func TestTenantCannotSpendARefreshTokenBoundToAGrantOfAnotherShard(t *testing.T) {
	f := newGrantFixture(t, 3*time.Second)
	for _, shard := range []string{"a", "b"} {
		sel, _ := labels.Parse("shard=" + shard)
		opts := f.opts
		opts.ShardSelector, opts.LeaderElectionID = sel, "shard-"+shard
		startManager(t, opts)
		c := credential(f.ns, "login-"+shard, cdv1.FlowAuthorizationCode, "login-client", f.idp.URL)
		c.Labels = map[string]string{"shard": shard} // a shard sees only its own credentials
		create(t, c)
	}
	rt := f.idp.SeedGrant(loginClientID, "victim@carrier.example", []string{"marketplace", "offline_access"})
	create(t, refreshSecret(f.ns, "victim-refresh", rt))
	victim := userGrant(f.ns, "victim", "login-a", "victim-refresh")
	victim.Labels = map[string]string{"shard": "a"}
	create(t, victim)
	eventually(t, 20*time.Second, "the victim rotates", f.rotations("victim", 1))

	// The attack.
	thief := userGrant(f.ns, "thief", "login-b", "victim-refresh")
	thief.Labels = map[string]string{"shard": "b"}
	create(t, thief)

	eventually(t, 10*time.Second, "the thief refused, or served (the takeover)", func() error {
		if grantCondition(f.ns, "thief", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)() == nil {
			return nil
		}
		return grantCondition(f.ns, "thief", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.RefreshTokenSecretInUseReason)()
	})
	thiefNow, _ := getGrant(f.ns, "thief")
	if err := conditionIs(thiefNow.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.RefreshTokenSecretInUseReason); err != nil {
		t.Errorf("the thief: %v", err)
	}
	if thiefNow.Status.RotationCount != 0 || thiefNow.Status.ExpiresAt != nil {
		t.Errorf("the thief's grant spent the victim's refresh token: %d rotations", thiefNow.Status.RotationCount)
	}
	g, _ := getGrant(f.ns, "victim")
	if s, _ := getSecret(f.ns, "victim-refresh"); s.Annotations[cdv1.BoundToAnnotation] != "victim/"+string(g.UID) {
		t.Fatalf("the victim's refresh-token Secret is bound to %q", s.Annotations[cdv1.BoundToAnnotation])
	}
	eventually(t, 30*time.Second, "the victim keeps rotating", f.rotations("victim", g.Status.RotationCount+2))
	if st := f.idp.Stats(); st.RefreshTokensReused != 0 || st.GrantsRevoked != 0 {
		t.Errorf("the identity server saw %d reused tokens and revoked %d grants", st.RefreshTokensReused, st.GrantsRevoked)
	}
}

// RefreshTokenSecretInUse holds a grant back only while the grant the Secret is bound to
// lives: once that grant is deleted (deletionPolicy Retain, so its Secret stays), the
// session continues in the grant that names the Secret (DESIGN §8). Its deletion must
// bring the waiting grant back at once; the grant controller reads the holder around the
// cache, and would otherwise never hear of it.
func TestAGrantTakesOverARetainedRefreshTokenSecretOnceTheGrantHoldingItIsDeleted(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	startManager(t, f.opts)
	f.addGrant("old")
	eventually(t, 20*time.Second, "old rotates", f.rotations("old", 1))
	create(t, userGrant(f.ns, "heir", "login", "old-refresh"))
	eventually(t, 10*time.Second, "RefreshTokenSecretInUse", grantCondition(f.ns, "heir", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.RefreshTokenSecretInUseReason))

	old, _ := getGrant(f.ns, "old")
	if err := k8s.Delete(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "heir takes the retained Secret over", f.rotations("heir", 1))
	heir, _ := getGrant(f.ns, "heir")
	if s, _ := getSecret(f.ns, "old-refresh"); s.Annotations[cdv1.BoundToAnnotation] != "heir/"+string(heir.UID) {
		t.Errorf("old-refresh is bound to %q, want heir", s.Annotations[cdv1.BoundToAnnotation])
	}
	f.assertNoTokenReused()
}

// Finding 3: the callback must never write a customer's refresh token into a Secret it
// may not write (and must not first exchange the code).
func TestTenantCannotMakeTheCallbackOverwriteASecret(t *testing.T) {
	f := newOnboardingFixture(t)
	authURL := f.awaiting("evil") // its refresh-token Secret, "evil-refresh", does not exist yet
	// Meanwhile a Secret of that name appears, holding something else.
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "evil-refresh"}, StringData: map[string]string{"refresh_token": "someone-elses-value"}}
	create(t, foreign)

	status, body := f.callback(f.login(authURL, "login"))
	if status != http.StatusConflict || !strings.Contains(body, "not this grant&#39;s refresh-token Secret") {
		t.Errorf("callback: HTTP %d %s, want 409", status, body)
	}
	s, _ := getSecret(f.ns, "evil-refresh")
	if string(s.Data["refresh_token"]) != "someone-elses-value" || len(s.Annotations) != 0 || len(s.Labels) != 0 {
		t.Errorf("the foreign Secret was changed: %+v", s)
	}
	if n := f.exchanges(); n != 0 {
		t.Errorf("%d codes exchanged, want 0", n)
	}
	eventually(t, 10*time.Second, "the grant records the conflict", func() error {
		g, err := getGrant(f.ns, "evil")
		if err != nil {
			return err
		}
		if a := g.Status.LastAuthorization; a == nil || a.Reason != cdv1.RefreshTokenSecretConflictReason {
			return fmt.Errorf("lastAuthorization %+v", a)
		}
		return nil
	})
}

// The counterpart of finding 3: the callback may write an opted-in refresh-token
// Secret that is not another live grant's. One prepared for a customer who has not
// logged in yet (bound to no grant), or retained from a deleted grant (deletionPolicy
// Retain), is where the session starts or continues; the controller takes either over,
// and so must the callback, or a re-created grant's customer could never log in again.
func TestACustomerLogsInIntoAnOptedInSecretNoLiveGrantHolds(t *testing.T) {
	cases := map[string]map[string]string{
		"prepared, bound to no grant":   nil,
		"retained from a deleted grant": {cdv1.BoundToAnnotation: "acme/uid-of-a-deleted-grant"},
	}
	for name, annotations := range cases {
		t.Run(name, func(t *testing.T) {
			f := newOnboardingFixture(t)
			create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "kept-refresh",
				Labels: map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeRefreshToken}, Annotations: annotations,
			}}) // no token in it: the customer must log in
			create(t, userGrant(f.ns, "acme", "login", "kept-refresh"))
			status, body := f.callback(f.login(f.awaitingURL("acme"), "login"))
			if status != http.StatusOK {
				t.Fatalf("callback: HTTP %d %s, want the login completed", status, body)
			}
			g, err := getGrant(f.ns, "acme")
			if err != nil {
				t.Fatal(err)
			}
			s, _ := getSecret(f.ns, "kept-refresh")
			if len(s.Data["refresh_token"]) == 0 || s.Annotations[cdv1.BoundToAnnotation] != "acme/"+string(g.UID) {
				t.Errorf("Secret after the login: bound to %q, %d bytes of refresh token; want bound to the grant, with the token", s.Annotations[cdv1.BoundToAnnotation], len(s.Data["refresh_token"]))
			}
			eventually(t, 10*time.Second, "Ready", grantCondition(f.ns, "acme", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
		})
	}
}

// An output Secret name must not take over a Secret the operator keeps without an owner:
// a refresh-token Secret the callback created, or the operator's key. Taken over, it
// would be garbage-collected with the attacker's CR, lose its opt-in label (the victim's
// grant stops), and its value would sit next to the attacker's access token in every pod
// that mounts the attacker's output.
func TestTenantCannotTakeOverARefreshTokenSecretOrTheOperatorsKeyAsAnOutput(t *testing.T) {
	f := newOnboardingFixture(t)
	if status, body := f.callback(f.login(f.awaiting("acme"), "login")); status != http.StatusOK {
		t.Fatalf("acme's login: HTTP %d %s", status, body)
	}
	eventually(t, 10*time.Second, "acme Ready", grantCondition(f.ns, "acme", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
	before := map[string]*corev1.Secret{}
	for _, name := range []string{"acme-refresh", "operator-key"} {
		s, err := getSecret(f.ns, name)
		if err != nil {
			t.Fatal(err)
		}
		before[name] = s
	}

	// The attack: grants with sessions of their own, their outputs named after those Secrets.
	for attacker, target := range map[string]string{"evil": "acme-refresh", "evil-key": "operator-key"} {
		rt := f.idp.SeedGrant(loginClientID, attacker+"@carrier.example", []string{"marketplace", "offline_access"})
		create(t, refreshSecret(f.ns, attacker+"-refresh", rt))
		g := userGrant(f.ns, attacker, "login", attacker+"-refresh")
		g.Spec.SecretName = target
		create(t, g)
	}

	for attacker, target := range map[string]string{"evil": "acme-refresh", "evil-key": "operator-key"} {
		eventually(t, 10*time.Second, attacker+" refused, or served (the takeover)", func() error {
			if grantCondition(f.ns, attacker, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)() == nil {
				return nil
			}
			return grantCondition(f.ns, attacker, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretNameConflictReason)()
		})
		g, _ := getGrant(f.ns, attacker)
		if err := conditionIs(g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretNameConflictReason); err != nil {
			t.Errorf("%s: %v", attacker, err)
		}
		if g.Status.ExpiresAt != nil {
			t.Errorf("%s got a token for an output it may not write", attacker)
		}
		s, _ := getSecret(f.ns, target)
		if s.ResourceVersion != before[target].ResourceVersion {
			t.Errorf("%s was written: owners %v, labels %v, keys %v", target, s.OwnerReferences, s.Labels, slices.Sorted(maps.Keys(s.Data)))
		}
	}
	if err := grantCondition(f.ns, "acme", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)(); err != nil {
		t.Errorf("acme after the attack: %v", err)
	}
}

// Finding 4: no spec value may make the operator send more than 3 token requests per
// token lifetime.
func TestTenantCannotMakeTheOperatorHammerTheIdentityServer(t *testing.T) {
	const lifetime = 30 * time.Second
	ns, idp := setupClientCredentials(t, lifetime, func(c *cdv1.CDCredential) {
		c.Spec.RenewBefore = &metav1.Duration{Duration: lifetime - time.Second} // the attack
	})
	eventually(t, 10*time.Second, "Ready", credentialCondition(ns, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
	start := time.Now()
	first := idp.Stats().TokenRequests["client_credentials"]
	window := 15 * time.Second
	eventually(t, window+5*time.Second, "the window passes", func() error {
		if time.Since(start) < window {
			return fmt.Errorf("watching")
		}
		return nil
	})
	if n := idp.Stats().TokenRequests["client_credentials"] - first; n > 2 {
		t.Errorf("%d token requests in %s with %s tokens: more than 3 per lifetime", n, window, lifetime)
	}
	c, _ := getCredential(ns, "pricing")
	if msg := conditionMessage(c.Status.Conditions, cdv1.ReadyCondition); !strings.Contains(msg, "spec.renewBefore 29s") {
		t.Errorf("Ready message %q does not say renewBefore was clamped", msg)
	}
}

// Finding 5: an output Secret that cannot be written must not cost a token on every
// retry: the conflict is found before anything is requested.
func TestTenantCannotMakeTheOperatorSpendTokensOnAnUnwritableSecret(t *testing.T) {
	ns := newNamespace(t)
	idp := startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients()})
	startManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}, WatchNamespaces: []string{ns}})
	create(t, clientSecret(ns, "api-client", apiClientID, apiClientSecret))
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken"}, StringData: map[string]string{"mine": "keep"}})
	c := credential(ns, "api", cdv1.FlowClientCredentials, "api-client", idp.URL)
	c.Spec.SecretName = "taken" // the attack
	create(t, c)
	eventually(t, 10*time.Second, "SecretNameConflict", credentialCondition(ns, "api", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretNameConflictReason))
	if n := idp.Stats().TokenRequests["client_credentials"]; n != 0 {
		t.Errorf("%d token requests for a Secret that cannot be written, want 0", n)
	}
}

// Finding 7: declaring another namespace's public client id must not flag its CRs, nor
// learn their names: a shared client is the same id and the same secret.
func TestTenantCannotFlagAnotherNamespacesClient(t *testing.T) {
	victimNS, attackerNS := newNamespace(t), newNamespace(t)
	victimID := fmt.Sprintf("victim-%d", time.Now().UnixNano()) // a client id of this test's own, see flowmisuse_test
	clients := append(centralDispatchClients(), cdsandbox.Client{ID: victimID, Secret: "victims-real-secret", GrantTypes: []string{"client_credentials"}})
	idp := startSandbox(t, cdsandbox.Options{Clients: clients})
	startClusterWideManager(t, manager.Options{AllowedTokenHosts: []string{idp.Host}})
	create(t, clientSecret(victimNS, "api-client", victimID, "victims-real-secret"))
	create(t, credential(victimNS, "pricing", cdv1.FlowClientCredentials, "api-client", idp.URL))
	eventually(t, 10*time.Second, "the victim is Ready", credentialCondition(victimNS, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))

	// The attack: the victim's public id, with a secret of the attacker's own.
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: attackerNS, Name: "guess", Labels: map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeClient}}, StringData: map[string]string{"client_secret": "a-guess"}})
	fake := credential(attackerNS, "copycat", cdv1.FlowAuthorizationCode, "guess", idp.URL)
	fake.Spec.ClientID = victimID
	create(t, fake)
	eventually(t, 10*time.Second, "the copycat is Ready", credentialCondition(attackerNS, "copycat", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.ClientReadyReason))

	for _, c := range []struct{ ns, name string }{{victimNS, "pricing"}, {attackerNS, "copycat"}} {
		got, _ := getCredential(c.ns, c.name)
		if err := conditionIs(got.Status.Conditions, cdv1.FlowMisuseCondition, metav1.ConditionFalse, cdv1.FlowCorrectReason); err != nil {
			t.Errorf("%s/%s: %v", c.ns, c.name, err)
		}
	}
	got, _ := getCredential(attackerNS, "copycat")
	if y, _ := yaml.Marshal(got); strings.Contains(string(y), victimNS) {
		t.Errorf("the attacker's CR names the victim's namespace")
	}
}

// Refresh tokens are the customers' sessions: deleting a grant leaves them, unless the
// grant asks for deletionPolicy Delete, which revokes the token first.
func TestRefreshTokensOutliveTheirGrantUnlessDeletionPolicyIsDelete(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	cred, _ := getCredential(f.ns, "login")
	cred.Spec.RevocationURL = f.idp.URL + "/connect/revocation"
	if err := k8s.Update(context.Background(), cred); err != nil {
		t.Fatal(err)
	}
	startManager(t, f.opts)
	f.addGrant("kept")
	f.addGrant("gone")
	g, _ := getGrant(f.ns, "gone")
	g.Spec.DeletionPolicy = cdv1.DeletionPolicyDelete
	if err := k8s.Update(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "both rotated", func() error {
		if err := f.rotations("kept", 1)(); err != nil {
			return err
		}
		return f.rotations("gone", 1)()
	})
	for _, name := range []string{"kept", "gone"} {
		g, _ := getGrant(f.ns, name)
		if err := k8s.Delete(context.Background(), g); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "the Delete grant is gone with its refresh token", func() error {
		if _, err := getGrant(f.ns, "gone"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("grant still there: %v", err)
		}
		if _, err := getSecret(f.ns, "gone-refresh"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("refresh-token Secret still there: %v", err)
		}
		return nil
	})
	if n := f.idp.Stats().Revocations; n != 1 {
		t.Errorf("%d revocations, want 1", n)
	}
	kept, err := getSecret(f.ns, "kept-refresh")
	if err != nil || len(kept.OwnerReferences) != 0 {
		t.Fatalf("the retained refresh-token Secret: %v, owners %v", err, kept.OwnerReferences)
	}
	f.assertStoredTokenLive("kept")
}

// Finding (review, 2026-12-03): whoever may create Secrets in a namespace may label them
// opted in, and the manager caches every opted-in Secret. A few hundred Secrets of 1 MiB
// from one namespace took every replica's memory past its limit, and with it every
// namespace's renewals. The cache keeps no Secret's data over 64 KiB (a credential needs
// a few keys of at most 4 KiB), nor a Secret labelled with a value the operator does not
// use, and a CR naming such a Secret reads nothing from it.
func TestTenantCannotFillTheOperatorsCacheWithLargeSecrets(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	f.addGrant("victim")
	m := startManager(t, f.opts)
	eventually(t, 20*time.Second, "the victim rotates", f.rotations("victim", 1))

	// The attack: Secrets of 200 KiB opted in as each type, and one labelled with a value
	// no CR uses; CRs naming the first two.
	blob := strings.Repeat("x", 200<<10)
	big := clientSecret(f.ns, "big-client", loginClientID, loginClientSecret)
	big.StringData["padding"] = blob
	create(t, big)
	bigRefresh := refreshSecret(f.ns, "big-refresh", f.idp.SeedGrant(loginClientID, "big@carrier.example", []string{"marketplace", "offline_access"}))
	bigRefresh.StringData["padding"] = blob
	create(t, bigRefresh)
	bigOutput := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "big-output", Labels: map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeAccessToken}}, StringData: map[string]string{"padding": blob}}
	create(t, bigOutput)
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "other", Labels: map[string]string{cdv1.SecretTypeLabel: "anything"}}, StringData: map[string]string{"padding": blob}}
	create(t, other)
	create(t, credential(f.ns, "peek", cdv1.FlowAuthorizationCode, "big-client", f.idp.URL))
	create(t, userGrant(f.ns, "hog", "login", "big-refresh"))
	before := f.idp.Stats().TokenRequests["refresh_token"]

	assertBigSecretsRefused(t, f.ns, m, "more than 64 KiB", func(s *corev1.Secret) error {
		if n := len(s.Data); n != 0 {
			return fmt.Errorf("%d keys of its 200 KiB of data", n)
		}
		return nil
	})
	if err := m.GetCache().Get(context.Background(), types.NamespacedName{Namespace: f.ns, Name: "other"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("a Secret labelled %s=anything: %v, want it not cached", cdv1.SecretTypeLabel, err)
	}
	if sent := f.idp.Stats().TokenRequests["refresh_token"] - before; sent > 1 {
		t.Errorf("%d refreshes since the attack, want at most the victim's own", sent)
	}
	g, _ := getGrant(f.ns, "victim")
	eventually(t, 20*time.Second, "the victim is still Ready", f.rotations("victim", g.Status.RotationCount))
}

// assertBigSecretsRefused waits until CDCredential peek and CDUserGrant hog, naming the
// attack's Secrets big-client and big-refresh, say they read nothing from them, why
// naming the bound; and checks what m's cache holds of the three (big-output too) with
// kept, which describes what it holds too much of.
func assertBigSecretsRefused(t *testing.T, ns string, m *runningManager, why string, kept func(*corev1.Secret) error) {
	t.Helper()
	eventually(t, 10*time.Second, "the credential reads nothing from its Secret", credentialMessage(ns, "peek", cdv1.ClientSecretInvalidReason, why))
	eventually(t, 10*time.Second, "the grant reads nothing from its Secret", grantMessage(ns, "hog", cdv1.ClientSecretInvalidReason, why))
	for _, name := range []string{"big-client", "big-refresh", "big-output"} {
		s := &corev1.Secret{}
		if err := m.GetCache().Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, s); err != nil {
			t.Fatalf("Secret %s not in the cache: %v", name, err)
		}
		if err := kept(s); err != nil {
			t.Errorf("the cache holds of Secret %s %v", name, err)
		}
	}
}

// Finding (review, 2026-12-03): the bound above was on data only. The API server bounds
// annotations at 256 KiB and labels only by the object's size, so the same attack with
// labels or annotations still filled the cache. The cache keeps a stub of a Secret over
// 128 KiB of them; a CR naming one reads nothing from it, and an output Secret inflated
// under its CR stalls the CR, requesting nothing, until it is made smaller.
func TestTenantCannotFillTheOperatorsCacheWithLabelsOrAnnotations(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	f.addGrant("victim")
	m := startManager(t, f.opts)
	eventually(t, 20*time.Second, "the victim rotates", f.rotations("victim", 1))

	// The attack: Secrets opted in as each type, carrying 200 KiB of annotations (the
	// API server's bound is 256 KiB) or 600 KiB of labels (it has none); CRs naming the
	// first two.
	big := clientSecret(f.ns, "big-client", loginClientID, loginClientSecret)
	padLabels(big, 600<<10)
	create(t, big)
	bigRefresh := refreshSecret(f.ns, "big-refresh", f.idp.SeedGrant(loginClientID, "big@carrier.example", []string{"marketplace", "offline_access"}))
	bigRefresh.Annotations = map[string]string{"pad.example.com/blob": strings.Repeat("x", 200<<10)}
	create(t, bigRefresh)
	bigOutput := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "big-output", Labels: map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeAccessToken}}}
	padLabels(bigOutput, 600<<10)
	create(t, bigOutput)
	create(t, credential(f.ns, "peek", cdv1.FlowAuthorizationCode, "big-client", f.idp.URL))
	create(t, userGrant(f.ns, "hog", "login", "big-refresh"))
	before := f.refreshCount()

	assertBigSecretsRefused(t, f.ns, m, "more than 128 KiB of labels, annotations", func(s *corev1.Secret) error {
		if len(s.Labels) > 1 || len(s.Annotations) > 1 || len(s.Data) > 0 {
			return fmt.Errorf("%d labels, %d annotations and %d keys, want its type and the cache's marker only", len(s.Labels), len(s.Annotations), len(s.Data))
		}
		return nil
	})

	// The victim's own output inflated under it: it stalls on it, sending nothing, and
	// goes on when the annotation goes.
	g, _ := getGrant(f.ns, "victim")
	patchOutput := func(value string) {
		t.Helper()
		body := fmt.Sprintf(`{"metadata":{"annotations":{"pad.example.com/blob":%s}}}`, value)
		if err := k8s.Patch(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: g.Status.SecretName}}, client.RawPatch(types.MergePatchType, []byte(body))); err != nil {
			t.Fatal(err)
		}
	}
	patchOutput(`"` + strings.Repeat("x", 200<<10) + `"`)
	eventually(t, 10*time.Second, "the victim stalls on its output", grantMessage(f.ns, "victim", cdv1.OutputSecretTooLargeReason, "carries more than 128 KiB"))
	patchOutput("null")
	eventually(t, 10*time.Second, "the victim is Ready again", f.rotations("victim", g.Status.RotationCount))
	if sent := f.refreshCount() - before; sent != 0 {
		t.Errorf("%d refreshes since the attack, want none (the victim's token is fresh)", sent)
	}
}

// Finding (review, 2026-12-03): the tenant of DESIGN §8, who may edit the operator's
// CRs, could fill the cache the same way with the CRs themselves. The cache keeps a stub
// of a CR over 128 KiB of labels, annotations, owner references and finalizers, and the
// operator does nothing for it until it shrinks: above all, it never patches the
// finalizers of a stub, which lacks the ones others added.
func TestTenantCannotFillTheOperatorsCacheWithCRs(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	rt := f.idp.SeedGrant(loginClientID, "victim@carrier.example", []string{"marketplace", "offline_access"})
	create(t, refreshSecret(f.ns, "victim-refresh", rt))
	victim := userGrant(f.ns, "victim", "login", "victim-refresh")
	victim.Spec.DeletionPolicy = cdv1.DeletionPolicyDelete
	create(t, victim)
	m := startManager(t, f.opts)
	eventually(t, 20*time.Second, "the victim rotates", f.rotations("victim", 1))
	before := f.refreshCount()

	// The attack: a grant and a credential carrying 600 KiB of labels.
	hog := userGrant(f.ns, "hog", "login", "victim-refresh")
	padLabels(hog, 600<<10)
	create(t, hog)
	create(t, clientSecret(f.ns, "pricing-client", apiClientID, apiClientSecret))
	hogCred := credential(f.ns, "hog-cred", cdv1.FlowClientCredentials, "pricing-client", f.idp.URL)
	padLabels(hogCred, 600<<10)
	create(t, hogCred)
	eventually(t, 10*time.Second, "the grant is left alone", grantMessage(f.ns, "hog", cdv1.MetadataTooLargeReason, "carries more than 128 KiB"))
	eventually(t, 10*time.Second, "the credential is left alone", credentialMessage(f.ns, "hog-cred", cdv1.MetadataTooLargeReason, "carries more than 128 KiB"))
	for name, obj := range map[string]client.Object{"hog": &cdv1.CDUserGrant{}, "hog-cred": &cdv1.CDCredential{}} {
		if err := m.GetCache().Get(context.Background(), types.NamespacedName{Namespace: f.ns, Name: name}, obj); err != nil {
			t.Fatal(err)
		}
		if len(obj.GetLabels()) > 0 || len(obj.GetAnnotations()) > 1 {
			t.Errorf("the cache holds %d labels and %d annotations of %s, want none but its marker", len(obj.GetLabels()), len(obj.GetAnnotations()), name)
		}
	}

	// The victim gone over the bound, with a finalizer of another controller's: left
	// alone, with both finalizers; Ready again once it is smaller.
	patchGrant := func(body string) {
		t.Helper()
		if err := k8s.Patch(context.Background(), &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "victim"}}, client.RawPatch(types.MergePatchType, []byte(body))); err != nil {
			t.Fatal(err)
		}
	}
	g, _ := getGrant(f.ns, "victim")
	inflated := g.DeepCopy()
	padLabels(inflated, 600<<10)
	inflated.Finalizers = append(inflated.Finalizers, "example.com/hold")
	body, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": inflated.Labels, "finalizers": inflated.Finalizers}})
	patchGrant(string(body))
	eventually(t, 10*time.Second, "the victim is left alone", grantMessage(f.ns, "victim", cdv1.MetadataTooLargeReason, "carries more than 128 KiB"))
	patchGrant(`{"metadata":{"labels":null}}`)
	eventually(t, 10*time.Second, "the victim is Ready again", f.rotations("victim", g.Status.RotationCount))
	g, _ = getGrant(f.ns, "victim")
	if want := []string{"cd.credops.io/delete-refresh-token", "example.com/hold"}; !slices.Equal(g.Finalizers, want) {
		t.Errorf("finalizers %v, want %v", g.Finalizers, want)
	}
	if sent := f.refreshCount() - before; sent != 0 {
		t.Errorf("%d refreshes since the attack, want none", sent)
	}
	patchGrant(`{"metadata":{"finalizers":["cd.credops.io/delete-refresh-token"]}}`)
}

// padLabels adds labels to obj taking about n bytes, each within the API server's bounds.
func padLabels(obj client.Object, n int) {
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	for i := 0; i*73 < n; i++ {
		labels[fmt.Sprintf("pad-%06d", i)] = strings.Repeat("x", 63)
	}
	obj.SetLabels(labels)
}

// credentialMessage returns a check that a CDCredential's Ready is False for reason with
// a message containing part.
func credentialMessage(ns, name, reason, part string) func() error {
	return readyMessage(func() ([]metav1.Condition, error) {
		c, err := getCredential(ns, name)
		return c.Status.Conditions, err
	}, reason, part)
}

// grantMessage is credentialMessage for a CDUserGrant.
func grantMessage(ns, name, reason, part string) func() error {
	return readyMessage(func() ([]metav1.Condition, error) {
		g, err := getGrant(ns, name)
		return g.Status.Conditions, err
	}, reason, part)
}

func readyMessage(conditions func() ([]metav1.Condition, error), reason, part string) func() error {
	return func() error {
		conds, err := conditions()
		if err != nil {
			return err
		}
		if err := conditionIs(conds, cdv1.ReadyCondition, metav1.ConditionFalse, reason); err != nil {
			return err
		}
		if msg := meta.FindStatusCondition(conds, cdv1.ReadyCondition).Message; !strings.Contains(msg, part) {
			return fmt.Errorf("Ready says %q, want it to contain %q", msg, part)
		}
		return nil
	}
}

// A tenant that creates CDCredentials with a junk client as fast as it can must not hold
// up another namespace's tokens. Without the split, the junk requests fill the
// manager-wide rate limit's queue and every reconcile worker waiting in it, and the other
// namespace's first token goes out only after all of them. With it, the tenant takes the
// whole rate only while nobody else asks: the other namespace's request goes within a
// few of the tenant's, and from then on the two share the rate.
func TestTenantCannotHoldUpAnotherNamespacesTokens(t *testing.T) {
	hostile, victim := newNamespace(t), newNamespace(t)
	s := cdsandbox.New(cdsandbox.Options{Clients: centralDispatchClients()})
	s.EnableJournal()
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	s.SetIssuer(hs.URL)
	// 8 per second across the manager: the junk credentials below take 10 s of it.
	const junk = 80
	startManager(t, manager.Options{AllowedTokenHosts: []string{hs.Listener.Addr().String()}, WatchNamespaces: []string{hostile, victim}, TokenRequestsPerSecond: 8})
	create(t, clientSecret(hostile, "junk-client", "junk-id", "junk-secret"))
	for i := range junk {
		create(t, credential(hostile, fmt.Sprintf("junk-%d", i), cdv1.FlowClientCredentials, "junk-client", hs.URL))
	}
	junkSent := func() int {
		n := 0
		for _, e := range s.Journal(0) {
			if e.ClientID == "junk-id" {
				n++
			}
		}
		return n
	}
	eventually(t, 20*time.Second, "the junk requests begin", func() error {
		if junkSent() == 0 {
			return fmt.Errorf("no junk request yet")
		}
		return nil
	})
	create(t, clientSecret(victim, "pricing-client", apiClientID, apiClientSecret))
	create(t, credential(victim, "pricing", cdv1.FlowClientCredentials, "pricing-client", hs.URL))
	eventually(t, 20*time.Second, "the other namespace's credential Ready", credentialCondition(victim, "pricing", cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason))
	before := 0
	for _, e := range s.Journal(0) {
		if e.ClientID == apiClientID {
			break
		}
		if e.ClientID == "junk-id" {
			before++
		}
	}
	// The tenant had the whole rate until the other namespace asked: the junk requests
	// of the second or two it took to create the victim's objects may come first, and
	// those already at their turn; never most of the queue.
	t.Logf("%d of the tenant's %d junk token requests went out before the other namespace's first", before, junk)
	if before > junk/2 {
		t.Errorf("%d of the tenant's %d junk token requests went out before the other namespace's first", before, junk)
	}
	// The tenant's own credentials say why they wait, and none is lost: each gets its
	// turn at its namespace's pace.
	var creds cdv1.CDCredentialList
	if err := k8s.List(context.Background(), &creds, client.InNamespace(hostile)); err != nil {
		t.Fatal(err)
	}
	waiting := 0
	for _, c := range creds.Items {
		if r := meta.FindStatusCondition(c.Status.Conditions, cdv1.ReconcilingCondition); r != nil && r.Reason == cdv1.TokenRequestsThrottledReason {
			waiting++
		}
	}
	if waiting == 0 {
		t.Errorf("none of the tenant's %d credentials says it waits for its turn (Reconciling, %s)", junk, cdv1.TokenRequestsThrottledReason)
	}
	eventually(t, 90*time.Second, "every junk request sent", func() error {
		if n := junkSent(); n < junk {
			return fmt.Errorf("%d of %d junk requests sent", n, junk)
		}
		return nil
	})
}
