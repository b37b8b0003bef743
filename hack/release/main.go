// Command release writes the release files that are not the image, the manifest or the
// chart (the Makefile builds those): `plugin` cross-compiles kubectl-cd into
// kubectl-cd_<version>_<os>_<arch>.tar.gz archives (the binary, .exe on Windows, and
// LICENSE) and renders the krew manifest template with their sha256s; `checksums`
// writes SHA256SUMS for every file in the output folder.
package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
	"time"
)

// versionPackage is where -ldflags -X stamps the version and commit.
const versionPackage = "github.com/credops/cd-credentials-operator/internal/version"

// Platform is one os/arch kubectl-cd is released for.
type Platform struct {
	OS, Arch string
	// Filled in by buildPlugin, for the krew template.
	Archive, SHA256, Binary string
}

// DefaultPlatforms are linux, darwin and windows on amd64 and arm64.
var DefaultPlatforms = []Platform{
	{OS: "linux", Arch: "amd64"}, {OS: "linux", Arch: "arm64"},
	{OS: "darwin", Arch: "amd64"}, {OS: "darwin", Arch: "arm64"},
	{OS: "windows", Arch: "amd64"}, {OS: "windows", Arch: "arm64"},
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: release plugin|checksums [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	out := fs.String("out", "dist", "Output folder.")
	version := fs.String("version", "", "Release version, e.g. v0.2.0.")
	commit := fs.String("commit", "unknown", "Git revision stamped into the binary.")
	krew := fs.String("krew-template", "plugins/cd.yaml", "The krew manifest template.")
	license := fs.String("license", "LICENSE", "The licence shipped in each archive.")
	_ = fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "plugin":
		if *version == "" {
			err = fmt.Errorf("--version is required")
			break
		}
		r := releaser{out: *out, version: *version, license: *license, created: sourceDate(), build: goBuild(*version, *commit)}
		err = r.plugin(context.Background(), DefaultPlatforms, *krew)
	case "checksums":
		err = writeChecksums(*out)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

// releaser builds the plugin archives; build is swapped in tests.
type releaser struct {
	out, version, license string
	created               time.Time
	build                 func(ctx context.Context, p Platform, dest string) error
}

// plugin builds every platform's archive, then renders the krew manifest into out.
func (r releaser) plugin(ctx context.Context, platforms []Platform, krewTemplate string) error {
	if err := os.MkdirAll(r.out, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "kubectl-cd-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	built := make([]Platform, 0, len(platforms))
	for _, p := range platforms {
		p.Binary = "kubectl-cd"
		if p.OS == "windows" {
			p.Binary += ".exe"
		}
		bin := filepath.Join(tmp, p.OS+"-"+p.Arch, p.Binary)
		if err := r.build(ctx, p, bin); err != nil {
			return fmt.Errorf("building kubectl-cd for %s/%s: %w", p.OS, p.Arch, err)
		}
		p.Archive = fmt.Sprintf("kubectl-cd_%s_%s_%s.tar.gz", r.version, p.OS, p.Arch)
		if err := r.archive(filepath.Join(r.out, p.Archive), bin, p.Binary); err != nil {
			return err
		}
		if p.SHA256, err = fileSHA256(filepath.Join(r.out, p.Archive)); err != nil {
			return err
		}
		built = append(built, p)
	}
	return renderKrew(krewTemplate, filepath.Join(r.out, filepath.Base(krewTemplate)), r.version, built)
}

// goBuild cross-compiles a static kubectl-cd stamped with the version.
func goBuild(version, commit string) func(ctx context.Context, p Platform, dest string) error {
	return func(ctx context.Context, p Platform, dest string) error {
		ldflags := fmt.Sprintf("-s -w -X %s.Version=%s -X %s.Commit=%s", versionPackage, version, versionPackage, commit)
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", dest, "./cmd/kubectl-cd")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Arch)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		return cmd.Run()
	}
}

// archive writes a .tar.gz of the binary (0755) and the licence (0644), owned by root
// and dated r.created, so rebuilding a commit gives the same bytes.
func (r releaser) archive(dest, bin, binName string) error {
	f, err := os.Create(dest)
	if err != nil {
		return err
	}
	defer f.Close()
	gz := gzip.NewWriter(f)
	gz.ModTime = r.created
	tw := tar.NewWriter(gz)
	for _, e := range []struct {
		src, name string
		mode      int64
	}{{bin, binName, 0o755}, {r.license, "LICENSE", 0o644}} {
		if err := addFile(tw, e.src, e.name, e.mode, r.created); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	return f.Close()
}

func addFile(tw *tar.Writer, src, name string, mode int64, mtime time.Time) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	h := &tar.Header{Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err = tw.Write(data)
	return err
}

// renderKrew fills the krew manifest template with the version and each archive.
func renderKrew(templatePath, dest, version string, platforms []Platform) error {
	text, err := os.ReadFile(templatePath)
	if err != nil {
		return err
	}
	t, err := template.New(filepath.Base(templatePath)).Option("missingkey=error").Parse(string(text))
	if err != nil {
		return err
	}
	f, err := os.Create(dest)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := t.Execute(f, map[string]any{"Version": version, "Platforms": platforms}); err != nil {
		return err
	}
	return f.Close()
}

// writeChecksums writes SHA256SUMS (sha256sum's format, so `sha256sum -c SHA256SUMS`
// checks a download) for every regular file directly in dir.
func writeChecksums(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var lines []string
	for _, e := range entries {
		if !e.Type().IsRegular() || e.Name() == "SHA256SUMS" {
			continue
		}
		sum, err := fileSHA256(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		lines = append(lines, sum+"  "+e.Name())
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i][66:] < lines[j][66:] })
	return os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// sourceDate is SOURCE_DATE_EPOCH (the commit's time, from the Makefile), else 1970.
func sourceDate() time.Time {
	var sec int64
	if _, err := fmt.Sscan(os.Getenv("SOURCE_DATE_EPOCH"), &sec); err != nil {
		sec = 0
	}
	return time.Unix(sec, 0).UTC()
}
