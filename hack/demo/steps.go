package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// The sample client Secrets' ids and secrets, registered at the sandbox the way Central
// Dispatch registers them: one client per flow.
const (
	apiClientID   = "c01cc60e-api-client"
	loginClientID = "57fd8af0-login-client"
	sampleSecret  = "replace-me"
	redirectURL   = "https://tms.example.com/cd/callback"
)

func demoClients() []cdsandbox.Client {
	return []cdsandbox.Client{
		{ID: apiClientID, Secret: sampleSecret, GrantTypes: []string{"client_credentials"}},
		{ID: loginClientID, Secret: sampleSecret, GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{redirectURL}},
	}
}

// sampleFiles are applied in order; the last one is the incident's mistake.
var sampleFiles = []string{
	"client-secrets.yaml",
	"cd_v1alpha1_cdcredential_clientcredentials.yaml",
	"cd_v1alpha1_cdcredential_authorizationcode.yaml",
	"cd_v1alpha1_cdusergrant.yaml",
	"incident/cd_v1alpha1_cdcredential_misuse.yaml",
}

func applySamples(ctx context.Context, k8s client.Client, issuer string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if err := k8s.Create(ctx, ns); err != nil {
		return err
	}
	for _, f := range sampleFiles {
		objs, err := readManifests(filepath.Join("config", "samples", f))
		if err != nil {
			return err
		}
		for _, o := range objs {
			o.SetNamespace(namespace)
			if o.GetKind() == "CDCredential" {
				if err := unstructured.SetNestedField(o.Object, issuer, "spec", "issuer"); err != nil {
					return err
				}
			}
			if err := k8s.Create(ctx, o); err != nil {
				return fmt.Errorf("applying %s %s: %w", o.GetKind(), o.GetName(), err)
			}
			fmt.Printf("    %s/%s created (from config/samples/%s)\n", strings.ToLower(o.GetKind()), o.GetName(), f)
		}
	}
	return nil
}

func readManifests(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}

// seedGrant logs a demo customer in at the sandbox exactly as a browser would, takes the
// code from the redirect, exchanges it (with PKCE) and stores the refresh token in the
// Secret the sample CDUserGrant references.
func seedGrant(ctx context.Context, k8s client.Client, idp demoIdP) error {
	verifier := base64.RawURLEncoding.EncodeToString([]byte("demo-pkce-verifier-0123456789-abcdefghijklmnop"))
	sum := sha256.Sum256([]byte(verifier))
	params := url.Values{
		"client_id": {loginClientID}, "response_type": {"code"}, "grant_type": {"authorization_code"},
		"redirect_uri": {redirectURL}, "scope": {"marketplace offline_access"}, "state": {"demo-state"},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
		// OpenID Connect Core §11: without consent the sandbox, like certified providers,
		// ignores offline_access and issues no refresh token.
		"prompt": {"consent"},
	}
	code, err := login(idp.url, params, "dispatcher@acme-hauling.example")
	if err != nil {
		return err
	}
	tokens := tokenclient.New(tokenclient.Options{AllowedHosts: []string{idp.host}})
	ep := tokenclient.Endpoint{TokenURL: idp.url + "/connect/token", AuthMethod: tokenclient.ClientSecretPost, ClientID: loginClientID, ClientSecret: sampleSecret}
	tok, err := tokens.Exchange(ctx, ep, code, redirectURL, verifier)
	if err != nil {
		return fmt.Errorf("exchanging the authorization code: %w", err)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "acme-refresh-token", Labels: map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeRefreshToken}},
		Data:       map[string][]byte{"refresh_token": []byte(tok.RefreshToken)},
	}
	if err := k8s.Create(ctx, s); err != nil {
		return err
	}
	fmt.Println("    customer logged in; refresh token stored in Secret acme-refresh-token (never shown)")
	return nil
}

// login walks the sandbox's login page: GET the authorize URL, POST the form, and read
// the code from the redirect to the app's callback.
func login(base string, params url.Values, user string) (string, error) {
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
	resp, err := noFollow.Get(base + "/connect/authorize?" + params.Encode())
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("the authorize page answered HTTP %d", resp.StatusCode)
	}
	form := url.Values{}
	for k, v := range params {
		form[k] = v
	}
	form.Set("username", user)
	form.Set("password", "demo")
	resp, err = noFollow.PostForm(base+"/connect/authorize", form)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		return "", fmt.Errorf("the login did not redirect with a code (HTTP %d)", resp.StatusCode)
	}
	return loc.Query().Get("code"), nil
}

// watch prints, every few seconds, what a platform team would look at.
func watch(ctx context.Context, cfg *rest.Config, k8s client.Client, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		fmt.Printf("\n    --- %s ---\n", time.Now().UTC().Format(time.TimeOnly))
		for _, res := range []string{"cdcredentials", "cdusergrants"} {
			if err := printTable(ctx, cfg, res); err != nil {
				return err
			}
		}
		if err := printSecrets(ctx, k8s); err != nil {
			return err
		}
		if err := printMisuse(ctx, k8s); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(10*time.Second, time.Until(deadline)+time.Second)):
		}
	}
}

// printTable prints a resource the way `kubectl get` does, from the API server's own
// table (the CRD's printer columns).
func printTable(ctx context.Context, cfg *rest.Config, resource string) error {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	u := fmt.Sprintf("%s/apis/cd.credops.io/v1alpha1/namespaces/%s/%s", strings.TrimRight(cfg.Host, "/"), namespace, resource)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	table := &metav1.Table{}
	if err := json.NewDecoder(resp.Body).Decode(table); err != nil {
		return err
	}
	fmt.Printf("    $ kubectl get %s\n", resource)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
	var head []string
	for _, c := range table.ColumnDefinitions {
		if c.Priority == 0 {
			head = append(head, strings.ToUpper(c.Name))
		}
	}
	fmt.Fprintln(w, "    "+strings.Join(head, "\t"))
	for _, row := range table.Rows {
		var cells []string
		for i, c := range row.Cells {
			if table.ColumnDefinitions[i].Priority == 0 {
				cells = append(cells, cell(c))
			}
		}
		fmt.Fprintln(w, "    "+strings.Join(cells, "\t"))
	}
	return w.Flush()
}

func cell(v any) string {
	if v == nil {
		return "<none>"
	}
	return fmt.Sprint(v)
}

// printMisuse shows every FlowMisuse=True condition with its message.
func printMisuse(ctx context.Context, k8s client.Client) error {
	creds := &cdv1.CDCredentialList{}
	if err := k8s.List(ctx, creds, client.InNamespace(namespace)); err != nil {
		return err
	}
	for _, c := range creds.Items {
		if m := meta.FindStatusCondition(c.Status.Conditions, cdv1.FlowMisuseCondition); m != nil && m.Status == metav1.ConditionTrue {
			fmt.Printf("    cdcredential/%s FlowMisuse=True %s:\n      %s\n", c.Name, m.Reason, m.Message)
		}
	}
	return nil
}

// printSecrets shows the output Secrets' keys and expiry, never a token.
func printSecrets(ctx context.Context, k8s client.Client) error {
	list := &corev1.SecretList{}
	if err := k8s.List(ctx, list, client.InNamespace(namespace), client.MatchingLabels{cdv1.ManagedByLabel: cdv1.ManagedByValue}); err != nil {
		return err
	}
	for _, s := range list.Items {
		keys := slices.Sorted(maps.Keys(s.Data))
		fmt.Printf("    secret/%s keys=%s expires_at=%s\n", s.Name, strings.Join(keys, ","), s.Data[cdv1.ExpiresAtKey])
	}
	return nil
}

// check verifies what the demo showed, and fails the demo if any of it did not work.
func check(ctx context.Context, k8s client.Client, idp demoIdP) error {
	var errs []error
	api := &corev1.Secret{}
	errs = append(errs, k8s.Get(ctx, types.NamespacedName{Namespace: namespace, Name: "cd-api-token"}, api))
	status, err := get(idp.url+"/marketplace/v2/listings", string(api.Data[cdv1.AuthorizationKey]))
	errs = append(errs, err, checkf(status == http.StatusOK, "Marketplace API accepted the client-credentials token from Secret cd-api-token (HTTP %d)", status))

	grant := &cdv1.CDUserGrant{}
	errs = append(errs, k8s.Get(ctx, types.NamespacedName{Namespace: namespace, Name: "acme"}, grant))
	stats := idp.Stats()
	errs = append(errs, checkf(grant.Status.RotationCount >= 2, "CDUserGrant acme rotated its refresh token %d times (customer %s)", grant.Status.RotationCount, grant.Status.Subject))
	errs = append(errs, checkf(stats.RefreshTokensReused == 0, "the sandbox saw %d spent refresh tokens again (must be 0)", stats.RefreshTokensReused))

	user := &corev1.Secret{}
	errs = append(errs, k8s.Get(ctx, types.NamespacedName{Namespace: namespace, Name: "acme-token"}, user))
	status, err = get(idp.url+"/marketplace/v2/listings", string(user.Data[cdv1.AuthorizationKey]))
	errs = append(errs, err, checkf(status == http.StatusForbidden, "Marketplace API refuses a customer's token (HTTP %d), as Central Dispatch does since it enforced the split", status))

	misused := &cdv1.CDCredential{}
	errs = append(errs, k8s.Get(ctx, types.NamespacedName{Namespace: namespace, Name: "cd-api-misused"}, misused))
	c := meta.FindStatusCondition(misused.Status.Conditions, cdv1.FlowMisuseCondition)
	ok := c != nil && c.Status == metav1.ConditionTrue && c.Reason == cdv1.GrantTypeNotAllowedReason
	msg := ""
	if c != nil {
		msg = c.Reason + ": " + c.Message
	}
	errs = append(errs, checkf(ok, "CDCredential cd-api-misused (the incident) reports FlowMisuse=True\n           %s", msg))
	return errors.Join(errs...)
}
