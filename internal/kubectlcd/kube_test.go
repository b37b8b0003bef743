package kubectlcd

import (
	"errors"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
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
