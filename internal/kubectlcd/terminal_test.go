package kubectlcd

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	clocktesting "k8s.io/utils/clock/testing"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// serve answers GETs of the paths in objs with their JSON (as PartialObjectMetadata
// when asked for it), and NotFound otherwise.
func serve(t *testing.T, objs map[string]any) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		obj, ok := objs[r.URL.Path]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"not found"}`))
			return
		}
		body, _ := json.Marshal(obj)
		if strings.Contains(r.Header.Get("Accept"), "as=PartialObjectMetadata") {
			var m metav1.PartialObjectMetadata
			_ = json.Unmarshal(body, &m)
			m.APIVersion, m.Kind = "meta.k8s.io/v1", "PartialObjectMetadata"
			body, _ = json.Marshal(m)
		}
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// runAgainst runs the plugin against server and returns its stdout.
func runAgainst(t *testing.T, server string, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	env := Env{Streams: genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, Clock: clocktesting.NewFakeClock(now)}
	if code := Main(append([]string{"kubectl-cd", "--server", server, "-n", "team-a"}, args...), env); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	return out.String()
}

// Whoever may edit a CDUserGrant (the aggregated edit role) writes its annotations, and
// a customer may edit claims their identity server puts in tokens (a name). The text
// views showed them as they were: terminal control sequences in them rewrote the lines
// above on the screen of whoever ran the plugin (hiding "Ready False"), set its title,
// or wrote to its clipboard (OSC 52). They are shown escaped.
func TestTheTextViewsWriteNoTerminalControlSequences(t *testing.T) {
	lure := "\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b[2K\r\x1b[1A\x1b[2KReady:\tTrue \u202e(TokenIssued)"
	g := &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Name: "acme", Namespace: "team-a", Annotations: map[string]string{cdv1.ReauthorizeAnnotation: lure}}}
	g.APIVersion, g.Kind = cdv1.GroupVersion.String(), grantKind
	g.Spec.CredentialRef.Name = "cd"
	g.Status.Conditions = []metav1.Condition{{Type: cdv1.ReadyCondition, Status: metav1.ConditionFalse, Reason: cdv1.RefreshTokenRejectedReason, Message: "m", LastTransitionTime: metav1.NewTime(now)}}

	s := outputSecret(signedToken(t, jwt.MapClaims{"sub": "x", "name": "Bob\x1b]0;owned\x07\x1b[1A\x1b[2K"}))
	s.APIVersion, s.Kind = "v1", "Secret"
	s.Labels = map[string]string{cdv1.SecretTypeLabel: cdv1.SecretTypeAccessToken, cdv1.OwnerLabel: grantKind + ".acme"}
	s.Annotations = map[string]string{}
	server := serve(t, map[string]any{
		"/apis/cd.credops.io/v1alpha1/namespaces/team-a/cdusergrants/acme": g,
		"/api/v1/namespaces/team-a/secrets/acme-token":                     s,
	})
	status := runAgainst(t, server, "status", "acme")
	if strings.ContainsAny(status, "\x1b\x07\r\u202e") || !strings.Contains(status, `\u001b]52;c;`) {
		t.Errorf("status wrote the annotation's control characters, or did not show them escaped: %q", status)
	}
	inspect := runAgainst(t, server, "inspect", "secret", "acme-token")
	if strings.ContainsAny(inspect, "\x1b\x07") || !strings.Contains(inspect, `Bob\u001b]0;owned`) {
		t.Errorf("inspect secret wrote a claim's control characters, or did not show them escaped: %q", inspect)
	}
}

// A namespace's RBAC may let a platform engineer read CDUserGrants and not
// CDCredentials. `status NAME` looks a bare name up in both kinds, and `status` lists
// both: the forbidden kind failed the whole command, though the grant was readable. What
// is readable is shown, and what was not is said on stderr.
func TestStatusShowsWhatRBACLetsItRead(t *testing.T) {
	g := &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Name: "acme", Namespace: "team-a"}}
	g.APIVersion, g.Kind = cdv1.GroupVersion.String(), grantKind
	g.Spec.CredentialRef.Name = "cd"
	list := map[string]any{"apiVersion": cdv1.GroupVersion.String(), "kind": "CDUserGrantList", "metadata": map[string]any{}, "items": []any{g}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.Contains(r.URL.Path, "/cdcredentials"):
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,"details":{"group":"cd.credops.io","kind":"cdcredentials"},"message":"cdcredentials.cd.credops.io is forbidden: User \"eng\" cannot get resource \"cdcredentials\""}`))
		case strings.HasSuffix(r.URL.Path, "/cdusergrants/acme"):
			_ = json.NewEncoder(w).Encode(g)
		case strings.HasSuffix(r.URL.Path, "/cdusergrants"):
			_ = json.NewEncoder(w).Encode(list)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	for _, args := range [][]string{{"status", "acme"}, {"status"}} {
		var out, errOut bytes.Buffer
		env := Env{Streams: genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, Clock: clocktesting.NewFakeClock(now)}
		code := Main(append([]string{"kubectl-cd", "--server", srv.URL, "-n", "team-a"}, args...), env)
		if code != 0 || !strings.Contains(out.String(), "acme") || !strings.Contains(errOut.String(), "forbidden") {
			t.Errorf("kubectl cd %s: exit %d, stdout %q, stderr %q; want the grant shown and the forbidden kind said", strings.Join(args, " "), code, out.String(), errOut.String())
		}
	}
}
