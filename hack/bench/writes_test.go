package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// A first rotation costing 15 ms of the API server's and etcd's CPU makes a cold start of
// 10,000 grants 150 core-seconds: 2.5 cores for a minute, or 75 s on 2 cores.
func TestColdStartBound(t *testing.T) {
	need, floor := coldStartBound(15, 10000, time.Minute, 2)
	if need != 2.5 || floor != 75*time.Second {
		t.Errorf("got %.2f cores and %s, want 2.50 and 1m15s", need, floor)
	}
}

// The report sums each rotation's kinds apart: the cold start's bound comes from the
// first rotation's server cost alone, the client ratio from the routine rotation's
// against the loop's.
func TestWriteCostsAreSummedByRotation(t *testing.T) {
	var out strings.Builder
	printWriteCosts(&out, 3000, 2, []writeCost{
		{"a", firstRotation, 10, 1}, {"b", firstRotation, 5, 1},
		{"c", routineRotation, 4, 0.6}, {"d", routineRotation, 3, 0.6},
		{"e", loopRotation, 2, 0.8},
	})
	for _, want := range []string{
		"| a grant's first rotation (cold start) (kinds: 2) | 15.0 | 2.00 |",
		"| the operator's routine rotation (kinds: 2) | 7.0 | 1.20 |",
		"| the loop's rotation (kinds: 1) | 2.0 | 0.80 |",
		"cost its client 1.50x the loop's",
		"150 core-seconds", "2.5 cores", "at least 1m15s",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, out.String())
		}
	}
}

// The first status write sets the whole Ready status at the resourceVersion read; a
// routine one only the fields a rotation changes; both only on the grant read (its UID
// tested first), as the operator's status patch does.
func TestRotateStatusPatchesWhatARotationChanges(t *testing.T) {
	g := &cdv1.CDUserGrant{ObjectMeta: metav1.ObjectMeta{Name: "g", UID: "uid-g", ResourceVersion: "7", Generation: 1}}
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	opsOf := func(patch []byte, err error) map[string]json.RawMessage {
		t.Helper()
		var ops []struct {
			Op    string          `json:"op"`
			Path  string          `json:"path"`
			Value json.RawMessage `json:"value"`
		}
		if err == nil {
			err = json.Unmarshal(patch, &ops)
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(ops) == 0 || ops[0].Op != "test" || ops[0].Path != "/metadata/uid" || string(ops[0].Value) != `"uid-g"` {
			t.Fatalf("patch %s does not test the grant's UID first", patch)
		}
		byPath := map[string]json.RawMessage{}
		for _, o := range ops[1:] {
			byPath[o.Op+" "+o.Path] = o.Value
		}
		return byPath
	}
	first := opsOf(rotateStatus(g, now))
	if c := g.Status.Conditions; len(c) != 3 || c[0].Type != cdv1.ReadyCondition || c[0].Status != metav1.ConditionTrue ||
		string(first["test /metadata/resourceVersion"]) != `"7"` || first["add /status"] == nil {
		t.Fatalf("first status: conditions %+v, patch %v", c, first)
	}
	routine := opsOf(rotateStatus(g, now.Add(40*time.Minute)))
	var keys []string
	for k := range routine {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"add /status/expiresAt", "add /status/lastRotationTime", "add /status/renewalTime", "add /status/rotationCount"}; !slices.Equal(keys, want) || string(routine["add /status/rotationCount"]) != "2" {
		t.Errorf("routine patch %v, want %v with rotationCount 2", routine, want)
	}
}
