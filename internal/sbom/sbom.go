// Package sbom writes a CycloneDX software bill of materials for a Go binary from what the
// binary records about its own build (debug/buildinfo): the main module, every module
// linked in with its version and go.sum hash, the Go toolchain and the build settings.
//
// It reads the built binary rather than go.mod, so the SBOM lists what was compiled in
// for that platform and nothing that was only required. The names follow the conventions
// scanners match on: `pkg:golang/<module>@<version>` package URLs, and the Go standard
// library as the module `stdlib` (Go's vulnerability database, OSV, Grype and Trivy
// all use that name).
package sbom

import (
	"bytes"
	"cmp"
	"debug/buildinfo"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
)

// MediaType is the media type of the JSON documents this package writes, and the OCI
// artifactType under which registries list them as referrers.
const MediaType = "application/vnd.cyclonedx+json"

// SpecVersion is the CycloneDX version written: 1.6, the newest that the common scanners
// (Trivy, Grype, Dependency-Track behind Harbor) all read.
const SpecVersion = cdx.SpecVersion1_6

// Property names. The cdx:gomod ones are registered in the CycloneDX property taxonomy;
// the other build settings have no registered name and are kept under goBuildSetting
// with the key Go records (e.g. -ldflags, -trimpath, GOAMD64, vcs.revision).
const (
	propGOOS       = "cdx:gomod:build:env:GOOS"
	propGOARCH     = "cdx:gomod:build:env:GOARCH"
	propCGO        = "cdx:gomod:build:env:CGO_ENABLED"
	propGoVersion  = "cdx:gomod:build:env:GOVERSION"
	propBuildTag   = "cdx:gomod:build:tag"
	goBuildSetting = "credops:go:build:"
)

// stdlib is the name of the Go standard library in vulnerability databases.
const stdlib = "stdlib"

// Main describes the binary's own component: what buildinfo cannot know.
type Main struct {
	// Version is the release the build stamped (e.g. v0.2.0). A -trimpath build without
	// VCS stamping records its main module as "(devel)", so the caller says which
	// version it built; empty keeps what the binary recorded.
	Version string
	// Licenses is the SPDX expression of the main module's licence, e.g. Apache-2.0.
	Licenses string
	// Source is the repository URL.
	Source string
	// Created dates the document (the commit's time in a release, so rebuilding a commit
	// gives the same bytes).
	Created time.Time
}

// ReadFile reads the build information recorded in the Go binary at path and returns
// its SBOM as CycloneDX JSON.
func ReadFile(path string, m Main) ([]byte, error) {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the build information of %s: %w", path, err)
	}
	bom, err := FromBuildInfo(info, m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return Encode(bom)
}

// FromBuildInfo describes a binary's build information as a CycloneDX BOM: the binary's
// main module as the BOM's subject, and every linked module and the standard library as
// its required components.
func FromBuildInfo(info *debug.BuildInfo, m Main) (*cdx.BOM, error) {
	if info.Main.Path == "" {
		return nil, fmt.Errorf("the binary records no main module (built outside module mode?)")
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	main := mainComponent(info, m, settings)
	components := make([]cdx.Component, 0, len(info.Deps)+1)
	for _, dep := range info.Deps {
		components = append(components, moduleComponent(dep))
	}
	if std, ok := stdlibComponent(info.GoVersion); ok {
		components = append(components, std)
	}

	bom := cdx.NewBOM()
	bom.Metadata = &cdx.Metadata{
		Timestamp:  m.Created.UTC().Format(time.RFC3339),
		Component:  &main,
		Properties: buildProperties(info.GoVersion, settings),
	}
	bom.Components = &components
	bom.Dependencies = dependencies(main, components)
	bom.Compositions = compositions(main, components)
	return bom, nil
}

// Encode writes the BOM as indented CycloneDX JSON of SpecVersion.
func Encode(bom *cdx.BOM) ([]byte, error) {
	var buf bytes.Buffer
	enc := cdx.NewBOMEncoder(&buf, cdx.BOMFileFormatJSON).SetPretty(true)
	if err := enc.EncodeVersion(bom, SpecVersion); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// mainComponent is the application itself. Its package URL carries the platform (the
// same module built for arm64 is a different binary) and, as a subpath, the main
// package when it is not the module root (./cmd/manager).
func mainComponent(info *debug.BuildInfo, m Main, settings map[string]string) cdx.Component {
	version := info.Main.Version
	if m.Version != "" {
		version = m.Version
	}
	purl := modulePURL(info.Main.Path, version)
	qualifiers := url.Values{"type": {"module"}}
	if goos, goarch := settings["GOOS"], settings["GOARCH"]; goos != "" && goarch != "" {
		qualifiers.Set("goos", goos)
		qualifiers.Set("goarch", goarch)
	}
	purl += "?" + qualifiers.Encode()
	if sub, ok := strings.CutPrefix(info.Path, info.Main.Path+"/"); ok {
		purl += "#" + sub
	}
	c := cdx.Component{
		BOMRef:     purl,
		Type:       cdx.ComponentTypeApplication,
		Name:       info.Main.Path,
		Version:    version,
		PackageURL: purl,
	}
	if m.Licenses != "" {
		c.Licenses = &cdx.Licenses{{Expression: m.Licenses}}
	}
	if m.Source != "" {
		c.ExternalReferences = &[]cdx.ExternalReference{{Type: cdx.ERTypeVCS, URL: m.Source}}
	}
	return c
}

// moduleComponent is one linked module. A replaced module is described by its
// replacement, whose code is what the binary holds.
func moduleComponent(dep *debug.Module) cdx.Component {
	mod := dep
	if dep.Replace != nil {
		mod = dep.Replace
	}
	purl := modulePURL(mod.Path, mod.Version) + "?type=module"
	c := cdx.Component{
		BOMRef:     purl,
		Type:       cdx.ComponentTypeLibrary,
		Name:       mod.Path,
		Version:    mod.Version,
		Scope:      cdx.ScopeRequired,
		PackageURL: purl,
	}
	// go.sum's h1: is the base64 of a SHA-256 (over the module's file list); written as
	// hex SHA-256, as cyclonedx-gomod does, so it can be compared with go.sum and the
	// checksum database.
	if sum, ok := strings.CutPrefix(mod.Sum, "h1:"); ok {
		if raw, err := base64.StdEncoding.DecodeString(sum); err == nil {
			c.Hashes = &[]cdx.Hash{{Algorithm: cdx.HashAlgoSHA256, Value: hex.EncodeToString(raw)}}
		}
	}
	return c
}

// stdlibComponent is the standard library at the toolchain's version. Vulnerability
// databases list Go's own fixes under stdlib with a bare version (1.26.8, not go1.26.8),
// so a scanner of the SBOM sees them. A development toolchain has no such version.
func stdlibComponent(goVersion string) (cdx.Component, bool) {
	release, _, _ := strings.Cut(goVersion, " ")
	v, ok := strings.CutPrefix(release, "go")
	if !ok || v == "" || strings.Contains(v, "devel") {
		return cdx.Component{}, false
	}
	purl := modulePURL(stdlib, v)
	return cdx.Component{
		BOMRef:     purl,
		Type:       cdx.ComponentTypeLibrary,
		Name:       stdlib,
		Version:    v,
		Scope:      cdx.ScopeRequired,
		PackageURL: purl,
	}, true
}

// modulePURL is pkg:golang/<path>@<version>. Module paths hold only characters a package
// URL allows in a namespace; the version is escaped (+incompatible).
func modulePURL(path, version string) string {
	if version == "" {
		return "pkg:golang/" + path
	}
	return "pkg:golang/" + path + "@" + url.PathEscape(version)
}

// buildProperties records the toolchain and every build setting the binary holds, so a
// reader can tell how it was compiled (-trimpath, CGO_ENABLED=0, the -ldflags stamp).
func buildProperties(goVersion string, settings map[string]string) *[]cdx.Property {
	props := []cdx.Property{{Name: propGoVersion, Value: goVersion}}
	for key, name := range map[string]string{"GOOS": propGOOS, "GOARCH": propGOARCH, "CGO_ENABLED": propCGO} {
		if v, ok := settings[key]; ok {
			props = append(props, cdx.Property{Name: name, Value: v})
		}
	}
	if tags := settings["-tags"]; tags != "" {
		for _, tag := range strings.Split(tags, ",") {
			props = append(props, cdx.Property{Name: propBuildTag, Value: tag})
		}
	}
	for key, v := range settings {
		props = append(props, cdx.Property{Name: goBuildSetting + key, Value: v})
	}
	sortProperties(props)
	return &props
}

// sortProperties orders by name then value, so the same build gives the same bytes
// (settings come out of a map).
func sortProperties(props []cdx.Property) {
	slices.SortFunc(props, func(a, b cdx.Property) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Value, b.Value))
	})
}

// dependencies says the main module depends on every component. Build information
// lists the modules linked in but not which needs which, so the components get no entry
// of their own: in CycloneDX an empty entry would claim they depend on nothing.
func dependencies(main cdx.Component, components []cdx.Component) *[]cdx.Dependency {
	refs := make([]string, 0, len(components))
	for _, c := range components {
		refs = append(refs, c.BOMRef)
	}
	return &[]cdx.Dependency{{Ref: main.BOMRef, Dependencies: &refs}}
}

// compositions state what the SBOM knows: the main module's dependencies are complete
// (the binary lists every module it links), how those depend on each other is unknown.
func compositions(main cdx.Component, components []cdx.Component) *[]cdx.Composition {
	refs := make([]cdx.BOMReference, 0, len(components))
	for _, c := range components {
		refs = append(refs, cdx.BOMReference(c.BOMRef))
	}
	return &[]cdx.Composition{
		{Aggregate: cdx.CompositionAggregateComplete, Dependencies: &[]cdx.BOMReference{cdx.BOMReference(main.BOMRef)}},
		{Aggregate: cdx.CompositionAggregateUnknown, Dependencies: &refs},
	}
}
