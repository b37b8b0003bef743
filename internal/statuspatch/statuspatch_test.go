package statuspatch

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// status has a field of every kind fieldOps tells apart: omitempty or not, scalar,
// pointer, slice, left out by its tag, unexported, and named by its Go name.
type status struct {
	Phase      string             `json:"phase,omitempty"`
	Count      int32              `json:"count"`
	ExpiresAt  *metav1.Time       `json:"expiresAt,omitempty"`
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	Scratch    string             `json:"-"`
	note       string
	Untagged   string
}

var (
	t0    = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	at    = metav1.NewTime(t0)
	later = metav1.NewTime(t0.Add(time.Hour))
	ready = metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: "TokenIssued", LastTransitionTime: at}
	// read is the object a pass read, with a status (a pass that found none is the Over
	// path).
	read = &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "acme", UID: "uid-acme", ResourceVersion: "7"}}
)

const uidTest = `{"op":"test","path":"/metadata/uid","value":"uid-acme"}`

// Each case's patch is compared as sent, byte for byte: which operations go, in which
// order, and each value whole.
func TestPatchData(t *testing.T) {
	rising := status{Phase: "Ready", Count: 3, ExpiresAt: &at, Conditions: []metav1.Condition{ready}}
	cases := map[string]struct {
		obj           *metav1.PartialObjectMetadata
		before, after status
		want          string
	}{
		"nothing changed: the UID test alone, so the write still applies to this object only": {
			obj: read, before: rising, after: rising,
			want: `[` + uidTest + `]`,
		},
		"only the fields that changed go, after the UID test and in the order of the struct": {
			obj: read, before: rising, after: status{Phase: "Ready", Count: 4, ExpiresAt: &later, Conditions: []metav1.Condition{ready}},
			want: `[` + uidTest +
				`,{"op":"add","path":"/status/count","value":4}` +
				`,{"op":"add","path":"/status/expiresAt","value":"2026-11-29T11:00:00Z"}]`,
		},
		"a list that changed in one item is set whole": {
			obj: read, before: rising, after: status{Phase: "Ready", Count: 3, ExpiresAt: &at, Conditions: []metav1.Condition{ready, {Type: "Stalled", Status: metav1.ConditionFalse, Reason: "Fine", LastTransitionTime: at}}},
			want: `[` + uidTest +
				`,{"op":"add","path":"/status/conditions","value":[` +
				`{"type":"Ready","status":"True","lastTransitionTime":"2026-11-29T10:00:00Z","reason":"TokenIssued","message":""},` +
				`{"type":"Stalled","status":"False","lastTransitionTime":"2026-11-29T10:00:00Z","reason":"Fine","message":""}]}]`,
		},
		"a field that went is set to null, which applies whether the object still has it or not": {
			obj: read, before: rising, after: status{Count: 3, Conditions: []metav1.Condition{ready}},
			want: `[` + uidTest +
				`,{"op":"add","path":"/status/phase","value":null}` +
				`,{"op":"add","path":"/status/expiresAt","value":null}]`,
		},
		"a field without omitempty that went to its zero value is sent as zero, as encoding/json sends it": {
			obj: read, before: rising, after: status{Phase: "Ready", ExpiresAt: &at, Conditions: []metav1.Condition{ready}},
			want: `[` + uidTest + `,{"op":"add","path":"/status/count","value":0}]`,
		},
		"a field that appears is set": {
			obj: read, before: status{Count: 3}, after: status{Phase: "Ready", Count: 3},
			want: `[` + uidTest + `,{"op":"add","path":"/status/phase","value":"Ready"}]`,
		},
		"a field empty before and after, though not equal (nil and empty lists), is left alone": {
			obj: read, before: status{Count: 3}, after: status{Count: 3, Conditions: []metav1.Condition{}},
			want: `[` + uidTest + `]`,
		},
		"a time that moved within its second is equal as sent, and left alone": {
			obj: read, before: rising, after: status{Phase: "Ready", Count: 3, ExpiresAt: &metav1.Time{Time: t0.Add(400 * time.Millisecond)}, Conditions: []metav1.Condition{ready}},
			want: `[` + uidTest + `]`,
		},
		"fields encoding/json leaves out never go: json:\"-\" and unexported": {
			obj: read, before: rising, after: status{Phase: "Ready", Count: 3, ExpiresAt: &at, Conditions: []metav1.Condition{ready}, Scratch: "x", note: "y"},
			want: `[` + uidTest + `]`,
		},
		"a field without a json tag goes by its Go name, as encoding/json names it": {
			obj: read, before: rising, after: status{Phase: "Ready", Count: 3, ExpiresAt: &at, Conditions: []metav1.Condition{ready}, Untagged: "u"},
			want: `[` + uidTest + `,{"op":"add","path":"/status/Untagged","value":"u"}]`,
		},
		"an object without a UID is tested for none (null), never for an empty string": {
			obj: &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "acme", ResourceVersion: "7"}}, before: status{Count: 3}, after: status{Count: 4},
			want: `[{"op":"test","path":"/metadata/uid","value":null},{"op":"add","path":"/status/count","value":4}]`,
		},
		// Over: a JSON patch cannot add a field to a status that is absent, so the status
		// is set whole, and only at the resourceVersion read, so that a status written
		// meanwhile is not replaced.
		"an object read without a status gets it whole, at the resourceVersion read": {
			obj: read, before: status{}, after: status{Phase: "Ready", Count: 1},
			want: `[` + uidTest +
				`,{"op":"test","path":"/metadata/resourceVersion","value":"7"}` +
				`,{"op":"add","path":"/status","value":{"phase":"Ready","count":1,"Untagged":""}}]`,
		},
		"an object read without a status whose pass left it empty still gets it whole": {
			obj: read, before: status{}, after: status{},
			want: `[` + uidTest +
				`,{"op":"test","path":"/metadata/resourceVersion","value":"7"}` +
				`,{"op":"add","path":"/status","value":{"count":0,"Untagged":""}}]`,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			data, err := For(tc.obj, &tc.before, &tc.after).Data(nil)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, string(data)); diff != "" {
				t.Errorf("patch (-want +got):\n%s", diff)
			}
			var ops []map[string]any
			if err := json.Unmarshal(data, &ops); err != nil {
				t.Errorf("the patch is not JSON: %v", err)
			}
		})
	}
}

// For sets Over from the object read when, and only when, its status was empty; a
// writer that finds the object changed sets it itself.
func TestForSetsOverOnlyForAnObjectReadWithoutAStatus(t *testing.T) {
	cases := map[string]struct {
		before status
		want   string
	}{
		"read without a status":                    {before: status{}, want: "7"},
		"read with a status":                       {before: status{Count: 1}, want: ""},
		"read with a status holding an empty list": {before: status{Conditions: []metav1.Condition{}}, want: ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := For(read, &tc.before, &status{Count: 2}).Over; got != tc.want {
				t.Errorf("Over %q, want %q", got, tc.want)
			}
		})
	}
	p := For(read, &status{Count: 1}, &status{Count: 2})
	p.Over = "9"
	data, err := p.Data(nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := `[` + uidTest + `,{"op":"test","path":"/metadata/resourceVersion","value":"9"},{"op":"add","path":"/status","value":{"count":2,"Untagged":""}}]`; string(data) != want {
		t.Errorf("a writer's Over: patch %s, want %s", data, want)
	}
}

func TestPatchTypeIsJSONPatch(t *testing.T) {
	if got := For(read, &status{}, &status{}).Type(); got != types.JSONPatchType {
		t.Errorf("Type() = %q, want %q", got, types.JSONPatchType)
	}
}

// Paths are written without escaping (encodeOps), so a JSON name that would need it
// (~ and / are ~0 and ~1 in a JSON pointer; " and \ would break the JSON) is refused
// rather than sent as another path, and only when the field would go; fields that
// encoding/json would encode otherwise than fieldOps (embedded, omitzero) are refused
// whatever changed. (encoding/json itself takes a tag with " or \ for invalid and uses
// the Go name: refusing it errs on the safe side.)
func TestFieldsThePatchCannotSayAreRefused(t *testing.T) {
	type tilde struct {
		A string `json:"a~b,omitempty"`
		B string `json:"b"`
	}
	type slash struct {
		A string `json:"a/b,omitempty"`
		B string `json:"b"`
	}
	type quote struct {
		A string `json:"a\"b,omitempty"`
		B string `json:"b"`
	}
	type backslash struct {
		A string `json:"a\\b,omitempty"`
		B string `json:"b"`
	}
	type Inner struct {
		B string `json:"b,omitempty"`
	}
	type embedded struct {
		Inner
		A string `json:"a,omitempty"`
	}
	type omitzero struct {
		A time.Time `json:"a,omitzero"`
		B string    `json:"b,omitempty"`
	}
	cases := map[string]struct {
		data func(changed bool) ([]byte, error)
		// whenChanged: refused only when the field changed (the name is checked when it
		// would go); else refused whatever changed.
		whenChanged bool
		want        string
	}{
		"a name with ~": {whenChanged: true, want: `"a~b" needs escaping`, data: func(changed bool) ([]byte, error) {
			b, a := tilde{B: "x"}, tilde{B: "x"}
			if changed {
				a.A = "x"
			}
			return For(read, &b, &a).Data(nil)
		}},
		"a name with /": {whenChanged: true, want: `"a/b" needs escaping`, data: func(changed bool) ([]byte, error) {
			b, a := slash{B: "x"}, slash{B: "x"}
			if changed {
				a.A = "x"
			}
			return For(read, &b, &a).Data(nil)
		}},
		`a name with "`: {whenChanged: true, want: `needs escaping`, data: func(changed bool) ([]byte, error) {
			b, a := quote{B: "x"}, quote{B: "x"}
			if changed {
				a.A = "x"
			}
			return For(read, &b, &a).Data(nil)
		}},
		`a name with \`: {whenChanged: true, want: `needs escaping`, data: func(changed bool) ([]byte, error) {
			b, a := backslash{B: "x"}, backslash{B: "x"}
			if changed {
				a.A = "x"
			}
			return For(read, &b, &a).Data(nil)
		}},
		"an embedded struct": {want: "embedded or omitzero fields are not supported", data: func(changed bool) ([]byte, error) {
			b, a := embedded{A: "x"}, embedded{A: "x"}
			if changed {
				a.A = "y"
			}
			return For(read, &b, &a).Data(nil)
		}},
		"an omitzero field": {want: "embedded or omitzero fields are not supported", data: func(changed bool) ([]byte, error) {
			b, a := omitzero{B: "x"}, omitzero{B: "x"}
			if changed {
				a.B = "y"
			}
			return For(read, &b, &a).Data(nil)
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			data, err := tc.data(true)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("changed: patch %s, error %v; want an error saying %q", data, err, tc.want)
			}
			data, err = tc.data(false)
			if refused := err != nil; refused == tc.whenChanged {
				t.Errorf("unchanged: patch %s, error %v; want refused: %v", data, err, !tc.whenChanged)
			}
		})
	}
}
