package memlimit

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestApply(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		ratio   float64
		want    Decision
		wantSet int64 // -1: SetMemoryLimit must not be called
		wantErr bool
	}{
		{
			name:    "a 512Mi container limit gives the heap 90% of it",
			env:     map[string]string{EnvVar: "536870912"},
			ratio:   DefaultRatio,
			want:    Decision{Limit: 483183820, Source: "90% of CONTAINER_MEMORY_LIMIT"},
			wantSet: 483183820,
		},
		{
			name:    "an explicit GOMEMLIMIT wins over the container limit",
			env:     map[string]string{EnvVar: "536870912", "GOMEMLIMIT": "300MiB"},
			ratio:   DefaultRatio,
			want:    Decision{Source: "GOMEMLIMIT is set"},
			wantSet: -1,
		},
		{
			name:    "no container limit passed in leaves the runtime alone",
			env:     map[string]string{},
			ratio:   DefaultRatio,
			want:    Decision{Source: "CONTAINER_MEMORY_LIMIT is not set"},
			wantSet: -1,
		},
		{
			name:    "a limit that is not a number of bytes is an error, not a guess",
			env:     map[string]string{EnvVar: "512Mi"},
			ratio:   DefaultRatio,
			wantSet: -1,
			wantErr: true,
		},
		{
			name:    "a zero limit is an error",
			env:     map[string]string{EnvVar: "0"},
			ratio:   DefaultRatio,
			wantSet: -1,
			wantErr: true,
		},
		{
			name:    "a ratio above 1 is an error",
			env:     map[string]string{EnvVar: "1000"},
			ratio:   1.5,
			wantSet: -1,
			wantErr: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := int64(-1)
			got, err := Apply(func(k string) string { return tc.env[k] }, func(v int64) int64 { set = v; return 0 }, tc.ratio)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error = %v, want error %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
			if set != tc.wantSet {
				t.Errorf("SetMemoryLimit(%d), want %d", set, tc.wantSet)
			}
		})
	}
}
