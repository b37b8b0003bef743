package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
)

// grantFixture is one namespace with a sandbox, an AuthorizationCode credential
// "login" and the means to add customer grants to it.
type grantFixture struct {
	t    *testing.T
	ns   string
	idp  identityServer
	opts manager.Options
}

func newGrantFixture(t *testing.T, ttl time.Duration) *grantFixture {
	t.Helper()
	return newGrantFixtureOn(t, startSandbox(t, cdsandbox.Options{Clients: centralDispatchClients(), AccessTokenTTL: ttl}))
}

// newGrantFixtureOn is newGrantFixture against a sandbox already started, with Central
// Dispatch's clients.
func newGrantFixtureOn(t *testing.T, idp identityServer) *grantFixture {
	t.Helper()
	ns := newNamespace(t)
	create(t, clientSecret(ns, "login-client", loginClientID, loginClientSecret))
	create(t, credential(ns, "login", cdv1.FlowAuthorizationCode, "login-client", idp.URL))
	return &grantFixture{t: t, ns: ns, idp: idp, opts: manager.Options{
		AllowedTokenHosts:       []string{idp.Host},
		WatchNamespaces:         []string{ns},
		GracefulShutdownTimeout: 20 * time.Second,
		HolderTimeout:           2 * time.Second,
	}}
}

// addGrant logs a customer in at the sandbox and creates their CDUserGrant.
func (f *grantFixture) addGrant(name string) {
	f.t.Helper()
	rt := f.idp.SeedGrant(loginClientID, name+"@carrier.example", []string{"marketplace", "offline_access"})
	create(f.t, refreshSecret(f.ns, name+"-refresh", rt))
	create(f.t, userGrant(f.ns, name, "login", name+"-refresh"))
}

// rotations returns a check that a grant has rotated at least n times and is Ready.
func (f *grantFixture) rotations(name string, n int64) func() error {
	return func() error {
		g, err := getGrant(f.ns, name)
		if err != nil {
			return err
		}
		if g.Status.RotationCount < n {
			return fmt.Errorf("%d rotations", g.Status.RotationCount)
		}
		return conditionIs(g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	}
}

// withFaults is the fixture's manager options with fc around the manager's client, a
// short persist timeout, and a short shutdown, so a manager "killed" by failing writes
// stops quickly.
func (f *grantFixture) withFaults(fc *faults, persist time.Duration) manager.Options {
	opts := f.opts
	opts.NewClient = fc.newClient()
	opts.PersistTimeout = persist
	opts.GracefulShutdownTimeout = 2 * time.Second
	return opts
}

func (f *grantFixture) refreshCount() int { return f.idp.Stats().TokenRequests["refresh_token"] }

// assertNoTokenReused fails the test if the sandbox ever saw a spent refresh token.
func (f *grantFixture) assertNoTokenReused() {
	f.t.Helper()
	if n := f.idp.Stats().RefreshTokensReused; n != 0 {
		f.t.Errorf("the identity server saw %d spent refresh tokens again, want 0", n)
	}
}

// assertStoredTokenLive proves the refresh token in the grant's Secret is the live one
// by spending it at the sandbox (the grant is finished with afterwards).
func (f *grantFixture) assertStoredTokenLive(name string) {
	f.t.Helper()
	s, err := getSecret(f.ns, name+"-refresh")
	if err != nil {
		f.t.Fatal(err)
	}
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {string(s.Data["refresh_token"])}, "client_id": {loginClientID}, "client_secret": {loginClientSecret}}
	resp, err := http.PostForm(f.idp.URL+"/connect/token", form)
	if err != nil {
		f.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		f.t.Errorf("the stored refresh token of %s was refused (HTTP %d): it was lost", name, resp.StatusCode)
	}
	if a := s.Annotations[cdv1.RotationInFlightAnnotation]; a != "" {
		f.t.Errorf("the refresh Secret still carries an in-flight mark")
	}
}

func TestGrantRotatesManyTimesWithEveryAccessTokenLive(t *testing.T) {
	f := newGrantFixture(t, 2*time.Second)
	m := startManager(t, f.opts)
	f.addGrant("acme")
	var dead atomic.Int32
	eventually(t, 60*time.Second, "10 rotations", func() error {
		if s, err := getSecret(f.ns, "acme-token"); err == nil {
			if _, live := f.idp.Introspect(string(s.Data[cdv1.AccessTokenKey])); !live {
				exp, _ := time.Parse(time.RFC3339, string(s.Data[cdv1.ExpiresAtKey]))
				if time.Now().Before(exp) {
					dead.Add(1) // the Secret claims a validity the token does not have
				}
			}
		}
		return f.rotations("acme", 10)()
	})
	m.Stop(t)
	if n := dead.Load(); n != 0 {
		t.Errorf("%d observations of a Secret holding a dead token before its expires_at", n)
	}
	g, _ := getGrant(f.ns, "acme")
	if g.Status.Subject != "acme@carrier.example" || g.Status.LastRotationTime == nil || len(g.Status.GrantedScopes) == 0 {
		t.Errorf("status %+v", g.Status)
	}
	if err := conditionIs(g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenValidReason); err != nil {
		t.Error(err)
	}
	s, _ := getSecret(f.ns, "acme-token")
	if !metav1.IsControlledBy(s, g) {
		t.Errorf("access-token Secret not controlled by the grant")
	}
	rs, _ := getSecret(f.ns, "acme-refresh")
	if len(rs.OwnerReferences) != 0 {
		t.Errorf("the refresh-token Secret the user created got owner references %+v", rs.OwnerReferences)
	}
	t.Logf("rotations: %d, refresh requests: %d, spent tokens reused: %d", g.Status.RotationCount, f.refreshCount(), f.idp.Stats().RefreshTokensReused)
	f.assertNoTokenReused()
	f.assertStoredTokenLive("acme")
}

func TestGrantSurvivesRestartsBetweenRotations(t *testing.T) {
	f := newGrantFixture(t, 2*time.Second)
	f.addGrant("acme")
	for i := int64(1); i <= 3; i++ {
		m := startManager(t, f.opts)
		eventually(t, 30*time.Second, "2 more rotations", f.rotations("acme", 2*i))
		m.Stop(t)
	}
	f.assertNoTokenReused()
	f.assertStoredTokenLive("acme")
}

func TestMissingRefreshTokenAwaitsAuthorizationThenProceeds(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	startManager(t, f.opts)
	create(t, userGrant(f.ns, "acme", "login", "acme-refresh"))
	eventually(t, 10*time.Second, "AwaitingAuthorization", func() error {
		if err := grantCondition(f.ns, "acme", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.AwaitingAuthorizationReason)(); err != nil {
			return err
		}
		return grantCondition(f.ns, "acme", cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenMissingReason)()
	})
	rt := f.idp.SeedGrant(loginClientID, "acme", []string{"marketplace", "offline_access"})
	create(t, refreshSecret(f.ns, "acme-refresh", rt))
	eventually(t, 10*time.Second, "Ready at once when the token appears", f.rotations("acme", 1))
	if rs, _ := getSecret(f.ns, "acme-refresh"); rs.Annotations[cdv1.BoundToAnnotation] == "" {
		t.Errorf("the refresh-token Secret was not bound to the grant on first use")
	}
}

func TestInvalidGrantIsTerminalUntilANewRefreshTokenArrives(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	startManager(t, f.opts)
	create(t, refreshSecret(f.ns, "acme-refresh", "not-a-token-the-server-knows"))
	create(t, userGrant(f.ns, "acme", "login", "acme-refresh"))
	eventually(t, 10*time.Second, "RefreshTokenRejected", func() error {
		if err := grantCondition(f.ns, "acme", cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenRejectedReason)(); err != nil {
			return err
		}
		return grantCondition(f.ns, "acme", cdv1.StalledCondition, metav1.ConditionTrue, cdv1.RefreshTokenRejectedReason)()
	})
	if n := f.refreshCount(); n != 1 {
		t.Errorf("%d refresh requests for a rejected token, want 1", n)
	}
	s, _ := getSecret(f.ns, "acme-refresh")
	s.Data["refresh_token"] = []byte(f.idp.SeedGrant(loginClientID, "acme", []string{"offline_access"}))
	if err := k8s.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "Ready with the new token", f.rotations("acme", 1))
	f.assertNoTokenReused()
}

func TestUserGrantOnClientCredentialsSendsNothing(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	startManager(t, f.opts)
	create(t, clientSecret(f.ns, "api-client", apiClientID, apiClientSecret))
	create(t, credential(f.ns, "api", cdv1.FlowClientCredentials, "api-client", f.idp.URL))
	create(t, refreshSecret(f.ns, "acme-refresh", f.idp.SeedGrant(loginClientID, "acme", nil)))
	create(t, userGrant(f.ns, "acme", "api", "acme-refresh"))
	eventually(t, 10*time.Second, "FlowMisuse", func() error {
		if err := grantCondition(f.ns, "acme", cdv1.FlowMisuseCondition, metav1.ConditionTrue, cdv1.UserGrantOnClientCredentialsReason)(); err != nil {
			return err
		}
		return grantCondition(f.ns, "acme", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.UserGrantOnClientCredentialsReason)()
	})
	if n := f.refreshCount(); n != 0 {
		t.Errorf("%d refresh requests, want none", n)
	}
}

// TestCrashAfterTheServerSpentTheTokenEndsInRotationInterrupted kills the manager (every
// write fails for good, then it is stopped) right after the identity server consumed a
// refresh token and before the new one was stored. The next manager must find the
// in-flight mark, try the stored token once, and stop at RotationInterrupted.
func TestCrashAfterTheServerSpentTheTokenEndsInRotationInterrupted(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	f.addGrant("acme")
	fc := &faults{}
	opts := f.withFaults(fc, 500*time.Millisecond)
	f.idp.OnTokenRequest(func(grantType string, ok bool) {
		if grantType == "refresh_token" && ok {
			fc.set(func(string, client.Object) error { return errInjected }) // the process is gone
		}
	})
	m := startManager(t, opts)
	eventually(t, 10*time.Second, "the server spent the token", func() error {
		if f.idp.Stats().Issued["refresh_token"] < 1 {
			return fmt.Errorf("no refresh yet")
		}
		return nil
	})
	m.Stop(t)
	f.idp.OnTokenRequest(nil)

	startManager(t, f.opts)
	eventually(t, 20*time.Second, "RotationInterrupted", func() error {
		if err := grantCondition(f.ns, "acme", cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RotationInterruptedReason)(); err != nil {
			return err
		}
		return grantCondition(f.ns, "acme", cdv1.StalledCondition, metav1.ConditionTrue, cdv1.RotationInterruptedReason)()
	})
	if n := f.refreshCount(); n != 2 {
		t.Errorf("%d refresh requests, want 2: the lost rotation and exactly one recovery attempt", n)
	}
	// No silent loop: a third manager sees the rejection in status and sends nothing.
	startManager(t, f.opts)
	f.addGrant("probe")
	eventually(t, 10*time.Second, "probe rotated (the third manager is working)", f.rotations("probe", 1))
	if n := f.refreshCount(); n != 3 {
		t.Errorf("%d refresh requests, want 3: nothing more for the interrupted grant, one for the probe", n)
	}
}

// TestCrashAfterStoringTheNewTokenKeepsTheGrantAlive kills the manager right after the
// new refresh token was stored and before the access token and status were written.
func TestCrashAfterStoringTheNewTokenKeepsTheGrantAlive(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	f.addGrant("acme")
	fc := &faults{}
	opts := f.withFaults(fc, 500*time.Millisecond)
	var stored atomic.Bool
	fc.set(func(verb string, obj client.Object) error {
		if stored.Load() {
			return errInjected // dead after the refresh token landed
		}
		if s, ok := obj.(*corev1.Secret); ok && s.Name == "acme-refresh" && verb == "update" && s.Annotations[cdv1.RotationInFlightAnnotation] == "" {
			stored.Store(true) // this write is the new token landing; let it through
		}
		return nil
	})
	m := startManager(t, opts)
	eventually(t, 10*time.Second, "the new token stored", func() error {
		if !stored.Load() {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	m.Stop(t)

	startManager(t, f.opts)
	eventually(t, 20*time.Second, "rotated by the next manager", f.rotations("acme", 1))
	f.assertNoTokenReused()
	f.assertStoredTokenLive("acme")
}

// TestAPIServerOutageWhileHoldingTheNewToken fails every write to the refresh-token
// Secret for 15 s after a refresh: the operator must keep the new token in memory
// (across reconciles, since PersistTimeout is short), write it again at short intervals
// rather than with the long backoff of other failures, and store it when writes
// recover, never sending the spent token again.
func TestAPIServerOutageWhileHoldingTheNewToken(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	f.addGrant("acme")
	fc := &faults{}
	opts := f.withFaults(fc, 300*time.Millisecond)
	var failures atomic.Int32
	var outageEnds atomic.Int64
	fc.set(func(verb string, obj client.Object) error {
		s, ok := obj.(*corev1.Secret)
		if !ok || s.Name != "acme-refresh" || s.Annotations[cdv1.RotationInFlightAnnotation] != "" {
			return nil // the in-flight mark goes through
		}
		outageEnds.CompareAndSwap(0, time.Now().Add(15*time.Second).UnixNano())
		if time.Now().UnixNano() > outageEnds.Load() {
			return nil
		}
		failures.Add(1)
		return errInjected
	})
	startManager(t, opts)
	eventually(t, 45*time.Second, "rotated once writes recover", f.rotations("acme", 1))
	if n := failures.Load(); n < 3 {
		t.Errorf("only %d writes were attempted during the 15 s outage: a held refresh token is written again every 5-6 s", n)
	}
	if n := f.refreshCount(); n != 1 {
		t.Errorf("%d refresh requests, want 1: the token is held, not re-fetched", n)
	}
	f.assertNoTokenReused()
	f.assertStoredTokenLive("acme")
}

// TestSIGTERMDuringARotationLosesNothing stops the manager while a refresh request is
// in flight at the identity server: the rotation must finish and persist before the
// manager exits.
func TestSIGTERMDuringARotationLosesNothing(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	f.idp.InjectFault(cdsandbox.Fault{GrantType: "refresh_token", After: true, Mode: cdsandbox.FaultHang, Delay: 1500 * time.Millisecond})
	f.addGrant("acme")
	m := startManager(t, f.opts)
	eventually(t, 10*time.Second, "a refresh in flight", func() error {
		if f.refreshCount() < 1 {
			return fmt.Errorf("no refresh yet")
		}
		return nil
	})
	m.Stop(t) // returns only after the manager has exited
	rs, _ := getSecret(f.ns, "acme-refresh")
	if rs.Annotations[cdv1.RotationInFlightAnnotation] != "" {
		t.Fatalf("the manager exited with the rotation still in flight")
	}
	f.assertNoTokenReused()
	f.assertStoredTokenLive("acme")
}

// TestALostLeaderElectionDuringARotationLosesNothing: the leader loses its lease while
// a refresh is out at the identity server, which has already spent the token and minted
// its successor. controller-runtime gives in-flight reconciles no grace on a lost
// election, and cmd/manager exits once Start returns: whatever the Secret holds then is
// all the customer has.
func TestALostLeaderElectionDuringARotationLosesNothing(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	f.idp.InjectFault(cdsandbox.Fault{GrantType: "refresh_token", After: true, Mode: cdsandbox.FaultHang, Delay: 3 * time.Second})
	opts := f.opts
	opts.LeaderElection = true
	opts.LeaderElectionNamespace = f.ns
	opts.LeaderElectionID = "it-" + f.ns
	opts.LeaseDuration, opts.RenewDeadline, opts.RetryPeriod = 2*time.Second, time.Second, 200*time.Millisecond
	// The request outlives the 3 s hang; a mark is a dead process's only after longer.
	opts.TokenRequestTimeout, opts.HolderTimeout = 5*time.Second, 6*time.Second
	opts.Key = testKey
	opts.SeveralPerProcess = true
	opts.MetricsBindAddress, opts.HealthProbeBindAddress = "0", "0"
	op, err := manager.New(t.Context(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- op.Start(t.Context()) }()
	f.addGrant("acme")
	eventually(t, 20*time.Second, "a refresh in flight", func() error {
		if f.refreshCount() < 1 {
			return fmt.Errorf("no refresh yet")
		}
		return nil
	})
	// Another replica takes the lease, as if this one had failed to renew it in time.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l := &coordinationv1.Lease{}
		if err := k8s.Get(t.Context(), client.ObjectKey{Namespace: f.ns, Name: opts.LeaderElectionID}, l); err != nil {
			return err
		}
		other, hour, now := "another-replica", int32(3600), metav1.NewMicroTime(time.Now())
		l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime, l.Spec.AcquireTime = &other, &hour, &now, &now
		return k8s.Update(t.Context(), l)
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the manager did not stop on the lost election")
	}
	if f.refreshCount() != 1 {
		t.Fatalf("%d refresh requests, want the one in flight when the election was lost", f.refreshCount())
	}
	f.assertStoredTokenLive("acme")
}

// TestTwoManagersWithLeaderElectionNeverSendATokenTwice runs two managers against the
// same grants, hands leadership over mid-run, and counts at the identity server.
func TestTwoManagersWithLeaderElectionNeverSendATokenTwice(t *testing.T) {
	f := newGrantFixture(t, 2*time.Second)
	opts := f.opts
	opts.LeaderElection = true
	opts.LeaderElectionNamespace = f.ns
	opts.LeaderElectionID = "it-" + f.ns
	opts.TokenRequestTimeout = time.Second // shorter than the 2 s in-flight timeout, as the manager requires
	first := startManager(t, opts)
	second := startManager(t, opts)
	names := []string{"acme", "bolt", "cargo"}
	for _, n := range names {
		f.addGrant(n)
	}
	for _, n := range names {
		eventually(t, 30*time.Second, n+" rotating", f.rotations(n, 3))
	}
	first.Stop(t)
	for _, n := range names {
		eventually(t, 60*time.Second, n+" rotating after the handover", f.rotations(n, 6))
	}
	second.Stop(t)
	f.assertNoTokenReused()
	for _, n := range names {
		f.assertStoredTokenLive(n)
	}
	if strings.Contains(fmt.Sprint(f.idp.Stats().Rejected), "invalid_grant") {
		t.Errorf("invalid_grant answers seen: %v", f.idp.Stats().Rejected)
	}
}

// A grant's output name (by default <name>-token) held by another Secret is
// SecretNameConflict; deleting that Secret, as the message says, must bring the grant
// back at once, not at the next CDCredential resync hours later. The Secret here is
// opted in, so in the manager's cache; a user's Secret without the label is found gone
// at the grant's next recheck.
func TestAGrantTakesItsOutputNameOnceTheOptedInSecretHoldingItIsDeleted(t *testing.T) {
	f := newGrantFixture(t, 30*time.Minute)
	startManager(t, f.opts)
	create(t, clientSecret(f.ns, "acme-token", "someone-elses-id", "someone-elses-secret"))
	f.addGrant("acme")
	eventually(t, 10*time.Second, "SecretNameConflict", grantCondition(f.ns, "acme", cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretNameConflictReason))
	if n := f.refreshCount(); n != 0 {
		t.Fatalf("%d refreshes while the output name is taken, want 0", n)
	}

	s, _ := getSecret(f.ns, "acme-token")
	if err := k8s.Delete(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "Ready once the name is free", f.rotations("acme", 1))
}
