package onboarding

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/log"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// logLines collects what a logger says, one line per call.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) add(prefix, args string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, prefix+" "+args)
}

func (l *logLines) saying(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var found []string
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			found = append(found, line)
		}
	}
	return found
}

// serveLogged serves the identity server's redirect back (query q) with a request whose
// context carries a logger that writes to lines.
func (o *onboarding) serveLogged(q url.Values, lines *logLines) *httptest.ResponseRecorder {
	logger := funcr.New(lines.add, funcr.Options{})
	req := httptest.NewRequest(http.MethodGet, "/callback?"+q.Encode(), nil)
	req = req.WithContext(log.IntoContext(context.Background(), logger))
	rec := httptest.NewRecorder()
	o.cb.ServeHTTP(rec, req)
	return rec
}

// The callback's status write is tested against the grant's UID (and, for a grant read
// without a status, its resourceVersion), and a failed test comes back Invalid: the
// callback reads the grant again and judges the write anew. But Invalid is also how the
// API server refuses what a write says (the status schema, a ValidatingAdmissionPolicy
// on the status subresource), and a grant read back unchanged, at the version the write
// was made for, says that no test failed: the same write is refused the same way. It
// was sent three times, with a read of the grant after each, and then dropped without a
// word in the log, so nothing told the platform team why a login's outcome never showed.
// It is sent once and the refusal is logged.
func TestAStatusWriteRefusedForWhatItSaysIsSentOnceAndLogged(t *testing.T) {
	now := time.Date(2026, 12, 2, 2, 0, 0, 0, time.UTC)
	cases := map[string]func(o *onboarding, state string) url.Values{
		"a denied login (a resourceVersion-guarded merge patch)": func(_ *onboarding, state string) url.Values {
			return url.Values{"state": {state}, "error": {"access_denied"}, "error_description": {"no"}}
		},
		"a login that stored its refresh token (a UID-tested JSON patch)": func(_ *onboarding, state string) url.Values {
			return url.Values{"state": {state}, "code": {"code-A"}}
		},
	}
	for name, query := range cases {
		t.Run(name, func(t *testing.T) {
			issuer := &countingIssuer{answer: func(string, int) (*tokenclient.Token, error) {
				return &tokenclient.Token{AccessToken: "at", TokenType: "Bearer", RefreshToken: "rt-new-login", Scopes: []string{"marketplace", "offline_access"}}, nil
			}}
			var writes atomic.Int32
			funcs := &interceptor.Funcs{
				SubResourcePatch: func(_ context.Context, _ client.Client, _ string, obj client.Object, _ client.Patch, _ ...client.SubResourcePatchOption) error {
					writes.Add(1)
					return apierrors.NewInvalid(cdv1.GroupVersion.WithKind("CDUserGrant").GroupKind(), obj.GetName(), field.ErrorList{
						field.Invalid(field.NewPath("status", "lastAuthorization", "message"), "…", "denied by ValidatingAdmissionPolicy 'status-words'"),
					})
				},
			}
			o := newOnboarding(t, now, issuer, funcs)
			var lines logLines
			o.serveLogged(query(o, o.link()), &lines)
			if n := writes.Load(); n != 1 {
				t.Errorf("a status write refused for what it says was sent %d times, want 1: sent again, it is refused alike", n)
			}
			if logged := lines.saying("Recording the authorization outcome failed"); len(logged) != 1 {
				t.Errorf("logged %q, want the refusal said once (all lines: %q)", logged, lines.lines)
			}
		})
	}
}
