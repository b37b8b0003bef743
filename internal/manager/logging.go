package manager

import (
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

type cappedSink struct {
	logr.LogSink
	max int
}

func (s cappedSink) Enabled(level int) bool { return level <= s.max && s.LogSink.Enabled(level) }

func (s cappedSink) Info(level int, msg string, kv ...any) {
	if level <= s.max {
		s.LogSink.Info(level, msg, kv...)
	}
}

func (s cappedSink) WithValues(kv ...any) logr.LogSink {
	return cappedSink{LogSink: s.LogSink.WithValues(kv...), max: s.max}
}

func (s cappedSink) WithName(name string) logr.LogSink {
	return cappedSink{LogSink: s.LogSink.WithName(name), max: s.max}
}

// WithCallDepth keeps caller information right when the sink supports it.
func (s cappedSink) WithCallDepth(depth int) logr.LogSink {
	if d, ok := s.LogSink.(logr.CallDepthLogSink); ok {
		return cappedSink{LogSink: d.WithCallDepth(depth), max: s.max}
	}
	return s
}
