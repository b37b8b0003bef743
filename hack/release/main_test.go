package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

// fakeBuild writes a stand-in binary whose content names its platform.
func fakeBuild(_ context.Context, p Platform, dest string) error {
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dest, []byte("binary for "+p.OS+"/"+p.Arch), 0o755)
}

func newReleaser(t *testing.T) releaser {
	t.Helper()
	dir := t.TempDir()
	license := filepath.Join(dir, "LICENSE")
	if err := os.WriteFile(license, []byte("Apache License 2.0"), 0o644); err != nil {
		t.Fatal(err)
	}
	return releaser{out: filepath.Join(dir, "dist"), version: "v1.2.3", license: license, created: time.Unix(1700000000, 0).UTC(), build: fakeBuild}
}

type archiveEntry struct {
	Name    string
	Mode    int64
	Content string
}

func readArchive(t *testing.T, path string) []archiveEntry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var out []archiveEntry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out = append(out, archiveEntry{Name: h.Name, Mode: h.Mode, Content: string(b)})
	}
}

func TestPluginArchivesAreNamedPerPlatformAndHoldTheBinaryAndLicense(t *testing.T) {
	r := newReleaser(t)
	if err := r.plugin(context.Background(), DefaultPlatforms, filepath.Join("..", "..", "plugins", "cd.yaml")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		archive string
		want    []archiveEntry
	}{
		{"linux amd64 holds kubectl-cd", "kubectl-cd_v1.2.3_linux_amd64.tar.gz", []archiveEntry{{"kubectl-cd", 0o755, "binary for linux/amd64"}, {"LICENSE", 0o644, "Apache License 2.0"}}},
		{"linux arm64 holds kubectl-cd", "kubectl-cd_v1.2.3_linux_arm64.tar.gz", []archiveEntry{{"kubectl-cd", 0o755, "binary for linux/arm64"}, {"LICENSE", 0o644, "Apache License 2.0"}}},
		{"darwin amd64 holds kubectl-cd", "kubectl-cd_v1.2.3_darwin_amd64.tar.gz", []archiveEntry{{"kubectl-cd", 0o755, "binary for darwin/amd64"}, {"LICENSE", 0o644, "Apache License 2.0"}}},
		{"darwin arm64 holds kubectl-cd", "kubectl-cd_v1.2.3_darwin_arm64.tar.gz", []archiveEntry{{"kubectl-cd", 0o755, "binary for darwin/arm64"}, {"LICENSE", 0o644, "Apache License 2.0"}}},
		{"windows amd64 holds kubectl-cd.exe", "kubectl-cd_v1.2.3_windows_amd64.tar.gz", []archiveEntry{{"kubectl-cd.exe", 0o755, "binary for windows/amd64"}, {"LICENSE", 0o644, "Apache License 2.0"}}},
		{"windows arm64 holds kubectl-cd.exe", "kubectl-cd_v1.2.3_windows_arm64.tar.gz", []archiveEntry{{"kubectl-cd.exe", 0o755, "binary for windows/arm64"}, {"LICENSE", 0o644, "Apache License 2.0"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, readArchive(t, filepath.Join(r.out, tc.archive))); diff != "" {
				t.Errorf("archive contents (-want +got):\n%s", diff)
			}
		})
	}
}

// krewManifest is krew's Plugin manifest (index.krew.dev's v1alpha2 fields), read
// strictly so a misspelt field fails the test.
type krewManifest struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		Homepage         string `json:"homepage"`
		ShortDescription string `json:"shortDescription"`
		Description      string `json:"description"`
		Caveats          string `json:"caveats"`
		Platforms        []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			SHA256 string `json:"sha256"`
			Bin    string `json:"bin"`
			Files  []struct {
				From string `json:"from"`
				To   string `json:"to"`
			} `json:"files"`
		} `json:"platforms"`
	} `json:"spec"`
}

func TestKrewManifestNamesEachArchiveWithItsSHA256(t *testing.T) {
	r := newReleaser(t)
	if err := r.plugin(context.Background(), DefaultPlatforms, filepath.Join("..", "..", "plugins", "cd.yaml")); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(r.out, "cd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var m krewManifest
	if err := yaml.UnmarshalStrict(data, &m); err != nil {
		t.Fatalf("the rendered manifest is not valid YAML of a krew Plugin: %v\n%s", err, data)
	}
	if m.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || m.Kind != "Plugin" || m.Metadata.Name != "cd" || m.Spec.Version != "v1.2.3" {
		t.Errorf("apiVersion %q, kind %q, name %q, version %q; want krew's v1alpha2 Plugin cd v1.2.3", m.APIVersion, m.Kind, m.Metadata.Name, m.Spec.Version)
	}
	if len(m.Spec.Platforms) != len(DefaultPlatforms) {
		t.Fatalf("%d platforms, want %d", len(m.Spec.Platforms), len(DefaultPlatforms))
	}
	for _, p := range m.Spec.Platforms {
		goos, arch := p.Selector.MatchLabels["os"], p.Selector.MatchLabels["arch"]
		archive := "kubectl-cd_v1.2.3_" + goos + "_" + arch + ".tar.gz"
		want, err := fileSHA256(filepath.Join(r.out, archive))
		if err != nil {
			t.Fatalf("%s/%s: %v", goos, arch, err)
		}
		if p.SHA256 != want {
			t.Errorf("%s/%s: sha256 %s, want the archive's %s", goos, arch, p.SHA256, want)
		}
		if wantURI := "https://github.com/credops/cd-credentials-operator/releases/download/v1.2.3/" + archive; p.URI != wantURI {
			t.Errorf("%s/%s: uri %s, want %s", goos, arch, p.URI, wantURI)
		}
		wantBin := "kubectl-cd"
		if goos == "windows" {
			wantBin += ".exe"
		}
		if p.Bin != wantBin || len(p.Files) != 2 || p.Files[0].From != wantBin || p.Files[1].From != "LICENSE" {
			t.Errorf("%s/%s: bin %q files %+v; want %q and LICENSE", goos, arch, p.Bin, p.Files, wantBin)
		}
	}
}

func TestChecksumsCoverEveryFileInSha256sumFormat(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{"install.yaml": "kind: List\n", "kubectl-cd_v1.2.3_linux_amd64.tar.gz": "archive", "cd-credentials-operator-1.2.3.tgz": "chart"}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "image", "blobs"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // a second run must not list the first run's SHA256SUMS
		if err := writeChecksums(dir); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("line %q is not `<sha256>  <name>`", line)
		}
		want, _ := fileSHA256(filepath.Join(dir, name))
		if sum != want {
			t.Errorf("%s: %s, want %s", name, sum, want)
		}
		names = append(names, name)
	}
	want := []string{"cd-credentials-operator-1.2.3.tgz", "install.yaml", "kubectl-cd_v1.2.3_linux_amd64.tar.gz"}
	sort.Strings(want)
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("files listed (-want +got):\n%s", diff)
	}
}
