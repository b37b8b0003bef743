package kubectlcd

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/printers"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

type inspectOptions struct {
	*options
	output string
}

func newInspectCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect",
		Short: "Inspect what the operator wrote",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unknown object type %q: kubectl cd inspect secret NAME", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	io := &inspectOptions{options: o}
	secret := &cobra.Command{
		Use:   "secret NAME",
		Short: "Show a token Secret's expiry, scopes, owner, subject and JWT claims, never the token",
		Long: `Shows what is in an output Secret of the operator (the one pods mount): the token's
expiry, type and scopes, the CDCredential or CDUserGrant it belongs to, and the
subject and claims of the access token decoded WITHOUT verifying its signature. The
token itself (access_token, authorization) is never printed. Refresh-token and client
Secrets are refused without reading their values.`,
		Example: `  kubectl cd inspect secret acme-token
  kubectl cd inspect secret cd-api-token -o json | jq .claims`,
		Args:              exactArgs(1, "one Secret NAME"),
		ValidArgsFunction: o.completeOutputSecretNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validateOutput(io.output); err != nil {
				return err
			}
			return io.inspectSecret(commandContext(cmd), args[0])
		},
	}
	secret.Flags().StringVarP(&io.output, "output", "o", "", "Output format: json or yaml (default: text).")
	_ = secret.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.AddCommand(secret)
	return cmd
}

// SecretSummary is what `kubectl cd inspect secret` shows of an output Secret, and what
// -o json|yaml prints. It never holds the token.
type SecretSummary struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Owner is the CDCredential or CDUserGrant the Secret belongs to.
	Owner     OwnerRef     `json:"owner"`
	TokenType string       `json:"tokenType,omitempty"`
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
	// ExpiresIn is ExpiresAt relative to now: "in 41m", "3m ago".
	ExpiresIn string   `json:"expiresIn,omitempty"`
	Scopes    []string `json:"scopes,omitempty"`
	Subject   string   `json:"subject,omitempty"`
	// Keys are the Secret's keys (names only).
	Keys []string `json:"keys"`
	// Format is "JWT", "opaque" or "none" (no token yet).
	Format string `json:"format"`
	// Header and Claims are the JWT's, decoded without verifying the signature.
	Header map[string]any `json:"header,omitempty"`
	Claims map[string]any `json:"claims,omitempty"`
}

// OwnerRef names a CR.
type OwnerRef struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

func (io *inspectOptions) inspectSecret(ctx context.Context, name string) error {
	k, err := io.connect()
	if err != nil {
		return err
	}
	// Metadata first: a Secret that is not an output is refused before its values are
	// even fetched.
	m, err := k.metadata.Resource(secretsResource).Namespace(k.namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("Secret %q not found in namespace %q", name, k.namespace)
	}
	if err != nil {
		return explainAPIError(err, "reading Secret "+name)
	}
	owner, ok := outputOwner(m)
	if !ok {
		return fmt.Errorf("Secret %s/%s is not a token Secret of cd-credentials-operator: %s; nothing of it is shown", k.namespace, name, k.whatSecretIs(ctx, m))
	}
	u, err := k.dynamic.Resource(secretsResource).Namespace(k.namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return explainAPIError(err, "reading Secret "+name)
	}
	s := &corev1.Secret{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, s); err != nil {
		return fmt.Errorf("reading Secret %s: %w", name, err)
	}
	sum := summarizeSecret(s, owner, io.env.Clock.Now())
	var buf bytes.Buffer
	if io.output != "" {
		err = printStructured(&buf, io.output, sum)
	} else {
		err = printSecret(&buf, sum, io.env.Clock.Now())
	}
	if err != nil {
		return err
	}
	if io.output == "" {
		// The claims are the identity server's, some of them the customer's to edit.
		text := terminalSafe(buf.String())
		buf.Reset()
		buf.WriteString(text)
	}
	_, err = io.env.Streams.Out.Write(redact(buf.Bytes(), s))
	return err
}

// outputOwner tells an output Secret by the operator's owner label, "<Kind>.<name>",
// and names its owner (from the controller reference: a long name is hashed in the
// label).
func outputOwner(m *metav1.PartialObjectMetadata) (OwnerRef, bool) {
	kind, name, ok := strings.Cut(m.Labels[cdv1.OwnerLabel], ".")
	if typ := m.Labels[cdv1.SecretTypeLabel]; !ok || (kind != credentialKind && kind != grantKind) || (typ != "" && typ != cdv1.SecretTypeAccessToken) {
		return OwnerRef{}, false
	}
	if ref := metav1.GetControllerOfNoCopy(m); ref != nil && ref.Kind == kind && strings.HasPrefix(ref.APIVersion, cdv1.GroupVersion.Group+"/") {
		name = ref.Name
	}
	return OwnerRef{Kind: kind, Name: name}, true
}

// whatSecretIs says what a Secret that is not an output is, from its metadata and
// the CRs that reference it; its values are not read.
func (k *kube) whatSecretIs(ctx context.Context, m *metav1.PartialObjectMetadata) string {
	switch m.Labels[cdv1.SecretTypeLabel] {
	case cdv1.SecretTypeRefreshToken:
		return "it holds a customer's refresh token (label " + cdv1.SecretTypeLabel + "=" + cdv1.SecretTypeRefreshToken + "), which is never shown"
	case cdv1.SecretTypeClient:
		return "it holds a CDCredential's client id and secret (label " + cdv1.SecretTypeLabel + "=" + cdv1.SecretTypeClient + "), which are never shown"
	}
	if grants, err := k.grants(k.namespace).List(ctx, metav1.ListOptions{}); err == nil {
		for _, g := range grants.Items {
			if ref, _, _ := unstructured.NestedString(g.Object, "spec", "refreshTokenSecretRef", "name"); ref == m.Name {
				return "it holds the refresh token of CDUserGrant " + g.GetName() + ", which is never shown"
			}
		}
	}
	if creds, err := k.credentials(k.namespace).List(ctx, metav1.ListOptions{}); err == nil {
		for _, c := range creds.Items {
			if ref, _, _ := unstructured.NestedString(c.Object, "spec", "clientSecretRef", "name"); ref == m.Name {
				return "it holds the client secret of CDCredential " + c.GetName() + ", which is never shown"
			}
		}
	}
	if _, ok := m.Annotations[cdv1.RotationInFlightAnnotation]; ok {
		return "it looks like a refresh-token Secret, which is never shown"
	}
	return "no CDCredential or CDUserGrant writes it (no " + cdv1.OwnerLabel + " label)"
}

// summarizeSecret reads an output Secret; the token is decoded, never copied out.
func summarizeSecret(s *corev1.Secret, owner OwnerRef, now time.Time) SecretSummary {
	sum := SecretSummary{Namespace: s.Namespace, Name: s.Name, Owner: owner, TokenType: string(s.Data[cdv1.TokenTypeKey]), Format: "none"}
	for k := range s.Data {
		sum.Keys = append(sum.Keys, k)
	}
	sort.Strings(sum.Keys)
	if scope := strings.Fields(string(s.Data[cdv1.ScopeKey])); len(scope) > 0 {
		sum.Scopes = scope
	}
	expires := string(s.Data[cdv1.ExpiresAtKey])
	if expires == "" {
		expires = s.Annotations[cdv1.ExpiresAtAnnotation]
	}
	if t, err := time.Parse(time.RFC3339, expires); err == nil {
		sum.ExpiresAt = &metav1.Time{Time: t.UTC()}
	}
	if token := string(s.Data[cdv1.AccessTokenKey]); token != "" {
		sum.Format = "opaque"
		claims := jwt.MapClaims{}
		if tok, _, err := jwt.NewParser(jwt.WithJSONNumber()).ParseUnverified(token, claims); err == nil {
			sum.Format, sum.Header, sum.Claims = "JWT", tok.Header, claims
			sum.Subject, _ = claims["sub"].(string)
			if sum.ExpiresAt == nil {
				if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
					sum.ExpiresAt = &metav1.Time{Time: exp.UTC()}
				}
			}
		}
	}
	if sum.ExpiresAt != nil {
		sum.ExpiresIn = relative(sum.ExpiresAt.Time, now)
	}
	return sum
}

// printSecret is the text view of inspect secret.
func printSecret(w io.Writer, s SecretSummary, now time.Time) error {
	tw := printers.GetNewTabWriter(w)
	field := func(name, value string) { fmt.Fprintf(tw, "%s:\t%s\n", name, value) }
	field("Secret", s.Namespace+"/"+s.Name)
	field("Owner", s.Owner.Kind+" "+s.Owner.Name)
	field("Token type", orNone(s.TokenType))
	field("Expires", timestamp(s.ExpiresAt, now))
	field("Scopes", orNone(strings.Join(s.Scopes, " ")))
	field("Subject", orNone(s.Subject))
	field("Keys", strings.Join(s.Keys, ", "))
	switch s.Format {
	case "JWT":
		field("Token", "JWT (claims decoded, signature NOT verified; the token itself is never shown)")
	case "opaque":
		field("Token", "opaque (not a JWT: no claims to show; the token itself is never shown)")
	default:
		field("Token", "none yet")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := printClaims(w, "Header", s.Header, now); err != nil {
		return err
	}
	return printClaims(w, "Claims", s.Claims, now)
}

// timeClaims are the JWT claims that hold NumericDate values.
var timeClaims = map[string]bool{"exp": true, "iat": true, "nbf": true, "auth_time": true}

func printClaims(w io.Writer, title string, claims map[string]any, now time.Time) error {
	if len(claims) == 0 {
		return nil
	}
	fmt.Fprintf(w, "%s:\n", title)
	keys := make([]string, 0, len(claims))
	for k := range claims {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	tw := printers.GetNewTabWriter(w)
	for _, k := range keys {
		fmt.Fprintf(tw, "  %s:\t%s\n", k, claimValue(k, claims[k], now))
	}
	return tw.Flush()
}

func claimValue(name string, v any, now time.Time) string {
	if n, ok := v.(json.Number); ok && timeClaims[name] {
		if secs, err := n.Int64(); err == nil {
			t := metav1.NewTime(time.Unix(secs, 0))
			return n.String() + " = " + timestamp(&t, now)
		}
	}
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// redact is the last guard: whatever was about to be printed, the token and the
// authorization header value never are, in any of the forms they could take.
func redact(out []byte, s *corev1.Secret) []byte {
	for _, key := range []string{cdv1.AccessTokenKey, cdv1.AuthorizationKey} {
		v := string(s.Data[key])
		if len(v) < 8 {
			continue
		}
		for _, form := range []string{v, base64.StdEncoding.EncodeToString([]byte(v)), base64.RawURLEncoding.EncodeToString([]byte(v)), url.QueryEscape(v), url.PathEscape(v)} {
			out = bytes.ReplaceAll(out, []byte(form), []byte("<redacted>"))
		}
	}
	return out
}
