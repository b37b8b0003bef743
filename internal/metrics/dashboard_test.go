package metrics

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// dashboard is the part of the chart's Grafana dashboard these tests read.
type dashboard struct {
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "charts", "cd-credentials-operator", "files", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestDashboardPanelsReadOnlyTheChosenOperator: controller-runtime's metrics (reconcile
// errors, work queue depth) and Go's are exported by every kubebuilder operator and Go
// program the same Prometheus scrapes, and several installs of this one (shards) export
// the same cdcredops_ series. Every series a panel reads is selected by the dashboard's
// job variable, whose values are the jobs exporting one of the operator's own series,
// whatever the release or fullnameOverride named its metrics Service.
func TestDashboardPanelsReadOnlyTheChosenOperator(t *testing.T) {
	d := readDashboard(t)
	ownJobs := regexp.MustCompile(`^label_values\(cdcredops_[a-z_]+, job\)$`)
	var variable bool
	for _, v := range d.Templating.List {
		if v.Name == "job" {
			variable = v.Type == "query" && ownJobs.MatchString(v.Definition)
		}
	}
	if !variable {
		t.Errorf("the dashboard has no job variable listing the jobs of a cdcredops_ series")
	}
	p := parser.NewParser(parser.Options{})
	for _, panel := range d.Panels {
		for _, target := range panel.Targets {
			expr, err := p.ParseExpr(target.Expr)
			if err != nil {
				t.Fatalf("%s: %v", panel.Title, err)
			}
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				vs, ok := n.(*parser.VectorSelector)
				if !ok {
					return nil
				}
				for _, m := range vs.LabelMatchers {
					if m.Name == "job" && m.Type == labels.MatchRegexp && m.Value == "$job" {
						return nil
					}
				}
				who := "every target Prometheus scrapes"
				if strings.HasPrefix(vs.Name, "cdcredops_") {
					who = "every install of the operator"
				}
				t.Errorf("panel %q reads %s from %s, not the chosen job (job=~\"$job\")", panel.Title, vs.String(), who)
				return nil
			})
		}
	}
}
