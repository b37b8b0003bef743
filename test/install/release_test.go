package install

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
)

// TestReleaseChecksumsListTheSBOMs runs the release's image and checksum steps as
// `make release` does (for one platform, to stay quick) and checks that the SBOM is a
// release file: written as dist/sbom-linux-amd64.cdx.json and listed in SHA256SUMS.
func TestReleaseChecksumsListTheSBOMs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const version = "v0.0.0-releasetest"
	out := t.TempDir()
	for _, args := range [][]string{
		{"run", "./hack/image", "--version", version, "--commit", "0123456789abcdef", "--platforms", "linux/amd64", "--out", out},
		{"run", "./hack/release", "checksums", "--out", out},
	} {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1761955200")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
		}
	}

	sums, err := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	const name = "sbom-linux-amd64.cdx.json"
	data, err := os.ReadFile(filepath.Join(out, name))
	if err != nil {
		t.Fatalf("the release has no %s: %v", name, err)
	}
	sum := sha256.Sum256(data)
	if want := hex.EncodeToString(sum[:]) + "  " + name; !strings.Contains("\n"+string(sums), "\n"+want+"\n") {
		t.Errorf("SHA256SUMS does not list %q:\n%s", want, sums)
	}
	var bom cdx.BOM
	if err := cdx.NewBOMDecoder(strings.NewReader(string(data)), cdx.BOMFileFormatJSON).Decode(&bom); err != nil {
		t.Fatalf("%s is not CycloneDX JSON: %v", name, err)
	}
	if bom.Metadata == nil || bom.Metadata.Component == nil || bom.Metadata.Component.Version != version {
		t.Errorf("%s does not describe the operator at %s: metadata %+v", name, version, bom.Metadata)
	}
}
