package manager

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap/zapcore"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// recordingSink is a logr sink that keeps what reaches it.
type recordingSink struct {
	withValues *int
	lines      *[][]any
	names      string
}

func (r recordingSink) Init(logr.RuntimeInfo)  {}
func (r recordingSink) Enabled(level int) bool { return true }
func (r recordingSink) Info(level int, msg string, kv ...any) {
	*r.lines = append(*r.lines, append([]any{r.names + msg}, kv...))
}
func (r recordingSink) Error(err error, msg string, kv ...any) {
	*r.lines = append(*r.lines, append([]any{r.names + msg, err.Error()}, kv...))
}
func (r recordingSink) WithValues(kv ...any) logr.LogSink { *r.withValues++; return r }
func (r recordingSink) WithName(name string) logr.LogSink { r.names += name + "/"; return r }

func TestLogValuesReachTheSinkOnlyWithALine(t *testing.T) {
	var withValues int
	var lines [][]any
	log := CapVerbosity(logr.New(recordingSink{withValues: &withValues, lines: &lines}), 5)

	reconcile := log.WithValues("controller", "cdusergrant").WithName("rotate").WithValues("namespace", "ns", "name", "acme")
	quiet := reconcile.WithValues("reconcileID", "1")
	loud := reconcile.WithValues("reconcileID", "2") // made from the same parent: no shared backing array
	_ = quiet.V(1)
	if withValues != 0 {
		t.Fatalf("the sink's WithValues was called %d times before any line was written", withValues)
	}
	loud.Info("Stored the new refresh token", "rotation", 3)
	loud.Error(errors.New("conflict"), "Writing status failed")
	quiet.V(6).Info("capped")
	want := [][]any{
		{"rotate/Stored the new refresh token", "controller", "cdusergrant", "namespace", "ns", "name", "acme", "reconcileID", "2", "rotation", 3},
		{"rotate/Writing status failed", "conflict", "controller", "cdusergrant", "namespace", "ns", "name", "acme", "reconcileID", "2"},
	}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
}

// TestLogLinesReadAsZapWritesThem compares a line through the capped logger with the same
// line through zap's own WithValues.
func TestLogLinesReadAsZapWritesThem(t *testing.T) {
	line := func(log logr.Logger, buf *bytes.Buffer) map[string]any {
		log.WithValues("controller", "cdusergrant").WithName("rotate").WithValues("name", "acme").Info("Rotated", "count", 2)
		var got map[string]any
		if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
			t.Fatalf("%v: %q", err, buf.String())
		}
		delete(got, "ts")
		return got
	}
	opts := func(buf *bytes.Buffer) zap.Options {
		return zap.Options{DestWriter: buf, Encoder: zapcore.NewJSONEncoder(zapcore.EncoderConfig{TimeKey: "ts", MessageKey: "msg", NameKey: "logger", EncodeTime: zapcore.EpochTimeEncoder})}
	}
	var direct, capped bytes.Buffer
	want := line(zap.New(zap.UseFlagOptions(ptr(opts(&direct)))), &direct)
	got := line(Logger(opts(&capped)), &capped)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("line (-zap +capped):\n%s", diff)
	}
	if !strings.Contains(capped.String(), `"controller":"cdusergrant"`) {
		t.Errorf("line without its values: %s", capped.String())
	}
}

func ptr[T any](v T) *T { return &v }
