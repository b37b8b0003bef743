package manager

import (
	"slices"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// MaxLogVerbosity is the highest V-level that is ever logged. client-go logs request
// URLs at 6, headers at 7 and request and response bodies — Secrets included — at 8 and
// above, through the logger it finds in the context, which is the manager's.
const MaxLogVerbosity = 5

// Logger is the operator's logger for the given zap options (the --zap-* flags), capped
// at MaxLogVerbosity.
func Logger(opts zap.Options) logr.Logger {
	return CapVerbosity(zap.New(zap.UseFlagOptions(&opts)), MaxLogVerbosity)
}

// CapVerbosity returns l with every V-level above max switched off, whatever the log
// level flag says.
func CapVerbosity(l logr.Logger, max int) logr.Logger {
	return logr.New(cappedSink{LogSink: l.GetSink(), max: max})
}

// cappedSink also holds back the key/value pairs given to WithValues until a line is
// written. controller-runtime gives every reconcile's logger four of them, and zap encodes
// them on the spot (a copy of its encoder per call: 4 % of the manager's allocations at
// ten thousand grants), although a routine rotation writes no line at all.
type cappedSink struct {
	logr.LogSink
	max    int
	values []any
}

func (s cappedSink) Enabled(level int) bool { return level <= s.max && s.LogSink.Enabled(level) }

func (s cappedSink) Info(level int, msg string, kv ...any) {
	if level <= s.max {
		s.LogSink.Info(level, msg, s.with(kv)...)
	}
}

func (s cappedSink) Error(err error, msg string, kv ...any) {
	s.LogSink.Error(err, msg, s.with(kv)...)
}

// with returns the held-back pairs followed by kv, in the order zap would have written
// them had they been given to its WithValues.
func (s cappedSink) with(kv []any) []any {
	if len(s.values) == 0 {
		return kv
	}
	return slices.Concat(s.values, kv)
}

// WithValues copies, so that two loggers made from one never share a backing array.
func (s cappedSink) WithValues(kv ...any) logr.LogSink {
	s.values = slices.Concat(s.values, kv)
	return s
}

func (s cappedSink) WithName(name string) logr.LogSink {
	s.LogSink = s.LogSink.WithName(name)
	return s
}

// WithCallDepth keeps caller information right when the sink supports it.
func (s cappedSink) WithCallDepth(depth int) logr.LogSink {
	if d, ok := s.LogSink.(logr.CallDepthLogSink); ok {
		s.LogSink = d.WithCallDepth(depth)
	}
	return s
}
