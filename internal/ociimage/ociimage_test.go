package ociimage

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// fakeResult is a two-platform build of random images, each with a stand-in SBOM that
// names its platform, so the layout's wiring is tested without compiling anything.
func fakeResult(t *testing.T) *Result {
	t.Helper()
	res := &Result{Images: map[string]v1.Image{}, SBOMs: map[string][]byte{}}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(64, 1)
		if err != nil {
			t.Fatal(err)
		}
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		p := v1.Platform{OS: "linux", Architecture: arch}
		res.Images["linux/"+arch] = img
		res.SBOMs["linux/"+arch] = []byte(`{"bomFormat":"CycloneDX","for":"linux/` + arch + `"}`)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	res.Index = mutate.Annotations(idx, map[string]string{LabelCreated: "2026-11-01T00:00:00Z"}).(v1.ImageIndex)
	return res
}

// cyclonedx is the artifactType the referrers API filters SBOMs by.
const cyclonedx = "application/vnd.cyclonedx+json"

func TestWriteLayoutAttachesEachPlatformsSBOMAsAReferrer(t *testing.T) {
	res := fakeResult(t)
	dir := filepath.Join(t.TempDir(), "image")
	if err := WriteLayout(dir, "v1.2.3", res); err != nil {
		t.Fatal(err)
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	entries, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	platforms, err := res.Index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	// Referrers by the digest of their subject, as the referrers API answers.
	bySubject := map[v1.Hash][]v1.Descriptor{}
	var named int
	for _, e := range entries.Manifests {
		if e.Annotations[LabelRefName] == "v1.2.3" {
			named++
			continue
		}
		img, err := top.Image(e.Digest)
		if err != nil {
			t.Fatal(err)
		}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject == nil {
			t.Fatalf("index.json entry %s has no subject", e.Digest)
		}
		bySubject[m.Subject.Digest] = append(bySubject[m.Subject.Digest], e)
	}
	if named != 1 || len(entries.Manifests) != 1+len(platforms.Manifests) {
		t.Fatalf("index.json has %d entries, %d named v1.2.3: want the image index and one SBOM per platform", len(entries.Manifests), named)
	}
	for _, d := range platforms.Manifests {
		t.Run(d.Platform.String(), func(t *testing.T) {
			refs := bySubject[d.Digest]
			if len(refs) != 1 {
				t.Fatalf("%d referrers of the %s manifest %s, want 1", len(refs), d.Platform, d.Digest)
			}
			if refs[0].ArtifactType != cyclonedx {
				t.Errorf("index.json artifactType %q, want %q", refs[0].ArtifactType, cyclonedx)
			}
			img, err := top.Image(refs[0].Digest)
			if err != nil {
				t.Fatal(err)
			}
			m, err := img.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			emptyDigest, _, _ := v1.SHA256(strings.NewReader("{}"))
			blob := res.SBOMs[d.Platform.OS+"/"+d.Platform.Architecture]
			blobDigest, _, _ := v1.SHA256(strings.NewReader(string(blob)))
			want := v1.Manifest{
				SchemaVersion: 2,
				MediaType:     types.OCIManifestSchema1,
				ArtifactType:  cyclonedx,
				Config:        v1.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Size: 2, Digest: emptyDigest, Data: []byte("{}")},
				Layers: []v1.Descriptor{{MediaType: cyclonedx, Size: int64(len(blob)), Digest: blobDigest,
					Annotations: map[string]string{"org.opencontainers.image.title": "sbom-linux-" + d.Platform.Architecture + ".cdx.json"}}},
				Subject:     &v1.Descriptor{MediaType: d.MediaType, Size: d.Size, Digest: d.Digest},
				Annotations: map[string]string{LabelCreated: "2026-11-01T00:00:00Z"},
			}
			if diff := cmp.Diff(&want, m); diff != "" {
				t.Errorf("referrer manifest (-want +got):\n%s", diff)
			}
			layers, err := img.Layers()
			if err != nil {
				t.Fatal(err)
			}
			rc, err := layers[0].Compressed()
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, _ := io.ReadAll(rc)
			if string(got) != string(blob) {
				t.Errorf("the artifact's blob is %s, want the platform's SBOM %s", got, blob)
			}
			config, err := img.RawConfigFile()
			if err != nil || string(config) != "{}" {
				t.Errorf("config blob %q (%v), want the empty {}", config, err)
			}
		})
	}
}

func TestWriteSBOMsNamesEachFileByPlatform(t *testing.T) {
	res := fakeResult(t)
	dir := t.TempDir()
	files, err := WriteSBOMs(dir, res)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "sbom-linux-amd64.cdx.json"), filepath.Join(dir, "sbom-linux-arm64.cdx.json")}
	if diff := cmp.Diff(want, files); diff != "" {
		t.Fatalf("files (-want +got):\n%s", diff)
	}
	for _, arch := range []string{"amd64", "arm64"} {
		got, err := os.ReadFile(filepath.Join(dir, "sbom-linux-"+arch+".cdx.json"))
		if err != nil || string(got) != string(res.SBOMs["linux/"+arch]) {
			t.Errorf("sbom-linux-%s.cdx.json = %s (%v), want %s", arch, got, err, res.SBOMs["linux/"+arch])
		}
	}
}
