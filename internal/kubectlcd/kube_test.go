package kubectlcd

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestExplainAPIError(t *testing.T) {
	grants := schema.GroupResource{Group: "cd.credops.io", Resource: "cdusergrants"}
	cases := map[string]struct {
		err  error
		want string
	}{
		"the API is not installed": {
			apierrors.NewGenericServerResponse(404, "get", grants, "acme", "", 0, true),
			"reading CDUserGrant acme: the cd.credops.io API is not installed in this cluster (is cd-credentials-operator installed?)",
		},
		"the object is not there": {
			apierrors.NewNotFound(grants, "acme"),
			`reading CDUserGrant acme: cdusergrants.cd.credops.io "acme" not found`,
		},
		"anything else keeps the server's words": {
			errors.New("connection refused"),
			"reading CDUserGrant acme: connection refused",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := explainAPIError(tc.err, "reading CDUserGrant acme").Error(); !strings.HasPrefix(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// A cluster without the operator's CRDs answers every cd.credops.io path with the bare
// 404 the API server gives for a group it does not serve. Every command must say the API
// is missing: "CDUserGrant not found" sends the person looking for a grant that cannot
// exist.
func TestEveryCommandNamesTheMissingAPIOnAClusterWithoutTheCRDs(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(http.NotFound))
	defer srv.Close()
	for _, args := range [][]string{
		{"status", "acme"},
		{"authorize", "acme", "--timeout", "2s"},
		{"reauthorize", "acme", "--yes", "--timeout", "2s"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			env := Env{Streams: genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, Clock: clocktesting.NewFakeClock(time.Now())}
			code := Main(append([]string{"kubectl-cd", "--server", srv.URL, "-n", "team-a"}, args...), env)
			if code != 1 || !strings.Contains(errOut.String(), "the cd.credops.io API is not installed") {
				t.Errorf("exit %d, stderr %q; want exit 1 naming the missing API", code, errOut.String())
			}
		})
	}
}
