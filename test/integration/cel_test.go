package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// TestAdmissionRejectsBadSpecs proves each schema and CEL rule against the real API
// server: a bad spec is refused at `kubectl apply` with a message that says why.
func TestAdmissionRejectsBadSpecs(t *testing.T) {
	ns := newNamespace(t)
	cc := func(mutate func(*cdv1.CDCredential)) client.Object {
		c := credential(ns, "c", cdv1.FlowClientCredentials, "client", "")
		mutate(c)
		return c
	}
	ac := func(mutate func(*cdv1.CDCredential)) client.Object {
		c := credential(ns, "c", cdv1.FlowAuthorizationCode, "client", "")
		mutate(c)
		return c
	}
	grant := func(mutate func(*cdv1.CDUserGrant)) client.Object {
		g := userGrant(ns, "g", "login", "g-refresh")
		mutate(g)
		return g
	}
	cases := map[string]struct {
		obj  client.Object
		want string
	}{
		"an unknown flow":                                          {cc(func(c *cdv1.CDCredential) { c.Spec.Flow = "Implicit" }), "supported values"},
		"no client Secret name":                                    {cc(func(c *cdv1.CDCredential) { c.Spec.ClientSecretRef.Name = "" }), "spec.clientSecretRef.name"},
		"a client Secret in another namespace":                     {cc(func(c *cdv1.CDCredential) { c.Spec.ClientSecretRef.Name = "other/client" }), "spec.clientSecretRef.name"},
		"a plain http issuer":                                      {cc(func(c *cdv1.CDCredential) { c.Spec.Issuer = "http://id.example.com" }), "must be an https:// URL"},
		"an issuer that is not a URL":                              {cc(func(c *cdv1.CDCredential) { c.Spec.Issuer = "id.centraldispatch.com" }), "must be an https:// URL"},
		"a plain http token URL":                                   {cc(func(c *cdv1.CDCredential) { c.Spec.TokenURL = "http://10.0.0.1/token" }), "must be an https:// URL"},
		"an unknown client auth method":                            {cc(func(c *cdv1.CDCredential) { c.Spec.ClientAuthMethod = "PrivateKeyJWT" }), "supported values"},
		"redirectURL on a ClientCredentials one":                   {cc(func(c *cdv1.CDCredential) { c.Spec.RedirectURL = "https://app.example.com/cb" }), "redirectURL is only valid with flow AuthorizationCode"},
		"secretName on an AuthorizationCode one":                   {ac(func(c *cdv1.CDCredential) { c.Spec.SecretName = "tok" }), "secretName is only valid with flow ClientCredentials"},
		"output Secret named as the client Secret":                 {cc(func(c *cdv1.CDCredential) { c.Spec.SecretName = "client" }), "secretName must differ from clientSecretRef.name"},
		"default output Secret names the client Secret":            {cc(func(c *cdv1.CDCredential) { c.Spec.ClientSecretRef.Name = "c-token" }), "would overwrite the client Secret"},
		"a zero renewBefore":                                       {cc(func(c *cdv1.CDCredential) { c.Spec.RenewBefore = &metav1.Duration{} }), "renewBefore must be a positive duration"},
		"a scope with a space":                                     {cc(func(c *cdv1.CDCredential) { c.Spec.Scopes = []string{"a b"} }), "spec.scopes[0]"},
		"a grant with no credential":                               {grant(func(g *cdv1.CDUserGrant) { g.Spec.CredentialRef.Name = "" }), "spec.credentialRef.name"},
		"a grant whose output is its refresh-token Secret":         {grant(func(g *cdv1.CDUserGrant) { g.Spec.SecretName = "g-refresh" }), "pods would mount the customer's refresh token"},
		"a grant whose default output is its refresh-token Secret": {grant(func(g *cdv1.CDUserGrant) { g.Spec.RefreshTokenSecretRef.Name = "g-token" }), "would overwrite the refresh-token Secret"},
		"a grant with a negative renewBefore":                      {grant(func(g *cdv1.CDUserGrant) { g.Spec.RenewBefore = &metav1.Duration{Duration: -time.Minute} }), "spec.renewBefore"},
		"authorizationParameters on a ClientCredentials one": {cc(func(c *cdv1.CDCredential) {
			c.Spec.AuthorizationParameters = map[string]string{"prompt": "consent"}
		}), "authorizationParameters is only valid with flow AuthorizationCode"},
		"an authorization parameter the operator owns": {ac(func(c *cdv1.CDCredential) {
			c.Spec.AuthorizationParameters = map[string]string{"redirect_uri": "https://evil.example/cb"}
		}), "are set by the operator"},
		// The authorizer sets grant_type=authorization_code, and a later parameter of the
		// same name replaced it in the URL.
		"grant_type among the authorization parameters": {ac(func(c *cdv1.CDCredential) {
			c.Spec.AuthorizationParameters = map[string]string{"grant_type": "implicit"}
		}), "are set by the operator"},
		// form_post or fragment would send the code where the callback never looks
		// (it reads the redirect's query): every login would fail with nothing said.
		"a response_mode the callback cannot read": {ac(func(c *cdv1.CDCredential) {
			c.Spec.AuthorizationParameters = map[string]string{"response_mode": "form_post"}
		}), "response_mode"},
		"requireIssuerInResponse on a ClientCredentials one": {cc(func(c *cdv1.CDCredential) { c.Spec.RequireIssuerInResponse = true }), "requireIssuerInResponse is only valid with flow AuthorizationCode"},
		"a plain http revocation URL":                        {ac(func(c *cdv1.CDCredential) { c.Spec.RevocationURL = "http://id.example.com/revoke" }), "must be an https:// URL"},
		"a client id with a line break":                      {cc(func(c *cdv1.CDCredential) { c.Spec.ClientID = "id\nInjected: header" }), "spec.clientID"},
		"a template label key that is not a label key": {cc(func(c *cdv1.CDCredential) {
			c.Spec.SecretTemplate = &cdv1.SecretTemplate{Labels: map[string]cdv1.LabelValue{"bad key!": "x"}}
		}), "label keys must be valid Kubernetes label keys"},
		"a template label in the operator's own prefix": {cc(func(c *cdv1.CDCredential) {
			c.Spec.SecretTemplate = &cdv1.SecretTemplate{Labels: map[string]cdv1.LabelValue{"cd.credops.io/owner": "CDCredential.other"}}
		}), "outside the operator's own cd.credops.io/ prefix"},
		"a template label value too long": {cc(func(c *cdv1.CDCredential) {
			c.Spec.SecretTemplate = &cdv1.SecretTemplate{Labels: map[string]cdv1.LabelValue{"team": cdv1.LabelValue(strings.Repeat("a", 64))}}
		}), "spec.secretTemplate.labels.team"},
		"a template annotation in the operator's own prefix": {grant(func(g *cdv1.CDUserGrant) {
			g.Spec.SecretTemplate = &cdv1.SecretTemplate{Annotations: map[string]cdv1.AnnotationValue{"cd.credops.io/expires-at": "never"}}
		}), "outside the operator's own cd.credops.io/ prefix"},
		// The client id is published (status.clientID, login links): read from the
		// client secret's key, it would show the secret to whoever reads the CR.
		"clientIDKey naming the client secret's key": {ac(func(c *cdv1.CDCredential) { c.Spec.ClientSecretRef.ClientIDKey = "client_secret" }), "clientIDKey and clientSecretKey must name different keys"},
		"clientIDKey and clientSecretKey the same key": {cc(func(c *cdv1.CDCredential) {
			c.Spec.ClientSecretRef.ClientIDKey, c.Spec.ClientSecretRef.ClientSecretKey = "password", "password"
		}), "clientIDKey and clientSecretKey must name different keys"},
		"a deletion policy that does not exist": {grant(func(g *cdv1.CDUserGrant) { g.Spec.DeletionPolicy = "Shred" }), "supported values"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := k8s.Create(context.Background(), tc.obj)
			if err == nil {
				_ = k8s.Delete(context.Background(), tc.obj)
				t.Fatalf("accepted, want a rejection containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("rejected with %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// renewBefore is the one string of either spec that its pattern alone bounded: "1s"
// repeated to a megabyte matched it, and every CR is cached whole (spec and status are
// what the cache keeps even of a CR over its metadata bound).
func TestAdmissionBoundsRenewBefore(t *testing.T) {
	ns := newNamespace(t)
	for kind, obj := range map[string]client.Object{
		"CDCredential": credential(ns, "c", cdv1.FlowClientCredentials, "client", ""),
		"CDUserGrant":  userGrant(ns, "g", "login", "g-refresh"),
	} {
		content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: content}
		u.SetGroupVersionKind(cdv1.GroupVersion.WithKind(kind))
		if err := unstructured.SetNestedField(u.Object, strings.Repeat("1s", 33), "spec", "renewBefore"); err != nil {
			t.Fatal(err)
		}
		err = k8s.Create(context.Background(), u)
		if err == nil || !strings.Contains(err.Error(), "spec.renewBefore: Too long: may not be more than 64") {
			t.Errorf("%s with a renewBefore of 66 characters: %v, want it refused as too long", u.GetKind(), err)
		}
	}
}

func TestAdmissionAcceptsAndDefaultsGoodSpecs(t *testing.T) {
	ns := newNamespace(t)
	c := credential(ns, "ok", cdv1.FlowClientCredentials, "client", "")
	c.Spec.TokenURL = "http://127.0.0.1:8085/connect/token"
	c.Spec.RenewBefore = &metav1.Duration{Duration: 10 * time.Minute}
	c.Spec.SecretTemplate = &cdv1.SecretTemplate{
		Labels:      map[string]cdv1.LabelValue{"team": "pricing", "reloader.stakater.com/match": "true"},
		Annotations: map[string]cdv1.AnnotationValue{"reloader.stakater.com/match": "true"},
	}
	create(t, c)
	a := credential(ns, "app", cdv1.FlowAuthorizationCode, "client", "")
	a.Spec.AuthorizationParameters = map[string]string{"prompt": "", "access_type": "offline"}
	a.Spec.RequireIssuerInResponse = true
	create(t, a)
	got, err := getCredential(ns, "ok")
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.Issuer != cdv1.DefaultIssuer || got.Spec.ClientAuthMethod != cdv1.ClientSecretPost ||
		got.Spec.ClientSecretRef.ClientIDKey != "client_id" || got.Spec.ClientSecretRef.ClientSecretKey != "client_secret" {
		t.Errorf("defaults not applied: %+v", got.Spec)
	}
	g := userGrant(ns, "g", "login", "g-refresh")
	create(t, g)
	gg, _ := getGrant(ns, "g")
	if gg.Spec.RefreshTokenSecretRef.Key != "refresh_token" || gg.Spec.DeletionPolicy != cdv1.DeletionPolicyRetain {
		t.Errorf("refresh token key default not applied: %+v", gg.Spec)
	}
}
