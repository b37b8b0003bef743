package metrics

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// perCR gathers the per-CR series as "name{kind,namespace,name[,type,status,reason]} value".
func perCR(t *testing.T) []string {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range families {
		switch f.GetName() {
		case "cdcredops_condition", "cdcredops_token_expiration_timestamp_seconds", "cdcredops_token_renewal_timestamp_seconds":
		default:
			continue
		}
		for _, m := range f.GetMetric() {
			s := f.GetName() + "{"
			for _, l := range m.GetLabel() {
				s += l.GetValue() + ","
			}
			out = append(out, s+"} "+metav1.NewTime(time.Unix(int64(m.GetGauge().GetValue()), 0)).UTC().Format(time.RFC3339))
		}
	}
	return out
}

func TestPerCRSeriesAreReadFromTheSourcesWhenScraped(t *testing.T) {
	exp := metav1.NewTime(time.Unix(1800, 0))
	acme := CR{Kind: "CDUserGrant", Namespace: "ns", Name: "acme", ExpiresAt: &exp,
		Conditions: []metav1.Condition{{Type: cdv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: cdv1.TokenIssuedReason}}}
	yielding := func(crs ...CR) Source {
		return func(yield func(CR) bool) {
			for _, cr := range crs {
				if !yield(cr) {
					return
				}
			}
		}
	}
	first := AddSource(yielding(acme))
	// A second manager in the same process that sees the same CR publishes it once.
	second := AddSource(yielding(acme))
	want := []string{
		"cdcredops_condition{CDUserGrant,acme,ns,TokenIssued,True,Ready,} 1970-01-01T00:00:01Z",
		"cdcredops_token_expiration_timestamp_seconds{CDUserGrant,acme,ns,} 1970-01-01T00:30:00Z",
	}
	if diff := cmp.Diff(want, perCR(t)); diff != "" {
		t.Errorf("series (-want +got):\n%s", diff)
	}
	first()
	second()
	if got := perCR(t); len(got) != 0 {
		t.Errorf("series left after their sources went: %v", got)
	}
}
