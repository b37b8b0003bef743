// Package install tests what a platform team installs: the Helm chart, dist/install.yaml,
// the kustomize overlays and the container image. The hardened install test applies the
// chart and the manifest to a real API server with the admission plugins and RBAC of a
// hardened cluster, runs the real manager binary as the shipped ServiceAccount, and fails
// on any request the API server forbids it.
package install

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// repoRoot is the repository, two levels up from this package.
var repoRoot = func() string {
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return abs
}()

const chartDir = "charts/cd-credentials-operator"

// allFeaturesValues turns every option of the chart on.
const allFeaturesValues = chartDir + "/ci/all-features-values.yaml"

var (
	buildMu    sync.Mutex
	toolsBuilt = map[string]string{}
)

// tool returns the path of a pinned tool of hack/tools: $envVar when set (make test
// passes the binaries it built into ./bin), else it is built from hack/tools into a
// per-run folder (the Go build cache makes that quick after the first time).
func tool(t *testing.T, envVar, pkg string) string {
	t.Helper()
	if p := os.Getenv(envVar); p != "" {
		return p
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := toolsBuilt[pkg]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "install-test-tools-")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = filepath.Join(repoRoot, "hack", "tools")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s from hack/tools (set %s to use a built one): %v\n%s", pkg, envVar, err, b)
	}
	toolsBuilt[pkg] = out
	return out
}

func helm(t *testing.T) string { return tool(t, "HELM", "helm.sh/helm/v4/cmd/helm") }

func kustomize(t *testing.T) string {
	return tool(t, "KUSTOMIZE", "sigs.k8s.io/kustomize/kustomize/v5")
}

// run runs a command in the repository and returns its stdout; it fails the test with
// stderr when the command fails.
func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Dir = repoRoot
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// moduleDir is the folder of a module version in the module cache, downloaded through
// the Go module proxy (and checked against the checksum database) when missing. It runs
// outside this module so that nothing here records the module as a dependency.
func moduleDir(t *testing.T, module, version string) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", module+"@"+version)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GO111MODULE=on", "GOFLAGS=-mod=mod")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download %s@%s: %v\n%s", module, version, err, out)
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(out, &info); err != nil || info.Dir == "" {
		t.Fatalf("go mod download %s@%s: %s %v", module, version, info.Error, err)
	}
	return info.Dir
}
