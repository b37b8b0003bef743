package install

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The README's Metrics section tells a user which ClusterRole to bind Prometheus to. For
// any release name, the name it gives (as a pattern and in its examples) must be the one
// the chart makes: that is the name a user copies into a ClusterRoleBinding.
func TestTheReadmeNamesTheChartsMetricsReaderRole(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := strings.Join(strings.Fields(string(raw)), " ")
	const chart = "cd-credentials-operator"
	patterns := map[string]func(release string) string{
		"`<release>-metrics-reader` from the chart": func(release string) string { return release },
		// cdcreds.fullname, as the README words it.
		"`<fullname>-metrics-reader` from the chart": func(release string) string {
			if strings.Contains(release, chart) {
				return release
			}
			return release + "-" + chart
		},
	}
	chartRole := func(release string) string {
		var names []string
		for _, o := range only(helmTemplate(t, release, chart), "ClusterRole") {
			if strings.HasSuffix(o.GetName(), "-metrics-reader") {
				names = append(names, o.GetName())
			}
		}
		if len(names) != 1 {
			t.Fatalf("release %q: the chart makes the metrics-reader ClusterRoles %v, want one", release, names)
		}
		return names[0]
	}
	named := 0
	for pattern, fullname := range patterns {
		if !strings.Contains(readme, pattern) {
			continue
		}
		named++
		for _, release := range []string{chart, "cd", "creds", "prod-" + chart} {
			if got, want := chartRole(release), fullname(release)+"-metrics-reader"; got != want {
				t.Errorf("release %q: the chart's metrics-reader ClusterRole is %q; the README (%s) says %q", release, got, pattern, want)
			}
		}
	}
	if named == 0 {
		t.Fatal("the README names the chart's metrics-reader ClusterRole by no pattern this test knows")
	}
	examples := regexp.MustCompile("`([a-z0-9-]+-metrics-reader)` for a release `([a-z0-9-]+)`").FindAllStringSubmatch(readme, -1)
	for _, ex := range examples {
		if got := chartRole(ex[2]); got != ex[1] {
			t.Errorf("release %q: the chart's metrics-reader ClusterRole is %q; the README's example says %q", ex[2], got, ex[1])
		}
	}
	if len(examples) < 2 {
		t.Errorf("the README gives %d examples of the role's name for a release, want one with the chart's name and one without", len(examples))
	}
}
