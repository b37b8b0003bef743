package sbom

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/google/go-cmp/cmp"
	"github.com/xeipuuv/gojsonschema"
)

// buildInfo is what `go version -m` prints for a -trimpath linux/arm64 build of
// cmd/manager: no VCS stamp, so the main module is (devel).
const buildInfo = `go	go1.26.8 X:nodwarf5
path	github.com/credops/cd-credentials-operator/cmd/manager
mod	github.com/credops/cd-credentials-operator	(devel)	
dep	github.com/go-logr/logr	v1.4.4	h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
dep	github.com/evanphx/json-patch	v4.12.0+incompatible	h1:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=
dep	example.com/forked	v1.0.0	h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
=>	example.com/fork	v1.0.1	h1:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=
build	-buildmode=exe
build	-compiler=gc
build	-ldflags="-s -w -X github.com/credops/cd-credentials-operator/internal/version.Version=v1.2.3"
build	-trimpath=true
build	CGO_ENABLED=0
build	GOARCH=arm64
build	GOOS=linux
`

// parse reads build information as `go version -m` prints it. ParseBuildInfo leaves
// GoVersion out (it belongs to the binary, not the text), so the go line sets it here.
func parse(t *testing.T, text string) *debug.BuildInfo {
	t.Helper()
	info, err := debug.ParseBuildInfo(text)
	if err != nil {
		t.Fatal(err)
	}
	goLine, _, _ := strings.Cut(text, "\n")
	info.GoVersion = strings.TrimPrefix(goLine, "go\t")
	return info
}

func TestFromBuildInfo(t *testing.T) {
	bom, err := FromBuildInfo(parse(t, buildInfo), Main{Version: "v1.2.3", Licenses: "Apache-2.0", Source: "https://github.com/credops/cd-credentials-operator", Created: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	const mainPURL = "pkg:golang/github.com/credops/cd-credentials-operator@v1.2.3?goarch=arm64&goos=linux&type=module#cmd/manager"
	sha := func(hex string) *[]cdx.Hash { return &[]cdx.Hash{{Algorithm: cdx.HashAlgoSHA256, Value: hex}} }
	const zeros = "0000000000000000000000000000000000000000000000000000000000000000"
	const counting = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20"
	for _, tc := range []struct {
		name string
		got  any
		want any
	}{
		{"the main component is the stamped version, not (devel), for the platform and package", *bom.Metadata.Component, cdx.Component{
			BOMRef: mainPURL, Type: cdx.ComponentTypeApplication, Name: "github.com/credops/cd-credentials-operator", Version: "v1.2.3", PackageURL: mainPURL,
			Licenses:           &cdx.Licenses{{Expression: "Apache-2.0"}},
			ExternalReferences: &[]cdx.ExternalReference{{Type: cdx.ERTypeVCS, URL: "https://github.com/credops/cd-credentials-operator"}},
		}},
		{"each module is a required library with its go.sum hash as SHA-256; a replaced one is its replacement; stdlib has the bare Go version", *bom.Components, []cdx.Component{
			{BOMRef: "pkg:golang/github.com/go-logr/logr@v1.4.4?type=module", Type: cdx.ComponentTypeLibrary, Name: "github.com/go-logr/logr", Version: "v1.4.4", Scope: cdx.ScopeRequired, PackageURL: "pkg:golang/github.com/go-logr/logr@v1.4.4?type=module", Hashes: sha(zeros)},
			{BOMRef: "pkg:golang/github.com/evanphx/json-patch@v4.12.0+incompatible?type=module", Type: cdx.ComponentTypeLibrary, Name: "github.com/evanphx/json-patch", Version: "v4.12.0+incompatible", Scope: cdx.ScopeRequired, PackageURL: "pkg:golang/github.com/evanphx/json-patch@v4.12.0+incompatible?type=module", Hashes: sha(counting)},
			{BOMRef: "pkg:golang/example.com/fork@v1.0.1?type=module", Type: cdx.ComponentTypeLibrary, Name: "example.com/fork", Version: "v1.0.1", Scope: cdx.ScopeRequired, PackageURL: "pkg:golang/example.com/fork@v1.0.1?type=module", Hashes: sha(counting)},
			{BOMRef: "pkg:golang/stdlib@1.26.8", Type: cdx.ComponentTypeLibrary, Name: "stdlib", Version: "1.26.8", Scope: cdx.ScopeRequired, PackageURL: "pkg:golang/stdlib@1.26.8"},
		}},
		{"the toolchain and every build setting are metadata properties, sorted", *bom.Metadata.Properties, []cdx.Property{
			{Name: "cdx:gomod:build:env:CGO_ENABLED", Value: "0"},
			{Name: "cdx:gomod:build:env:GOARCH", Value: "arm64"},
			{Name: "cdx:gomod:build:env:GOOS", Value: "linux"},
			{Name: "cdx:gomod:build:env:GOVERSION", Value: "go1.26.8 X:nodwarf5"},
			{Name: "credops:go:build:-buildmode", Value: "exe"},
			{Name: "credops:go:build:-compiler", Value: "gc"},
			{Name: "credops:go:build:-ldflags", Value: "-s -w -X github.com/credops/cd-credentials-operator/internal/version.Version=v1.2.3"},
			{Name: "credops:go:build:-trimpath", Value: "true"},
			{Name: "credops:go:build:CGO_ENABLED", Value: "0"},
			{Name: "credops:go:build:GOARCH", Value: "arm64"},
			{Name: "credops:go:build:GOOS", Value: "linux"},
		}},
		{"the main component depends on every component", *bom.Dependencies, []cdx.Dependency{{Ref: mainPURL, Dependencies: &[]string{
			"pkg:golang/github.com/go-logr/logr@v1.4.4?type=module",
			"pkg:golang/github.com/evanphx/json-patch@v4.12.0+incompatible?type=module",
			"pkg:golang/example.com/fork@v1.0.1?type=module",
			"pkg:golang/stdlib@1.26.8",
		}}}},
		{"the document is dated by the build, not the clock", bom.Metadata.Timestamp, "2026-11-01T00:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestStdlibComponent(t *testing.T) {
	for _, tc := range []struct {
		name, goVersion, want string
	}{
		{"a release is its bare version", "go1.26.8", "1.26.8"},
		{"experiments after the version are dropped", "go1.26.8 X:nodwarf5", "1.26.8"},
		{"a development toolchain has no release to match", "devel go1.27-abcdef Tue Nov 3", ""},
		{"an empty version gives nothing", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ok := stdlibComponent(tc.goVersion)
			if got := c.Version; got != tc.want || ok != (tc.want != "") {
				t.Errorf("stdlibComponent(%q) = %q, %v; want %q", tc.goVersion, got, ok, tc.want)
			}
		})
	}
}

// TestReadFileDescribesARealBinary reads this test binary and checks the JSON
// round-trips through cyclonedx-go's decoder. (A test binary records no dependencies;
// test/install checks them on the manager's binary.)
func TestReadFileDescribesARealBinary(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := ReadFile(exe, Main{Version: "v9.9.9"})
	if err != nil {
		t.Fatal(err)
	}
	var bom cdx.BOM
	if err := cdx.NewBOMDecoder(bytes.NewReader(data), cdx.BOMFileFormatJSON).Decode(&bom); err != nil {
		t.Fatalf("not CycloneDX JSON: %v\n%s", err, data)
	}
	if bom.SpecVersion != cdx.SpecVersion1_6 || bom.Metadata.Component.Name != "github.com/credops/cd-credentials-operator" || bom.Metadata.Component.Version != "v9.9.9" {
		t.Errorf("spec %s, main component %s %s; want 1.6 and the operator's module at v9.9.9", bom.SpecVersion, bom.Metadata.Component.Name, bom.Metadata.Component.Version)
	}
	versions := map[string]string{}
	for _, c := range *bom.Components {
		versions[c.Name] = c.Version
	}
	if want, _, _ := strings.Cut(strings.TrimPrefix(runtime.Version(), "go"), " "); versions["stdlib"] != want {
		t.Errorf("stdlib %q, want %s", versions["stdlib"], want)
	}
}

// TestTheJSONIsValidCycloneDX checks the encoded document against the CycloneDX 1.6 JSON
// schema that cyclonedx-go ships (the one its own tests validate with), so a scanner
// that validates before reading accepts it.
func TestTheJSONIsValidCycloneDX(t *testing.T) {
	bom, err := FromBuildInfo(parse(t, buildInfo), Main{Version: "v1.2.3", Licenses: "Apache-2.0", Source: "https://github.com/credops/cd-credentials-operator", Created: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	data, err := Encode(bom)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/CycloneDX/cyclonedx-go").Output()
	if err != nil {
		t.Fatalf("finding cyclonedx-go's schemas: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "schema")
	file := func(name string) gojsonschema.JSONLoader {
		return gojsonschema.NewReferenceLoader("file://" + filepath.ToSlash(filepath.Join(dir, name)))
	}
	// The schema refers to its SPDX and JSF parts by their cyclonedx.org $id; the
	// copies beside it stand in, so the test needs no network.
	loader := gojsonschema.NewSchemaLoader()
	for _, part := range []string{"spdx.schema.json", "jsf-0.82.schemax.json"} {
		if err := loader.AddSchemas(file(part)); err != nil {
			t.Fatal(err)
		}
	}
	schema, err := loader.Compile(file("bom-1.6.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := schema.Validate(gojsonschema.NewBytesLoader(data))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range res.Errors() {
		t.Errorf("not valid CycloneDX 1.6: %s", e)
	}
}
