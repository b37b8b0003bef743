package main

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/kubectlcd"
)

// acmeToken is the access token in acme-token: a JWT, so its claims can be shown.
var acmeToken = func() string {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"iss": "https://id.example.com", "sub": "dispatcher@acme.example", "aud": "marketplace",
		"exp": time.Now().Add(45 * time.Minute).Unix(), "scope": "marketplace offline_access",
	}).SignedString([]byte("signing-key-of-the-test"))
	if err != nil {
		panic(err)
	}
	return tok
}()

const (
	refreshTokenValue = "refresh-token-value-never-shown"
	clientSecretValue = "client-secret-value-never-shown"
)

func outputSecret() *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: readyNS, Name: "acme-token", Labels: map[string]string{
			cdv1.ManagedByLabel: cdv1.ManagedByValue, cdv1.OwnerLabel: "CDUserGrant.acme", cdv1.SecretTypeLabel: cdv1.SecretTypeAccessToken,
		}},
		StringData: map[string]string{
			cdv1.AccessTokenKey: acmeToken, cdv1.AuthorizationKey: "Bearer " + acmeToken, cdv1.TokenTypeKey: "Bearer",
			cdv1.ExpiresAtKey: time.Now().Add(45 * time.Minute).UTC().Format(time.RFC3339), cdv1.ScopeKey: "marketplace offline_access",
		},
	}
}

func refreshTokenSecret() *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: readyNS, Name: "acme-refresh", Labels: map[string]string{cdv1.SecretTypeLabel: "refresh-token"}},
		StringData: map[string]string{"refresh_token": refreshTokenValue},
	}
}

// clientSecret carries no type label: the plugin knows it from the CDCredential that
// references it.
func clientSecret() *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: readyNS, Name: "login-client"},
		StringData: map[string]string{"client_id": "57fd8af0-login", "client_secret": clientSecretValue},
	}
}

func unrelatedSecret() *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: readyNS, Name: "unrelated"},
		StringData: map[string]string{"password": "unrelated-value-never-shown"},
	}
}

func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"-h"}, {}, {"help", "status"}, {"status", "--help"}, {"authorize", "--help"}, {"reauthorize", "-h"},
		{"inspect", "--help"}, {"inspect", "secret", "--help"}, {"version", "--help"}, {"completion", "--help"},
	} {
		t.Run(strings.Join(append([]string{"kubectl cd"}, args...), " "), func(t *testing.T) {
			r := kubectlCD(t, "", args...)
			if r.code != 0 || !strings.Contains(r.stdout, "Usage:") || !strings.Contains(r.stdout, "kubectl cd") || r.stderr != "" {
				t.Errorf("want usage on stdout and exit 0:\n%s", r)
			}
		})
	}
}

func TestCommandLineMistakesExitOneWithOneLine(t *testing.T) {
	cases := map[string]struct {
		args      []string
		wantError string
		wantUsage string
	}{
		"an unknown flag":                       {[]string{"status", "--bogus"}, "error: unknown flag: --bogus", "kubectl cd status [NAME"},
		"an unknown flag on the plugin":         {[]string{"--bogus"}, "error: unknown flag: --bogus", "kubectl cd [flags]"},
		"an unknown command":                    {[]string{"bogus"}, `error: unknown command "bogus" for "kubectl cd"`, "kubectl cd [flags]"},
		"two names":                             {[]string{"status", "a", "b"}, "error: kubectl cd status takes at most one NAME, got 2 arguments", "kubectl cd status [NAME"},
		"authorize without a grant":             {[]string{"authorize"}, "error: kubectl cd authorize takes one GRANT, got 0 arguments", "kubectl cd authorize GRANT"},
		"an output format it does not know":     {[]string{"status", "-o", "wide"}, `error: unknown output format "wide": use -o json or -o yaml`, "kubectl cd status [NAME"},
		"a name across all namespaces":          {[]string{"status", "acme", "-A"}, "error: a NAME cannot be combined with -A: name the namespace with -n", "kubectl cd status [NAME"},
		"a timeout that is not one":             {[]string{"authorize", "acme", "--timeout", "0s"}, "error: --timeout must be positive", "kubectl cd authorize GRANT"},
		"a callback endpoint that is not a URL": {[]string{"authorize", "acme", "--callback-endpoint", "localhost:9443"}, `error: --callback-endpoint "localhost:9443" is not an http(s) URL`, "kubectl cd authorize GRANT"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := kubectlCD(t, "", tc.args...)
			first, rest, _ := strings.Cut(r.stderr, "\n")
			if r.code != 1 || first != tc.wantError || !strings.HasPrefix(rest, "Usage:\n  "+tc.wantUsage) || !strings.HasSuffix(rest, "--help' for the flags and examples.\n") || r.stdout != "" {
				t.Errorf("want exit 1, %q and the usage of %q:\n%s", tc.wantError, tc.wantUsage, r)
			}
		})
	}
}

func TestErrorsExitOneWithOneClearLine(t *testing.T) {
	fixtures(t)
	cases := map[string]struct {
		args []string
		want string
	}{
		"a name that is not there":         {[]string{"status", "nothing"}, `error: no CDCredential or CDUserGrant named "nothing" in namespace "team-ready"`},
		"a grant that is not there":        {[]string{"authorize", "nothing"}, `error: CDUserGrant "nothing" not found in namespace "team-ready"`},
		"a user without rights (--as)":     {[]string{"status", "--as", "nobody"}, `error: listing CDCredentials: cdcredentials.cd.credops.io is forbidden: User "nobody" cannot list resource "cdcredentials" in API group "cd.credops.io" in the namespace "team-ready"`},
		"a context that does not exist":    {[]string{"status", "--context", "nowhere"}, `error: context "nowhere" does not exist`},
		"a kubeconfig that does not exist": {[]string{"status", "--kubeconfig", "/nonexistent/kubeconfig"}, "error: stat /nonexistent/kubeconfig: no such file or directory"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := kubectlCD(t, "", tc.args...)
			if r.code != 1 || r.stderr != tc.want+"\n" || r.stdout != "" {
				t.Errorf("want exit 1 and exactly %q:\n%s", tc.want, r)
			}
		})
	}
}

// table splits a table into rows of cells (cells are separated by 2+ spaces).
func table(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rows = append(rows, regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1))
	}
	return rows
}

// columns keeps the named columns of each row (the header row names them).
func columns(rows [][]string, names ...string) [][]string {
	idx := map[string]int{}
	for i, h := range rows[0] {
		idx[h] = i
	}
	var out [][]string
	for _, r := range rows {
		var kept []string
		for _, n := range names {
			i, ok := idx[n]
			if !ok || i >= len(r) {
				kept = append(kept, "?")
				continue
			}
			kept = append(kept, r[i])
		}
		out = append(out, kept)
	}
	return out
}

func TestStatusTableFollowsContextAndNamespace(t *testing.T) {
	fixtures(t)
	readyRows := [][]string{
		{"NAME", "READY", "REASON", "EXPIRES"},
		{"cdcredential/login", "True", "ClientReady", "<none>"},
		{"cdusergrant/acme", "True", "TokenIssued", "in 4?m"},
	}
	waitingRows := [][]string{
		{"NAME", "READY", "REASON", "EXPIRES"},
		{"cdcredential/login", "True", "ClientReady", "<none>"},
		{"cdusergrant/globex", "False", "AwaitingAuthorization", "<none>"},
	}
	cases := map[string]struct {
		args []string
		want [][]string
	}{
		"the current context's namespace": {[]string{"status"}, readyRows},
		"--context picks the other one":   {[]string{"status", "--context", "waiting"}, waitingRows},
		"-n wins over the context":        {[]string{"--context", "waiting", "status", "-n", "team-ready"}, readyRows},
		"--namespace wins too":            {[]string{"status", "--namespace=team-waiting"}, waitingRows},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := kubectlCD(t, "", tc.args...)
			if r.code != 0 {
				t.Fatalf("%s", r)
			}
			got := fixtureRows(columns(table(r.stdout), "NAME", "READY", "REASON", "EXPIRES"), 0)
			if diff := cmp.Diff(tc.want, fuzzExpiry(got)); diff != "" {
				t.Errorf("table (-want +got):\n%s\n%s", diff, r.stdout)
			}
			if !strings.Contains(r.stdout, "MESSAGE") {
				t.Errorf("no MESSAGE column:\n%s", r.stdout)
			}
		})
	}
	t.Run("-A lists every namespace", func(t *testing.T) {
		r := kubectlCD(t, "", "status", "-A")
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		want := [][]string{
			{"NAMESPACE", "NAME", "READY", "REASON", "EXPIRES"},
			{"team-ready", "cdcredential/login", "True", "ClientReady", "<none>"},
			{"team-ready", "cdusergrant/acme", "True", "TokenIssued", "in 4?m"},
			{"team-waiting", "cdcredential/login", "True", "ClientReady", "<none>"},
			{"team-waiting", "cdusergrant/globex", "False", "AwaitingAuthorization", "<none>"},
		}
		got := fixtureRows(columns(table(r.stdout), "NAMESPACE", "NAME", "READY", "REASON", "EXPIRES"), 1)
		if diff := cmp.Diff(want, fuzzExpiry(got)); diff != "" {
			t.Errorf("table (-want +got):\n%s\n%s", diff, r.stdout)
		}
	})
	t.Run("an empty namespace says so", func(t *testing.T) {
		r := kubectlCD(t, "", "status", "-n", "default")
		if r.code != 0 || r.stdout != "" || r.stderr != "No CDCredentials or CDUserGrants found in namespace default.\n" {
			t.Errorf("%s", r)
		}
	})
}

// fixtureRows keeps the header and the fixtures' rows (column nameCol holds the
// name): other tests add grants of their own to the same namespaces.
func fixtureRows(rows [][]string, nameCol int) [][]string {
	out := rows[:1]
	for _, row := range rows[1:] {
		switch row[nameCol] {
		case "cdcredential/login", "cdusergrant/acme", "cdusergrant/globex":
			out = append(out, row)
		}
	}
	return out
}

// fuzzExpiry turns "in 44m"/"in 45m" into "in 4?m": the seconds between the fixture and
// the run are not the test's business.
func fuzzExpiry(rows [][]string) [][]string {
	re := regexp.MustCompile(`^in 4[45]m$`)
	for _, r := range rows {
		for i, c := range r {
			if re.MatchString(c) {
				r[i] = "in 4?m"
			}
		}
	}
	return rows
}

func TestStatusOfOneObject(t *testing.T) {
	fixtures(t)
	t.Run("the detailed view of a Ready grant", func(t *testing.T) {
		r := kubectlCD(t, "", "status", "acme")
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		for _, want := range []string{
			"Kind:             CDUserGrant\n", "Credential:       login\n", "Ready:            True (TokenIssued)\n",
			"Secret:           acme-token\n", "Rotations:        3\n", "Subject:          dispatcher@acme.example\n",
			"Granted scopes:   marketplace offline_access\n", "Conditions:\n",
		} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("no %q in:\n%s", want, r.stdout)
			}
		}
		if !regexp.MustCompile(`Expires:\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(in 4[45]m\)`).MatchString(r.stdout) {
			t.Errorf("no absolute and relative expiry:\n%s", r.stdout)
		}
		conds := columns(table(r.stdout[strings.Index(r.stdout, "  TYPE"):]), "TYPE", "STATUS", "REASON")
		want := [][]string{{"TYPE", "STATUS", "REASON"}, {"Ready", "True", "TokenIssued"}, {"ReauthorizationRequired", "False", "RefreshTokenValid"}, {"FlowMisuse", "False", "FlowCorrect"}}
		if diff := cmp.Diff(want, conds); diff != "" {
			t.Errorf("conditions (-want +got):\n%s", diff)
		}
	})
	t.Run("a waiting grant shows its link", func(t *testing.T) {
		r := kubectlCD(t, "", "--context", "waiting", "status", "cdusergrant/globex")
		if r.code != 0 || !regexp.MustCompile(`\nAuthorization URL:\s+`+regexp.QuoteMeta(globexURL)+`\n`).MatchString(r.stdout) ||
			!regexp.MustCompile(`\nReady:\s+False \(AwaitingAuthorization\)\n`).MatchString(r.stdout) {
			t.Errorf("%s", r)
		}
	})
	t.Run("-o json is the summary", func(t *testing.T) {
		r := kubectlCD(t, "", "status", "acme", "-o", "json")
		var got kubectlcd.Summary
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != 0 {
			t.Fatalf("%v\n%s", err, r)
		}
		want := kubectlcd.Summary{Kind: "CDUserGrant", Namespace: readyNS, Name: "acme", Ready: "True", Reason: "TokenIssued", Message: "The access token is current",
			Credential: "login", Subject: "dispatcher@acme.example", SecretName: "acme-token", GrantedScopes: []string{"marketplace", "offline_access"}, Generation: 1, ObservedGeneration: 1}
		if diff := cmp.Diff(want, got, cmpIgnoreDynamic); diff != "" || got.Rotations == nil || *got.Rotations != 3 || got.ExpiresAt == nil || len(got.Conditions) != 3 {
			t.Errorf("summary (-want +got):\n%s\n%s", diff, r.stdout)
		}
	})
	t.Run("-o yaml of a list", func(t *testing.T) {
		r := kubectlCD(t, "", "status", "-n", waitingNS, "-o", "yaml")
		var got struct{ Items []kubectlcd.Summary }
		if err := yaml.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != 0 {
			t.Fatalf("%v\n%s", err, r)
		}
		var names []string
		for _, s := range got.Items {
			names = append(names, s.Kind+"/"+s.Name)
		}
		if len(names) < 2 || names[0] != "CDCredential/login" || !strings.Contains(strings.Join(names, " "), "CDUserGrant/globex") {
			t.Errorf("items %v\n%s", names, r.stdout)
		}
	})
}

var cmpIgnoreDynamic = cmp.FilterPath(func(p cmp.Path) bool {
	switch p.Last().String() {
	case ".Rotations", ".ExpiresAt", ".RenewalTime", ".Conditions":
		return true
	}
	return false
}, cmp.Ignore())

// forms of a value a careless printer could show.
func forms(v string) []string {
	return []string{v, base64.StdEncoding.EncodeToString([]byte(v)), base64.RawURLEncoding.EncodeToString([]byte(v)), url.QueryEscape(v), url.PathEscape(v)}
}

func assertNoneShown(t *testing.T, r result, values ...string) {
	t.Helper()
	for _, v := range values {
		for _, f := range forms(v) {
			if strings.Contains(r.stdout, f) || strings.Contains(r.stderr, f) {
				t.Errorf("a secret value is shown (%.12s…):\n%s", f, r)
			}
		}
	}
}

func TestInspectSecret(t *testing.T) {
	fixtures(t)
	sig := acmeToken[strings.LastIndex(acmeToken, ".")+1:]
	t.Run("an output Secret: expiry, scopes, owner, subject and claims, never the token", func(t *testing.T) {
		r := kubectlCD(t, "", "inspect", "secret", "acme-token")
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		for _, want := range []string{
			"Owner:        CDUserGrant acme\n", "Token type:   Bearer\n", "Scopes:       marketplace offline_access\n",
			"Subject:      dispatcher@acme.example\n", "signature NOT verified", "Claims:\n", "  iss:     https://id.example.com\n", "  aud:     marketplace\n",
		} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("no %q in:\n%s", want, r.stdout)
			}
		}
		if !regexp.MustCompile(`Expires:\s+\S+Z \(in 4[45]m\)`).MatchString(r.stdout) {
			t.Errorf("no absolute and relative expiry:\n%s", r.stdout)
		}
		assertNoneShown(t, r, acmeToken, "Bearer "+acmeToken, sig)
	})
	t.Run("-o json of the same summary", func(t *testing.T) {
		r := kubectlCD(t, "", "inspect", "secret", "acme-token", "-o", "json")
		var got kubectlcd.SecretSummary
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != 0 {
			t.Fatalf("%v\n%s", err, r)
		}
		if got.Owner != (kubectlcd.OwnerRef{Kind: "CDUserGrant", Name: "acme"}) || got.Subject != "dispatcher@acme.example" || got.Format != "JWT" || got.Claims["iss"] != "https://id.example.com" {
			t.Errorf("summary %+v", got)
		}
		assertNoneShown(t, r, acmeToken, "Bearer "+acmeToken, sig)
	})
	refusals := map[string]struct {
		secret string
		want   string
		values []string
	}{
		"a refresh-token Secret":     {"acme-refresh", `error: Secret team-ready/acme-refresh is not a token Secret of cd-credentials-operator: it holds a customer's refresh token (label cd.credops.io/secret-type=refresh-token), which is never shown; nothing of it is shown`, []string{refreshTokenValue}},
		"a client Secret":            {"login-client", `error: Secret team-ready/login-client is not a token Secret of cd-credentials-operator: it holds the client secret of CDCredential login, which is never shown; nothing of it is shown`, []string{clientSecretValue}},
		"an unrelated Secret":        {"unrelated", `error: Secret team-ready/unrelated is not a token Secret of cd-credentials-operator: no CDCredential or CDUserGrant writes it (no cd.credops.io/owner label); nothing of it is shown`, []string{"unrelated-value-never-shown"}},
		"a Secret that is not there": {"nothing", `error: Secret "nothing" not found in namespace "team-ready"`, nil},
	}
	for name, tc := range refusals {
		t.Run("refuses "+name, func(t *testing.T) {
			for _, args := range [][]string{{"inspect", "secret", tc.secret}, {"inspect", "secret", tc.secret, "-o", "yaml"}} {
				r := kubectlCD(t, "", args...)
				if r.code != 1 || r.stderr != tc.want+"\n" || r.stdout != "" {
					t.Errorf("want exit 1 and %q:\n%s", tc.want, r)
				}
				assertNoneShown(t, r, tc.values...)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	fixtures(t)
	cases := map[string]struct {
		args []string
		want *regexp.Regexp
	}{
		"version asks the cluster":       {[]string{"version"}, regexp.MustCompile(`^kubectl-cd version \S+, commit \S+, go1\S+, \S+/\S+\ncluster: v1\.37\.2; API cd\.credops\.io served versions: v1alpha1 \(preferred v1alpha1\)\n$`)},
		"--client does not":              {[]string{"version", "--client"}, regexp.MustCompile(`^kubectl-cd version \S+, commit \S+, go1\S+, \S+/\S+\n$`)},
		"--version on the plugin":        {[]string{"--version"}, regexp.MustCompile(`^kubectl-cd version \S+, commit \S+, go1\S+, \S+/\S+\n$`)},
		"an unreachable cluster is said": {[]string{"version", "--server", "https://127.0.0.1:1", "--request-timeout", "2s"}, regexp.MustCompile(`\ncluster: unreachable \(.+\)\n$`)},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := kubectlCD(t, "", tc.args...)
			if r.code != 0 || !tc.want.MatchString(r.stdout) {
				t.Errorf("want %s:\n%s", tc.want, r)
			}
		})
	}
}

func TestCompletion(t *testing.T) {
	fixtures(t)
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		t.Run("a "+shell+" script", func(t *testing.T) {
			r := kubectlCD(t, "", "completion", shell)
			if r.code != 0 || !strings.Contains(r.stdout, "kubectl-cd") {
				t.Errorf("%.300s", r)
			}
		})
	}
	// kubectl 1.26+ runs kubectl_complete-cd for `kubectl cd <TAB>`.
	cases := map[string]struct {
		args []string
		want []string
	}{
		"subcommands":                      {[]string{""}, []string{"authorize", "inspect", "reauthorize", "status", "version"}},
		"names in the context's namespace": {[]string{"status", ""}, []string{"acme", "login"}},
		"kind/name forms":                  {[]string{"status", "cdusergrant/"}, []string{"cdcredential/login", "cdusergrant/acme"}},
		"grants of another context":        {[]string{"--context", "waiting", "authorize", ""}, []string{"globex"}},
		"contexts from the kubeconfig":     {[]string{"status", "--context", ""}, []string{"ready", "waiting"}},
		"only output Secrets to inspect":   {[]string{"inspect", "secret", ""}, []string{"acme-token"}},
		"namespaces from the cluster":      {[]string{"status", "-n", ""}, []string{"team-ready", "team-waiting"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := runExe(t, helperLink, "", tc.args...)
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			if r.code != 0 || len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], ":") {
				t.Fatalf("%s", r)
			}
			got := map[string]bool{}
			for _, l := range lines[:len(lines)-1] {
				got[strings.SplitN(l, "\t", 2)[0]] = true
			}
			for _, w := range tc.want {
				if !got[w] {
					t.Errorf("no %q among %v", w, lines)
				}
			}
			if name == "only output Secrets to inspect" && (got["acme-refresh"] || got["login-client"]) {
				t.Errorf("completion offers Secrets that are not outputs: %v", lines)
			}
		})
	}
}

// readOpened returns what the fake xdg-open was asked to open.
func readOpened(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
