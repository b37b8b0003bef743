package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime/pprof"
	"sync/atomic"
	"testing"

	"github.com/google/pprof/profile"
	"k8s.io/client-go/rest"
)

// The API server's cold-start profile is its slices merged: every slice taken until the
// cold start ends counts, and the file is a profile pprof reads.
func TestTheAPIServerProfileMergesEverySliceUntilDone(t *testing.T) {
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		t.Fatal(err)
	}
	pprof.StopCPUProfile()
	done := make(chan struct{})
	var served atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/debug/pprof/profile" || r.URL.Query().Get("seconds") != "10" {
			http.NotFound(w, r)
			return
		}
		if served.Add(1) == 3 {
			close(done) // the cold start ends during the third slice
		}
		_, _ = w.Write(buf.Bytes())
	}))
	defer srv.Close()

	path := filepath.Join(t.TempDir(), "apiserver.pprof")
	if err := profileAPIServerUntil(&rest.Config{Host: srv.URL}, done, path); err != nil {
		t.Fatal(err)
	}
	if n := served.Load(); n != 3 {
		t.Errorf("%d slices taken, want 3", n)
	}
	slice, err := profile.Parse(bytes.NewReader(buf.Bytes()))
	if err != nil || slice.DurationNanos == 0 {
		t.Fatalf("a slice without a duration proves nothing: %v", err)
	}
	merged, err := readProfile(path)
	if err != nil {
		t.Fatal(err)
	}
	if merged.DurationNanos != 3*slice.DurationNanos {
		t.Errorf("the merged profile lasts %d ns, want three slices of %d", merged.DurationNanos, slice.DurationNanos)
	}
}
