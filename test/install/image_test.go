package install

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/buildinfo"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/credops/cd-credentials-operator/internal/ociimage"
	"github.com/credops/cd-credentials-operator/internal/sbom"
)

// imageFile is one entry of an image's flattened filesystem.
type imageFile struct {
	mode     int64
	uid, gid int
	typeflag byte
	data     []byte
}

// flatten reads the filesystem an image's layers make, as a container runtime would.
func flatten(t *testing.T, img v1.Image) map[string]imageFile {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	files := map[string]imageFile{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[path.Clean("/"+h.Name)] = imageFile{mode: h.Mode, uid: h.Uid, gid: h.Gid, typeflag: h.Typeflag, data: data}
	}
}

// shells are the interpreters an attacker with code execution would look for.
var shells = []string{"sh", "bash", "ash", "dash", "zsh", "busybox", "toybox"}

// TestImage builds the image as `make image` does (no daemon, no registry), then opens
// the OCI layout and the docker tarball as a consumer would.
func TestImage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	const version, commit = "v0.0.0-imagetest", "0123456789abcdef"
	platforms, err := ociimage.ParsePlatforms("linux/amd64,linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	res, err := ociimage.Build(ctx, ociimage.Options{
		ModuleDir: repoRoot, Package: "./cmd/manager", Platforms: platforms,
		Version: version, Commit: commit,
		Source: "https://github.com/credops/cd-credentials-operator", Licenses: "Apache-2.0",
		LicenseFile: filepath.Join(repoRoot, "LICENSE"), Title: "cd-credentials-operator",
		Created: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), Stderr: os.Stderr,
	})
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	layoutDir := filepath.Join(out, "image")
	if err := ociimage.WriteLayout(layoutDir, version, res); err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(out, "image-linux-amd64.tar")
	if err := ociimage.WriteTarball(tarPath, "ghcr.io/credops/cd-credentials-operator:"+version, res.Images["linux/amd64"]); err != nil {
		t.Fatal(err)
	}

	index := openLayout(t, layoutDir, version)
	manifest, err := index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range manifest.Manifests {
		got = append(got, d.Platform.String())
	}
	if diff := cmp.Diff([]string{"linux/amd64", "linux/arm64"}, got); diff != "" {
		t.Fatalf("platforms (-want +got):\n%s", diff)
	}
	for _, d := range manifest.Manifests {
		t.Run(d.Platform.String(), func(t *testing.T) {
			img, err := index.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			checkConfig(t, img, *d.Platform, version, commit)
			files := flatten(t, img)
			checkFiles(t, files)
			if d.Platform.Architecture == "amd64" {
				checkVersionRuns(t, files["/manager"].data, version, commit)
			}
			logSize(t, img)
			t.Run("its SBOM is attached as a referrer", func(t *testing.T) {
				bom := sbomReferrer(t, layoutDir, d)
				checkSBOM(t, bom, files["/manager"].data, *d.Platform, version)
			})
		})
	}

	t.Run("the docker tarball is the amd64 image", func(t *testing.T) {
		img, err := tarball.ImageFromPath(tarPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkConfig(t, img, v1.Platform{OS: "linux", Architecture: "amd64"}, version, commit)
		if diff := cmp.Diff(layerDigests(t, res.Images["linux/amd64"]), layerDigests(t, img)); diff != "" {
			t.Errorf("layers (-layout's amd64 image +tarball):\n%s", diff)
		}
	})
}

// openLayout opens an OCI layout and returns the image index its index.json names with
// ref (org.opencontainers.image.ref.name). Any other entry must be an SBOM artifact.
func openLayout(t *testing.T, dir, ref string) v1.ImageIndex {
	t.Helper()
	top, err := layoutIndex(t, dir).IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var named []v1.Descriptor
	for _, d := range top.Manifests {
		switch {
		case d.Annotations[ociimage.LabelRefName] != "":
			named = append(named, d)
		case d.ArtifactType != sbom.MediaType:
			t.Errorf("index.json lists %s (%s, artifactType %q): neither the image nor an SBOM", d.Digest, d.MediaType, d.ArtifactType)
		}
	}
	if len(named) != 1 || named[0].MediaType != types.OCIImageIndex || named[0].Annotations[ociimage.LabelRefName] != ref {
		t.Fatalf("index.json names %+v: want one OCI image index named %q", named, ref)
	}
	index, err := layoutIndex(t, dir).ImageIndex(named[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return index
}

// layoutIndex is the layout's index.json.
func layoutIndex(t *testing.T, dir string) v1.ImageIndex {
	t.Helper()
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	return top
}

// sbomReferrer finds, as `oras discover --oci-layout` does, the manifests in index.json
// whose subject is the platform manifest, checks that exactly one is a CycloneDX artifact
// of the OCI 1.1 shape (artifactType, empty config, one blob) and returns its blob.
func sbomReferrer(t *testing.T, dir string, platform v1.Descriptor) *cdx.BOM {
	t.Helper()
	top := layoutIndex(t, dir)
	m, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var found []v1.Image
	for _, d := range m.Manifests {
		if !d.MediaType.IsImage() {
			continue
		}
		img, err := top.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		mf, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		if mf.Subject == nil || mf.Subject.Digest != platform.Digest {
			continue
		}
		if d.ArtifactType != sbom.MediaType {
			t.Errorf("index.json lists the referrer with artifactType %q, want %q (what a referrers filter matches)", d.ArtifactType, sbom.MediaType)
		}
		wantSubject := v1.Descriptor{MediaType: platform.MediaType, Digest: platform.Digest, Size: platform.Size}
		if diff := cmp.Diff(wantSubject, *mf.Subject); diff != "" {
			t.Errorf("subject (-platform manifest in the index +referrer's subject):\n%s", diff)
		}
		emptyDigest, _, _ := v1.SHA256(strings.NewReader("{}"))
		if mf.ArtifactType != sbom.MediaType || mf.Config.MediaType != types.OCIEmptyJSON || mf.Config.Digest != emptyDigest || len(mf.Layers) != 1 || mf.Layers[0].MediaType != sbom.MediaType {
			t.Errorf("referrer manifest %+v: want artifactType %s, the empty config and one %s blob", mf, sbom.MediaType, sbom.MediaType)
		}
		found = append(found, img)
	}
	if len(found) != 1 {
		t.Fatalf("%d manifests in index.json have the %s manifest %s as subject, want one SBOM", len(found), platform.Platform, platform.Digest)
	}
	layers, err := found[0].Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var bom cdx.BOM
	if err := cdx.NewBOMDecoder(rc, cdx.BOMFileFormatJSON).Decode(&bom); err != nil {
		t.Fatalf("the SBOM blob is not CycloneDX JSON: %v", err)
	}
	return &bom
}

// checkSBOM: the SBOM describes the binary that is in the image. The main component is
// the operator at the built version for the platform; the components are exactly the
// modules the binary records (so controller-runtime at go.mod's version) and the
// standard library of the Go that compiled it.
func checkSBOM(t *testing.T, bom *cdx.BOM, binary []byte, platform v1.Platform, version string) {
	t.Helper()
	bi, err := buildinfo.Read(bytes.NewReader(binary))
	if err != nil {
		t.Fatal(err)
	}
	if bom.SpecVersion != cdx.SpecVersion1_6 {
		t.Errorf("spec version %s, want 1.6", bom.SpecVersion)
	}
	if bom.Metadata == nil || bom.Metadata.Component == nil {
		t.Fatal("the SBOM has no metadata.component (the binary it describes)")
	}
	main := bom.Metadata.Component
	if main.Name != "github.com/credops/cd-credentials-operator" || main.Version != version || main.Type != cdx.ComponentTypeApplication {
		t.Errorf("metadata.component is %s %s (%s), want the application github.com/credops/cd-credentials-operator %s", main.Name, main.Version, main.Type, version)
	}
	if !strings.Contains(main.PackageURL, "goarch="+platform.Architecture) || !strings.HasSuffix(main.PackageURL, "#cmd/manager") {
		t.Errorf("purl %s: want the platform's goarch and the #cmd/manager subpath", main.PackageURL)
	}

	got := map[string]string{}
	if bom.Components != nil {
		for _, c := range *bom.Components {
			got[c.Name] = c.Version
		}
	}
	goVersion := strings.TrimPrefix(bi.GoVersion, "go")
	want := map[string]string{"stdlib": goVersion}
	for _, d := range bi.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		want[d.Path] = d.Version
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("components (-modules the binary records +SBOM):\n%s", diff)
	}
	if crVersion := goModVersion(t, "sigs.k8s.io/controller-runtime"); got["sigs.k8s.io/controller-runtime"] != crVersion {
		t.Errorf("sigs.k8s.io/controller-runtime %q in the SBOM, want go.mod's %s", got["sigs.k8s.io/controller-runtime"], crVersion)
	}

	props := map[string]string{}
	if bom.Metadata.Properties != nil {
		for _, p := range *bom.Metadata.Properties {
			props[p.Name] = p.Value
		}
	}
	for name, want := range map[string]string{
		"cdx:gomod:build:env:GOVERSION":   bi.GoVersion,
		"cdx:gomod:build:env:GOOS":        platform.OS,
		"cdx:gomod:build:env:GOARCH":      platform.Architecture,
		"cdx:gomod:build:env:CGO_ENABLED": "0",
		"credops:go:build:-trimpath":      "true",
	} {
		if props[name] != want {
			t.Errorf("property %s=%q, want %q", name, props[name], want)
		}
	}
}

// goModVersion is the version of a module the build selects (go.mod's, after replace).
func goModVersion(t *testing.T, module string) string {
	t.Helper()
	cmd := exec.Command("go", "list", "-m", "-f", "{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}", module)
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", module, err)
	}
	return strings.TrimSpace(string(out))
}

func layerDigests(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Hash
	for _, l := range layers {
		d, err := l.DiffID()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// checkConfig: the platform, the nonroot user, the entrypoint and the OCI labels.
func checkConfig(t *testing.T, img v1.Image, platform v1.Platform, version, commit string) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != platform.OS || cf.Architecture != platform.Architecture {
		t.Errorf("config says %s/%s, want %s", cf.OS, cf.Architecture, platform.String())
	}
	if cf.Config.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532 (nonroot)", cf.Config.User)
	}
	if diff := cmp.Diff([]string{"/manager"}, cf.Config.Entrypoint); diff != "" {
		t.Errorf("entrypoint (-want +got):\n%s", diff)
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.source":   "https://github.com/credops/cd-credentials-operator",
		"org.opencontainers.image.version":  version,
		"org.opencontainers.image.revision": commit,
		"org.opencontainers.image.licenses": "Apache-2.0",
	} {
		if got := cf.Config.Labels[k]; got != want {
			t.Errorf("label %s=%q, want %q", k, got, want)
		}
	}

}

// checkFiles: no shell anywhere, an executable /manager nobody but root may change, the
// nonroot user and the licence.
func checkFiles(t *testing.T, files map[string]imageFile) {
	t.Helper()
	for name := range files {
		if slices.Contains(shells, path.Base(name)) {
			t.Errorf("the image holds a shell: %s", name)
		}
	}
	manager, ok := files["/manager"]
	switch {
	case !ok:
		t.Errorf("no /manager in the image")
	case manager.typeflag != tar.TypeReg || manager.mode&0o111 == 0 || manager.mode&0o022 != 0 || manager.uid != 0:
		t.Errorf("/manager: type %c mode %o uid %d; want a root-owned executable nobody else may write", manager.typeflag, manager.mode, manager.uid)
	}
	if !strings.Contains(string(files["/etc/passwd"].data), "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd does not name the nonroot user 65532:\n%s", files["/etc/passwd"].data)
	}
	if !strings.Contains(string(files["/licenses/LICENSE"].data), "Apache License") {
		t.Errorf("/licenses/LICENSE is not the Apache License")
	}
}

// checkVersionRuns runs the amd64 binary taken from the image's layers: it is static
// (no loader or libc in the image) and stamped with the version and commit.
func checkVersionRuns(t *testing.T, binary []byte, version, commit string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "manager")
	if err := os.WriteFile(bin, binary, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("/manager --version: %v\n%s", err, out)
	}
	for _, want := range []string{"manager", version, commit, "go1."} {
		if !strings.Contains(string(out), want) {
			t.Errorf("/manager --version printed %q, want %q in it", out, want)
		}
	}
}

// logSize reports the compressed size of the image (what a node pulls).
func logSize(t *testing.T, img v1.Image) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, l := range layers {
		size, err := l.Size()
		if err != nil {
			t.Fatal(err)
		}
		total += size
	}
	t.Logf("compressed layers: %.1f MiB", float64(total)/(1<<20))
}
