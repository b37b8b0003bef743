// Command image builds the operator's image with no container daemon and no registry:
// an OCI image layout for every platform in <out>/image (with each platform's CycloneDX
// SBOM attached as a referrer), the same SBOMs as <out>/sbom-<os>-<arch>.cdx.json, and
// a `docker load`-able tarball of linux/amd64 in <out>/image-linux-amd64.tar.
// `make image` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/credops/cd-credentials-operator/internal/ociimage"
)

func main() {
	version := flag.String("version", "devel", "Version stamped into the binary and the labels, e.g. v0.1.0; also the image tag.")
	commit := flag.String("commit", "unknown", "Git revision stamped into the binary and the labels.")
	repo := flag.String("repository", "ghcr.io/credops/cd-credentials-operator", "Image repository the tarball is tagged with.")
	platforms := flag.String("platforms", "linux/amd64,linux/arm64", "Comma-separated platforms.")
	out := flag.String("out", "dist", "Output folder.")
	flag.Parse()
	if err := run(*version, *commit, *repo, *platforms, *out); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(version, commit, repo, platformList, out string) error {
	platforms, err := ociimage.ParsePlatforms(platformList)
	if err != nil {
		return err
	}
	res, err := ociimage.Build(context.Background(), ociimage.Options{
		ModuleDir:   ".",
		Package:     "./cmd/manager",
		Platforms:   platforms,
		Version:     version,
		Commit:      commit,
		Source:      "https://github.com/credops/cd-credentials-operator",
		Licenses:    "Apache-2.0",
		LicenseFile: "LICENSE",
		Title:       "cd-credentials-operator",
		Description: "Kubernetes operator that mints Central Dispatch OAuth tokens and rotates customers' refresh tokens into Secrets",
		Created:     created(),
		Stderr:      os.Stderr,
	})
	if err != nil {
		return err
	}
	layoutDir := filepath.Join(out, "image")
	if err := ociimage.WriteLayout(layoutDir, version, res); err != nil {
		return err
	}
	fmt.Println("wrote", layoutDir)
	sboms, err := ociimage.WriteSBOMs(out, res)
	if err != nil {
		return err
	}
	for _, f := range sboms {
		fmt.Println("wrote", f)
	}
	if img, ok := res.Images["linux/amd64"]; ok {
		tarPath := filepath.Join(out, "image-linux-amd64.tar")
		if err := ociimage.WriteTarball(tarPath, repo+":"+version, img); err != nil {
			return err
		}
		fmt.Println("wrote", tarPath)
	}
	return nil
}

// created is SOURCE_DATE_EPOCH (the Makefile passes the commit's time), so rebuilding a
// commit gives the same digests.
func created() time.Time {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if sec, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.Unix(sec, 0).UTC()
		}
	}
	return time.Unix(0, 0).UTC()
}
