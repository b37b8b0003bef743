package install

import (
	"archive/tar"
	"context"
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

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/credops/cd-credentials-operator/internal/ociimage"
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
	if err := ociimage.WriteLayout(layoutDir, version, res.Index); err != nil {
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
// ref (org.opencontainers.image.ref.name).
func openLayout(t *testing.T, dir, ref string) v1.ImageIndex {
	t.Helper()
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 || m.Manifests[0].MediaType != types.OCIImageIndex || m.Manifests[0].Annotations[ociimage.LabelRefName] != ref {
		t.Fatalf("index.json %+v: want one OCI image index named %q", m.Manifests, ref)
	}
	index, err := top.ImageIndex(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return index
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
