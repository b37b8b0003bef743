package install

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
	"github.com/credops/cd-credentials-operator/test/support"
)

const (
	apiClientID, apiClientSecret     = "install-api", "install-api-secret"
	loginClientID, loginClientSecret = "install-login", "install-login-secret"
	// otherLoginID is an authorization-code client that a CDCredential misuses for the
	// client-credentials flow (and that no AuthorizationCode CDCredential declares).
	otherLoginID, otherLoginSecret = "install-other-login", "install-other-login-secret"

	// secretTypeLabel opts a Secret in to being read by the operator (issue 14).
	secretTypeLabel = "cd.credops.io/secret-type"
	// flowTimeout bounds every wait for the operator; the flows take seconds.
	flowTimeout = 60 * time.Second
)

// identityServer is the Central Dispatch sandbox, in process, on loopback.
type identityServer struct {
	*cdsandbox.Server
	URL, Host string
}

// startSandbox starts the identity server with the login client's redirect URIs
// registered (one callback per installation under test).
func startSandbox(t *testing.T, callbackURLs []string) identityServer {
	t.Helper()
	s := cdsandbox.New(cdsandbox.Options{
		// Short tokens, so a rotation happens within seconds.
		AccessTokenTTL: 6 * time.Second,
		Clients: []cdsandbox.Client{
			{ID: apiClientID, Secret: apiClientSecret, GrantTypes: []string{"client_credentials"}},
			{ID: loginClientID, Secret: loginClientSecret, GrantTypes: []string{"authorization_code"}, RedirectURIs: callbackURLs},
			{ID: otherLoginID, Secret: otherLoginSecret, GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"https://app.example.com/cb"}},
		},
	})
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	s.SetIssuer(hs.URL)
	return identityServer{Server: s, URL: hs.URL, Host: hs.Listener.Addr().String()}
}

// shardLabels go on every CR, so a release with a shard selector (the all-features
// values: shard=a) reconciles them too.
var shardLabels = map[string]string{"shard": "a"}

func optedInSecret(ns, name, secretType string, data map[string]string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{secretTypeLabel: secretType}}, StringData: data}
}

func credential(ns, name string, flow cdv1.Flow, clientSecret, issuer string) *cdv1.CDCredential {
	return &cdv1.CDCredential{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: shardLabels}, Spec: cdv1.CDCredentialSpec{
		Flow: flow, ClientSecretRef: cdv1.ClientSecretReference{Name: clientSecret}, Issuer: issuer}}
}

func userGrant(ns, name, cred, refreshSecret string) *cdv1.CDUserGrant {
	return &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: shardLabels}, Spec: cdv1.CDUserGrantSpec{
		CredentialRef: cdv1.CredentialReference{Name: cred}, RefreshTokenSecretRef: cdv1.RefreshTokenSecretReference{Name: refreshSecret}}}
}

// flows creates, in namespace ns, what drives every flow the operator has: a
// client-credentials token, a refresh-token rotation, two flow misuses, a customer who
// still has to log in, and one whose grant revokes and deletes its token when deleted.
func flows(t *testing.T, c client.Client, ns string, idp identityServer) {
	t.Helper()
	refreshToken := idp.SeedGrant(loginClientID, "dispatcher@acme.example", []string{"marketplace", "offline_access"})
	leaverToken := idp.SeedGrant(loginClientID, "dispatcher@leaver.example", []string{"marketplace", "offline_access"})
	login := credential(ns, "login", cdv1.FlowAuthorizationCode, "login-client", idp.URL)
	login.Spec.RevocationURL = idp.URL + "/connect/revocation"
	leaver := userGrant(ns, "leaver", "login", "leaver-refresh")
	leaver.Spec.DeletionPolicy = cdv1.DeletionPolicyDelete
	for _, o := range []client.Object{
		optedInSecret(ns, "api-client", "client", map[string]string{"client_id": apiClientID, "client_secret": apiClientSecret}),
		optedInSecret(ns, "login-client", "client", map[string]string{"client_id": loginClientID, "client_secret": loginClientSecret}),
		optedInSecret(ns, "other-login-client", "client", map[string]string{"client_id": otherLoginID, "client_secret": otherLoginSecret}),
		optedInSecret(ns, "acme-refresh", "refresh-token", map[string]string{"refresh_token": refreshToken}),
		credential(ns, "api", cdv1.FlowClientCredentials, "api-client", idp.URL),
		optedInSecret(ns, "leaver-refresh", "refresh-token", map[string]string{"refresh_token": leaverToken}),
		login,
		credential(ns, "misused", cdv1.FlowClientCredentials, "other-login-client", idp.URL),
		userGrant(ns, "acme", "login", "acme-refresh"),
		userGrant(ns, "wrong-flow", "api", "wrong-flow-refresh"),
		userGrant(ns, "newcomer", "login", "newcomer-refresh"),
		leaver,
	} {
		if err := c.Create(context.Background(), o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

func getCredential(c client.Client, ns, name string) (*cdv1.CDCredential, error) {
	o := &cdv1.CDCredential{}
	return o, c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, o)
}

func getGrant(c client.Client, ns, name string) (*cdv1.CDUserGrant, error) {
	o := &cdv1.CDUserGrant{}
	return o, c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, o)
}

func conditionIs(conds []metav1.Condition, typ string, status metav1.ConditionStatus, reason string) error {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil || c.Status != status || (reason != "" && c.Reason != reason) {
		return fmt.Errorf("want %s=%s %s; conditions %+v", typ, status, reason, conds)
	}
	return nil
}

// ownedOutputSecret checks the output Secret carries its CR as controller with
// blockOwnerDeletion: the write OwnerReferencesPermissionEnforcement admits only with
// update on the CR's finalizers.
func ownedOutputSecret(c client.Client, ns, name, ownerKind string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	if err := c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, s); err != nil {
		return nil, err
	}
	for _, ref := range s.OwnerReferences {
		if ref.Kind == ownerKind && ref.Controller != nil && *ref.Controller && ref.BlockOwnerDeletion != nil && *ref.BlockOwnerDeletion {
			return s, nil
		}
	}
	return nil, fmt.Errorf("secret %s has no controller reference to a %s with blockOwnerDeletion: %+v", name, ownerKind, s.OwnerReferences)
}

// checkClientCredentials: a token is minted, stored, and accepted by Marketplace.
func checkClientCredentials(t *testing.T, c client.Client, ns string, idp identityServer) {
	t.Helper()
	support.Eventually(t, flowTimeout, ns+": client-credentials token stored and accepted", func() error {
		cred, err := getCredential(c, ns, "api")
		if err != nil {
			return err
		}
		if err := conditionIs(cred.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, ""); err != nil {
			return err
		}
		s, err := ownedOutputSecret(c, ns, "api-token", "CDCredential")
		if err != nil {
			return err
		}
		return marketplace(idp, string(s.Data[cdv1.AuthorizationKey]))
	})
}

func marketplace(idp identityServer, authorization string) error {
	req, _ := http.NewRequest(http.MethodGet, idp.URL+"/marketplace/v2/listings", nil)
	req.Header.Set("Authorization", authorization)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("Marketplace answered %d", resp.StatusCode)
	}
	return nil
}

// checkRotation: the customer's refresh token is rotated (at least twice, so the
// output Secret is rewritten too) and the grant is Ready.
func checkRotation(t *testing.T, c client.Client, ns string) {
	t.Helper()
	support.Eventually(t, flowTimeout, ns+": refresh token rotated twice", func() error {
		g, err := getGrant(c, ns, "acme")
		if err != nil {
			return err
		}
		if err := conditionIs(g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, ""); err != nil {
			return err
		}
		if g.Status.RotationCount < 2 {
			return fmt.Errorf("%d rotations", g.Status.RotationCount)
		}
		_, err = ownedOutputSecret(c, ns, "acme-token", "CDUserGrant")
		return err
	})
}

// checkDeletionPolicy: a grant with deletionPolicy Delete holds a finalizer, and its
// deletion revokes its refresh token and deletes the Secret (the two writes no other
// flow makes: a finalizer patch and a Secret delete).
func checkDeletionPolicy(t *testing.T, c client.Client, ns string, idp identityServer) {
	t.Helper()
	support.Eventually(t, flowTimeout, ns+": the leaver rotated and holds its finalizer", func() error {
		g, err := getGrant(c, ns, "leaver")
		if err != nil {
			return err
		}
		if len(g.Finalizers) == 0 || g.Status.RotationCount < 1 {
			return fmt.Errorf("finalizers %v, %d rotations", g.Finalizers, g.Status.RotationCount)
		}
		return nil
	})
	revoked := idp.Stats().Revocations
	g, _ := getGrant(c, ns, "leaver")
	if err := c.Delete(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	support.Eventually(t, flowTimeout, ns+": the leaver and its refresh token gone, revoked", func() error {
		if _, err := getGrant(c, ns, "leaver"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("grant: %v", err)
		}
		if err := c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "leaver-refresh"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("refresh-token Secret: %v", err)
		}
		if idp.Stats().Revocations != revoked+1 {
			return fmt.Errorf("%d revocations", idp.Stats().Revocations-revoked)
		}
		return nil
	})
}

// checkFlowMisuse: both kinds of misuse are reported in status (and as Events, which
// the audit log shows were allowed).
func checkFlowMisuse(t *testing.T, c client.Client, ns string) {
	t.Helper()
	support.Eventually(t, flowTimeout, ns+": flow misuse reported", func() error {
		cred, err := getCredential(c, ns, "misused")
		if err != nil {
			return err
		}
		if err := conditionIs(cred.Status.Conditions, cdv1.FlowMisuseCondition, metav1.ConditionTrue, cdv1.GrantTypeNotAllowedReason); err != nil {
			return fmt.Errorf("CDCredential misused: %w", err)
		}
		g, err := getGrant(c, ns, "wrong-flow")
		if err != nil {
			return err
		}
		if err := conditionIs(g.Status.Conditions, cdv1.FlowMisuseCondition, metav1.ConditionTrue, cdv1.UserGrantOnClientCredentialsReason); err != nil {
			return fmt.Errorf("CDUserGrant wrong-flow: %w", err)
		}
		return nil
	})
}

// checkOnboarding: the waiting grant's authorization link, followed through the
// sandbox's login form, reaches the manager's callback, which stores the customer's
// refresh token; the grant becomes Ready.
func checkOnboarding(t *testing.T, c client.Client, ns string, idp identityServer, callbackURL string) {
	t.Helper()
	var authURL string
	support.Eventually(t, flowTimeout, ns+": authorization link published", func() error {
		g, err := getGrant(c, ns, "newcomer")
		if err != nil {
			return err
		}
		if authURL = g.Status.AuthorizationURL; authURL == "" {
			return fmt.Errorf("no authorizationURL; conditions %+v", g.Status.Conditions)
		}
		return nil
	})
	redirect := support.Login(t, idp.URL, authURL, callbackURL, "login")
	resp, err := loopbackClient.Get(redirect)
	if err != nil {
		t.Fatalf("callback: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("callback answered %d: %s", resp.StatusCode, body)
	}
	support.Eventually(t, flowTimeout, ns+": onboarded customer Ready", func() error {
		g, err := getGrant(c, ns, "newcomer")
		if err != nil {
			return err
		}
		return conditionIs(g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, "")
	})
}

// checkLeaderElection: the manager holds its Lease in the release namespace and recorded
// the leader Event there (core/v1, through controller-runtime's leader election).
// checkKeySecretKept: the operator's key Secret, deleted while the manager runs, is put
// back with the same key, which takes watching it and creating it as the ServiceAccount
// (a Role restricted to its name allows the watch only with a field selector on it).
func checkKeySecretKept(t *testing.T, c client.Client, d *appsv1.Deployment) {
	t.Helper()
	name := types.NamespacedName{Namespace: d.Namespace, Name: manager.KeySecretName}
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		if v, ok := strings.CutPrefix(a, "--key-secret="); ok {
			ns, n, _ := strings.Cut(v, "/")
			name = types.NamespacedName{Namespace: ns, Name: n}
		}
	}
	original := &corev1.Secret{}
	if err := c.Get(context.Background(), name, original); err != nil {
		t.Fatalf("the key Secret: %v", err)
	}
	if err := c.Delete(context.Background(), original); err != nil {
		t.Fatal(err)
	}
	support.Eventually(t, flowTimeout, name.String()+" put back with the same key", func() error {
		s := &corev1.Secret{}
		if err := c.Get(context.Background(), name, s); err != nil {
			return err
		}
		if s.UID == original.UID {
			return fmt.Errorf("still the deleted Secret")
		}
		if string(s.Data["hmac-key"]) != string(original.Data["hmac-key"]) {
			return fmt.Errorf("put back with another key")
		}
		return nil
	})
}

func checkLeaderElection(t *testing.T, c client.Client, ns string) {
	t.Helper()
	support.Eventually(t, flowTimeout, ns+": leader Lease and Event", func() error {
		leases := &coordinationv1.LeaseList{}
		if err := c.List(context.Background(), leases, client.InNamespace(ns)); err != nil {
			return err
		}
		held := false
		for _, l := range leases.Items {
			held = held || (l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "")
		}
		if !held {
			return fmt.Errorf("no held Lease in %s", ns)
		}
		events := &corev1.EventList{}
		if err := c.List(context.Background(), events, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range events.Items {
			if e.InvolvedObject.Kind == "Lease" && e.Reason == "LeaderElection" {
				return nil
			}
		}
		return fmt.Errorf("no LeaderElection Event in %s", ns)
	})
}

// checkSecureMetrics: the metrics endpoint refuses anonymous and unauthorized scrapers
// and serves one bound to the metrics-reader ClusterRole; the manager authenticates and
// authorizes each scrape with a TokenReview and a SubjectAccessReview, as its own
// ServiceAccount.
func checkSecureMetrics(t *testing.T, cl *cluster, p *managerProcess, reader, stranger *corev1.ServiceAccount) {
	t.Helper()
	if p.metricsAddr == "" || !p.metricsTLS {
		t.Fatalf("the rendered Deployment does not serve metrics over HTTPS")
	}
	for _, tc := range []struct {
		who  string
		sa   *corev1.ServiceAccount
		want int
	}{
		{"no token", nil, http.StatusUnauthorized},
		{"a ServiceAccount without metrics-reader", stranger, http.StatusForbidden},
		{"a ServiceAccount bound to metrics-reader", reader, http.StatusOK},
	} {
		var token string
		if tc.sa != nil {
			token = cl.serviceAccountToken(t, tc.sa)
		}
		support.Eventually(t, flowTimeout, "metrics scrape with "+tc.who, func() error {
			req, _ := http.NewRequest(http.MethodGet, "https://"+p.metricsAddr+"/metrics", nil)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := loopbackClient.Do(req)
			if err != nil {
				return err
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				return fmt.Errorf("HTTP %d, want %d", resp.StatusCode, tc.want)
			}
			if tc.want == http.StatusOK && !strings.Contains(string(body), "cdcredops_token_requests_total") {
				return fmt.Errorf("the operator's metrics are missing")
			}
			return nil
		})
	}
}

// serviceAccount creates a ServiceAccount, bound to clusterRole unless it is empty.
func (c *cluster) serviceAccount(t *testing.T, ns, name, clusterRole string) *corev1.ServiceAccount {
	t.Helper()
	ctx := context.Background()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := c.admin.Create(ctx, sa); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	if clusterRole != "" {
		binding := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: ns + "-" + name + "-" + clusterRole},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}},
		}
		if err := c.admin.Create(ctx, binding); client.IgnoreAlreadyExists(err) != nil {
			t.Fatal(err)
		}
	}
	return sa
}

// serviceAccountToken asks the API server for a token, as the kubelet does for a pod.
func (c *cluster) serviceAccountToken(t *testing.T, sa *corev1.ServiceAccount) string {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(sa.Namespace).CreateToken(context.Background(), sa.Name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}
