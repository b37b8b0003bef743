package install

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// idleRSS is an empty manager's resident memory, as the benchmark measured it
// (docs/bench: 56–62 MiB with no CR at all).
var idleRSS = resource.MustParse("62Mi")

// A pod using more memory than it requests is among the first evicted under node
// pressure, and where limits must equal requests (GKE Autopilot without bursting) it is
// held to the request: the chart and install.yaml requested 64Mi, about what an empty
// manager uses, well under any manager with CRs. Both request at least twice the idle
// manager's, and leave the limit above the request.
func TestTheManagerRequestsMoreMemoryThanAnIdleManagerUses(t *testing.T) {
	for name, objs := range map[string]func() []*unstructured.Unstructured{
		"the chart":    func() []*unstructured.Unstructured { return helmTemplateSet(t, "cd") },
		"install.yaml": func() []*unstructured.Unstructured { return installYAML(t) },
	} {
		t.Run(name, func(t *testing.T) {
			c := deployment(t, objs()).Spec.Template.Spec.Containers[0]
			req, limit := c.Resources.Requests.Memory(), c.Resources.Limits.Memory()
			twice := idleRSS.DeepCopy()
			twice.Add(idleRSS)
			if req.Cmp(twice) < 0 {
				t.Errorf("requests.memory %s, want at least %s (twice an idle manager's %s)", req, &twice, &idleRSS)
			}
			if limit.Cmp(*req) <= 0 {
				t.Errorf("limits.memory %s, want above requests.memory %s", limit, req)
			}
		})
	}
}
