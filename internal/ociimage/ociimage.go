// Package ociimage builds the operator's container image without a container daemon or
// a registry: static Go binaries cross-compiled per platform, put on an empty ("scratch")
// base with go-containerregistry, and written as an OCI image layout (multi-arch) and a
// `docker load`-able tarball (one platform). Each platform's binary gets a CycloneDX SBOM
// (internal/sbom), attached to its image manifest in the layout as an OCI 1.1 referrer.
//
// The image holds the binary, /etc/passwd and /etc/group naming the nonroot user 65532,
// and the licence: no shell, no package manager, no CA bundle (the manager compiles CA
// roots in with golang.org/x/crypto/x509roots/fallback).
package ociimage

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/credops/cd-credentials-operator/internal/sbom"
)

// NonRoot is the user and group the image runs as (distroless's "nonroot").
const NonRoot = "65532:65532"

// VersionPackage is where -ldflags -X stamps the version and commit.
const VersionPackage = "github.com/credops/cd-credentials-operator/internal/version"

// OCI annotation and label keys (image-spec annotations.md).
const (
	LabelSource   = "org.opencontainers.image.source"
	LabelVersion  = "org.opencontainers.image.version"
	LabelRevision = "org.opencontainers.image.revision"
	LabelLicenses = "org.opencontainers.image.licenses"
	LabelTitle    = "org.opencontainers.image.title"
	LabelDesc     = "org.opencontainers.image.description"
	LabelCreated  = "org.opencontainers.image.created"
	LabelRefName  = "org.opencontainers.image.ref.name"
)

// Options describe one image build.
type Options struct {
	// ModuleDir is the Go module to build from (the repository root).
	ModuleDir string
	// Package is the main package, e.g. ./cmd/manager; its base name is the binary's
	// name and the image's entrypoint (/manager).
	Package string
	// Platforms to build, e.g. linux/amd64 and linux/arm64.
	Platforms []v1.Platform
	// Version and Commit are stamped into the binary and the labels.
	Version, Commit string
	// Source is the repository URL; Licenses an SPDX expression; LicenseFile the text
	// shipped at /licenses/LICENSE.
	Source, Licenses, LicenseFile string
	// Title and Description label the image.
	Title, Description string
	// Created is the image's creation time (the commit's, for reproducible builds).
	Created time.Time
	// Stderr receives the compiler's output.
	Stderr io.Writer
}

// Result is a built image: the multi-arch index, each platform's image and the SBOM of
// each platform's binary.
type Result struct {
	Index  v1.ImageIndex
	Images map[string]v1.Image // by "os/arch"
	SBOMs  map[string][]byte   // CycloneDX JSON, by "os/arch"
}

// Build compiles the binary for every platform and assembles the images.
func Build(ctx context.Context, o Options) (*Result, error) {
	if len(o.Platforms) == 0 {
		return nil, fmt.Errorf("no platforms to build")
	}
	base, err := baseLayer(o)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "ociimage-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	res := &Result{Images: map[string]v1.Image{}, SBOMs: map[string][]byte{}}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range o.Platforms {
		bin, err := compile(ctx, o, p, tmp)
		if err != nil {
			return nil, err
		}
		img, err := platformImage(o, p, base, bin)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.String(), err)
		}
		// Read from the binary just built, so the SBOM lists what this platform's
		// binary links and the toolchain that compiled it.
		bom, err := sbom.ReadFile(bin, sbom.Main{Version: o.Version, Licenses: o.Licenses, Source: o.Source, Created: o.Created})
		if err != nil {
			return nil, err
		}
		res.Images[p.OS+"/"+p.Architecture] = img
		res.SBOMs[p.OS+"/"+p.Architecture] = bom
		platform := p
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &platform}})
	}
	res.Index = mutate.Annotations(idx, labels(o)).(v1.ImageIndex)
	return res, nil
}

// compile builds a static, stripped, reproducible binary for one platform.
func compile(ctx context.Context, o Options, p v1.Platform, dir string) (string, error) {
	out := filepath.Join(dir, binaryName(o)+"-"+p.OS+"-"+p.Architecture)
	ldflags := fmt.Sprintf("-s -w -X %s.Version=%s -X %s.Commit=%s", VersionPackage, o.Version, VersionPackage, o.Commit)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, o.Package)
	cmd.Dir = o.ModuleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture)
	if p.Architecture == "arm" && strings.HasPrefix(p.Variant, "v") {
		cmd.Env = append(cmd.Env, "GOARM="+strings.TrimPrefix(p.Variant, "v"))
	}
	cmd.Stdout, cmd.Stderr = o.Stderr, o.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s for %s: %w", o.Package, p.String(), err)
	}
	return out, nil
}

func binaryName(o Options) string { return path.Base(filepath.ToSlash(o.Package)) }

// platformImage is scratch + the shared base layer + the binary, configured to run the
// binary as 65532 with the OCI labels.
func platformImage(o Options, p v1.Platform, base v1.Layer, binPath string) (v1.Image, error) {
	data, err := os.ReadFile(binPath)
	if err != nil {
		return nil, err
	}
	bin, err := layer(o.Created, []file{{name: binaryName(o), mode: 0o555, data: data}})
	if err != nil {
		return nil, err
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, MediaType: types.OCILayer, History: v1.History{Created: v1.Time{Time: o.Created}, CreatedBy: "ociimage: /etc/passwd, /etc/group, /licenses", Comment: "nonroot user 65532"}},
		mutate.Addendum{Layer: bin, MediaType: types.OCILayer, History: v1.History{Created: v1.Time{Time: o.Created}, CreatedBy: "go build -trimpath " + o.Package + " (CGO_ENABLED=0)"}},
	)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = v1.Time{Time: o.Created}
	cf.Author = o.Source
	cf.Config = v1.Config{
		User:       NonRoot,
		Entrypoint: []string{"/" + binaryName(o)},
		WorkingDir: "/",
		Labels:     labels(o),
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return mutate.Annotations(img, labels(o)).(v1.Image), nil
}

// labels are the OCI labels on the image config and annotations on its manifests.
func labels(o Options) map[string]string {
	l := map[string]string{
		LabelSource:   o.Source,
		LabelVersion:  o.Version,
		LabelRevision: o.Commit,
		LabelLicenses: o.Licenses,
		LabelTitle:    o.Title,
		LabelDesc:     o.Description,
		LabelCreated:  o.Created.UTC().Format(time.RFC3339),
	}
	for k, v := range l {
		if v == "" {
			delete(l, k)
		}
	}
	return l
}

// baseLayer holds what every platform shares: the nonroot user (so tools that map a
// numeric user to a name find one) and the licence text.
func baseLayer(o Options) (v1.Layer, error) {
	files := []file{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{name: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{name: "home/", mode: 0o755, dir: true},
		{name: "home/nonroot/", mode: 0o700, dir: true, uid: 65532},
		{name: "licenses/", mode: 0o755, dir: true},
	}
	if o.LicenseFile != "" {
		text, err := os.ReadFile(o.LicenseFile)
		if err != nil {
			return nil, err
		}
		files = append(files, file{name: "licenses/LICENSE", mode: 0o644, data: text})
	}
	return layer(o.Created, files)
}

type file struct {
	name string
	mode int64
	data []byte
	dir  bool
	uid  int
}

// layer makes a gzip-compressed OCI layer of files, owned by root (or uid) and dated
// mtime, so the same inputs give the same digest. crane.Layer is not used because it
// writes every entry with mode 0, and the binary must be executable.
func layer(mtime time.Time, files []file) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, Uid: f.uid, Gid: f.uid, ModTime: mtime, Format: tar.FormatPAX, Typeflag: tar.TypeReg, Size: int64(len(f.data))}
		if f.dir {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	raw := buf.Bytes()
	// Compressed once and kept: digests, the layout and the tarball all read the layer.
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}

// WriteLayout writes the build as an OCI image layout in dir (replacing what is there):
// index.json names the image index with ref (org.opencontainers.image.ref.name), so
// `skopeo copy oci:dir:ref …` finds it, and lists beside it one SBOM artifact per
// platform whose subject is that platform's manifest, so `oras discover` and
// `oras cp -r` find them (see sbomArtifact). `crane push dir` takes a layout of one
// entry only, so it refuses this one; oras and skopeo read it by ref.
func WriteLayout(dir, ref string, res *Result) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(res.Index, layout.WithAnnotations(map[string]string{LabelRefName: ref})); err != nil {
		return err
	}
	index, err := res.Index.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range index.Manifests {
		platform := d.Platform.OS + "/" + d.Platform.Architecture
		bom, ok := res.SBOMs[platform]
		if !ok {
			return fmt.Errorf("no SBOM for %s", platform)
		}
		// The subject is the index's own descriptor of the platform manifest, so it
		// names exactly the manifest a registry stores under that digest.
		subject := v1.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}
		art, err := sbomArtifact(bom, subject, SBOMFileName(*d.Platform), created(index.Annotations))
		if err != nil {
			return fmt.Errorf("%s: %w", platform, err)
		}
		if err := p.AppendImage(art); err != nil {
			return err
		}
	}
	return nil
}

// SBOMFileName is the name of a platform's SBOM in a release, e.g.
// sbom-linux-amd64.cdx.json.
func SBOMFileName(p v1.Platform) string {
	return "sbom-" + p.OS + "-" + p.Architecture + ".cdx.json"
}

// WriteSBOMs writes each platform's SBOM into dir as SBOMFileName, for the release's
// downloads and SHA256SUMS, and returns the files written.
func WriteSBOMs(dir string, res *Result) ([]string, error) {
	index, err := res.Index.IndexManifest()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	for _, d := range index.Manifests {
		file := filepath.Join(dir, SBOMFileName(*d.Platform))
		if err := os.WriteFile(file, res.SBOMs[d.Platform.OS+"/"+d.Platform.Architecture], 0o644); err != nil {
			return nil, err
		}
		files = append(files, file)
	}
	return files, nil
}

// created is the image's creation annotation, which the SBOM artifacts repeat.
func created(annotations map[string]string) map[string]string {
	if c, ok := annotations[LabelCreated]; ok {
		return map[string]string{LabelCreated: c}
	}
	return nil
}

// emptyJSON is the OCI empty config blob, "{}".
var emptyJSON = []byte("{}")

// sbomArtifact is an OCI 1.1 artifact: an image manifest with artifactType
// application/vnd.cyclonedx+json, the empty config, the SBOM as its one blob, and
// subject the platform manifest it describes. This is the shape image-spec's artifact
// guidance asks for and `oras attach` writes; registries with the referrers API list it
// under the subject's digest. It is assembled by hand because mutate cannot set
// artifactType or an empty config: empty.Image with the config media type changed would
// store an image config under the CycloneDX type.
func sbomArtifact(bom []byte, subject v1.Descriptor, title string, annotations map[string]string) (v1.Image, error) {
	blob := static.NewLayer(bom, sbom.MediaType)
	digest, err := blob.Digest()
	if err != nil {
		return nil, err
	}
	configDigest, _, err := v1.SHA256(bytes.NewReader(emptyJSON))
	if err != nil {
		return nil, err
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  sbom.MediaType,
		Config:        v1.Descriptor{MediaType: types.OCIEmptyJSON, Digest: configDigest, Size: int64(len(emptyJSON)), Data: emptyJSON},
		Layers: []v1.Descriptor{{
			MediaType:   sbom.MediaType,
			Digest:      digest,
			Size:        int64(len(bom)),
			Annotations: map[string]string{LabelTitle: title},
		}},
		Subject:     &subject,
		Annotations: annotations,
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return partial.CompressedToImage(artifact{manifest: raw, blob: blob, digest: digest})
}

// artifact is the minimal go-containerregistry image behind sbomArtifact: its manifest
// as written, the empty config and one blob.
type artifact struct {
	manifest []byte
	blob     v1.Layer
	digest   v1.Hash
}

func (a artifact) RawManifest() ([]byte, error)        { return a.manifest, nil }
func (a artifact) RawConfigFile() ([]byte, error)      { return emptyJSON, nil }
func (a artifact) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

func (a artifact) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h != a.digest {
		return nil, fmt.Errorf("the SBOM artifact has no blob %s", h)
	}
	return a.blob, nil
}

// WriteTarball writes one image as a `docker load`-able tarball tagged ref.
func WriteTarball(file, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	return tarball.WriteToFile(file, tag, img)
}

// ParsePlatforms parses "linux/amd64,linux/arm64".
func ParsePlatforms(s string) ([]v1.Platform, error) {
	var out []v1.Platform
	for _, part := range strings.Split(s, ",") {
		p, err := v1.ParsePlatform(strings.TrimSpace(part))
		if err != nil {
			return nil, err
		}
		out = append(out, *p)
	}
	return out, nil
}
