package install

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
	"sigs.k8s.io/yaml"
)

// fluxHealthChecks are the healthCheckExprs entries of docs/gitops/flux-kustomization.yaml.
type fluxHealthChecks struct {
	Spec struct {
		HealthCheckExprs []struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Failed     string `json:"failed"`
			Current    string `json:"current"`
		} `json:"healthCheckExprs"`
	} `json:"spec"`
}

// fluxStatus is what Flux's kustomize-controller computes from healthCheckExprs
// (github.com/fluxcd/pkg/runtime/cel StatusEvaluator, RFC 0009): status.observedGeneration
// present and != metadata.generation → InProgress; then the first of inProgress, failed,
// current that is true; else InProgress. The expressions are parsed, not compiled, in
// Flux's environment, with the object's top-level fields as variables; an evaluation
// error is reported, and the CR is not healthy.
func fluxStatus(t *testing.T, failed, current string, obj map[string]any) string {
	t.Helper()
	if og, ok := nested(obj, "status", "observedGeneration"); ok && og != nested1(obj, "metadata", "generation") {
		return "InProgress"
	}
	env, err := cel.NewEnv(cel.HomogeneousAggregateLiterals(), cel.EagerlyValidateDeclarations(true), cel.DefaultUTCTimeZone(true),
		cel.CrossTypeNumericComparisons(true), cel.OptionalTypes(), ext.Strings(), ext.Sets(), ext.Encoders())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []struct{ expr, status string }{{failed, "Failed"}, {current, "Current"}} {
		ast, iss := env.Parse(e.expr)
		if iss.Err() != nil {
			t.Fatalf("%q: %v", e.expr, iss.Err())
		}
		prg, err := env.Program(ast)
		if err != nil {
			t.Fatal(err)
		}
		val, _, err := prg.ContextEval(context.Background(), obj)
		if err != nil {
			return "Error"
		}
		if b, ok := val.(types.Bool); !ok {
			t.Fatalf("%q gives %v, not a bool", e.expr, val)
		} else if b {
			return e.status
		}
	}
	return "InProgress"
}

func nested(obj map[string]any, path ...string) (any, bool) {
	var cur any = obj
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func nested1(obj map[string]any, path ...string) any { v, _ := nested(obj, path...); return v }

// TestTheShippedFluxHealthCheckWaitsForATokenOfTheCurrentGeneration: a CR has no status
// until the operator's first pass, and none at all while no manager selects it; kstatus,
// Flux's default, reads that as Current, so `wait: true` alone passes before any token
// exists. The healthCheckExprs shipped in docs/gitops (and quoted in the README) count a
// CR healthy only on Ready=True for its current generation, and failed on Stalled=True.
func TestTheShippedFluxHealthCheckWaitsForATokenOfTheCurrentGeneration(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "docs/gitops/flux-kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k fluxHealthChecks
	if err := yaml.Unmarshal(raw, &k); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	cond := func(typ, status string, og int64) map[string]any {
		return map[string]any{"type": typ, "status": status, "observedGeneration": og, "reason": "R", "message": "m"}
	}
	obj := func(status map[string]any) map[string]any {
		o := map[string]any{"apiVersion": "cd.credops.io/v1alpha1", "metadata": map[string]any{"name": "x", "generation": int64(2)}, "spec": map[string]any{}}
		if status != nil {
			o["status"] = status
		}
		return o
	}
	cases := []struct {
		name string
		obj  map[string]any
		want []string // any of
	}{
		{"no status (the operator has not acted, or no manager selects the CR)", obj(nil), []string{"Error", "InProgress"}},
		{"Ready=True for this generation", obj(map[string]any{"observedGeneration": int64(2), "conditions": []any{cond("Ready", "True", 2), cond("FlowMisuse", "False", 2)}}), []string{"Current"}},
		{"an edit whose token waits: Ready=True for the previous generation, Reconciling=True", obj(map[string]any{"observedGeneration": int64(2), "conditions": []any{cond("Ready", "True", 1), cond("Reconciling", "True", 2)}}), []string{"InProgress"}},
		{"an edit not seen yet", obj(map[string]any{"observedGeneration": int64(1), "conditions": []any{cond("Ready", "True", 1)}}), []string{"InProgress"}},
		{"waiting on a Secret or a customer (Ready=False)", obj(map[string]any{"observedGeneration": int64(2), "conditions": []any{cond("Ready", "False", 2)}}), []string{"InProgress"}},
		{"a terminal error", obj(map[string]any{"observedGeneration": int64(2), "conditions": []any{cond("Ready", "False", 2), cond("Stalled", "True", 2)}}), []string{"Failed"}},
	}
	for _, e := range k.Spec.HealthCheckExprs {
		kinds[e.Kind] = true
		if e.APIVersion != "cd.credops.io/v1alpha1" {
			t.Errorf("%s: apiVersion %q", e.Kind, e.APIVersion)
		}
		for _, expr := range []string{e.Failed, e.Current} {
			if !strings.Contains(string(readme), expr) {
				t.Errorf("README.md does not quote the shipped %s expression %q", e.Kind, expr)
			}
		}
		for _, tc := range cases {
			got := fluxStatus(t, e.Failed, e.Current, tc.obj)
			ok := false
			for _, w := range tc.want {
				ok = ok || got == w
			}
			if !ok {
				t.Errorf("%s, %s: Flux computes %s, want %s", e.Kind, tc.name, got, strings.Join(tc.want, " or "))
			}
		}
	}
	if !kinds["CDCredential"] || !kinds["CDUserGrant"] {
		t.Errorf("healthCheckExprs cover %v, want CDCredential and CDUserGrant", kinds)
	}
}

// TestTheReadmeQuotesTheShippedArgoCDHealthCheck: the Lua health check of
// docs/gitops/argocd-cm.yaml covers both kinds with one script, and the README shows that
// script. (Argo CD runs it in its own Lua VM; no Lua engine is a dependency here.)
func TestTheReadmeQuotesTheShippedArgoCDHealthCheck(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "docs/gitops/argocd-cm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		t.Fatal(err)
	}
	cred, grant := cm.Data["resource.customizations.health.cd.credops.io_CDCredential"], cm.Data["resource.customizations.health.cd.credops.io_CDUserGrant"]
	if cred == "" || cred != grant {
		t.Fatalf("argocd-cm health checks: CDCredential %q, CDUserGrant %q; want one script for both", cred, grant)
	}
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(cred), "\n") {
		if !strings.Contains(string(readme), line) {
			t.Errorf("README.md lacks the line %q of the shipped Argo CD health check", line)
		}
	}
	for _, want := range []string{`c.observedGeneration == obj.metadata.generation`, `"Degraded"`, `obj.status == nil`} {
		if !strings.Contains(cred, want) {
			t.Errorf("the Argo CD health check lacks %s", want)
		}
	}
}
