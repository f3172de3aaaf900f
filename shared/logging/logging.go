// Package logging builds the structured JSON logger that Cloud Logging
// understands: `severity` instead of `level`, `message` instead of `msg`,
// and the request's trace in `logging.googleapis.com/trace`.
package logging

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
)

type traceKey struct{}

// TraceKey is the field Cloud Logging correlates with Cloud Trace.
const TraceKey = "logging.googleapis.com/trace"

// WithTrace returns ctx carrying the trace name (projects/P/traces/ID).
func WithTrace(ctx context.Context, trace string) context.Context {
	if trace == "" {
		return ctx
	}
	return context.WithValue(ctx, traceKey{}, trace)
}

// TraceFromRequest extracts the trace id from traceparent or
// X-Cloud-Trace-Context and qualifies it with the project.
func TraceFromRequest(r *http.Request, project string) string {
	id := ""
	if tp := r.Header.Get("traceparent"); tp != "" {
		if parts := strings.Split(tp, "-"); len(parts) >= 3 {
			id = parts[1]
		}
	}
	if id == "" {
		if h := r.Header.Get("X-Cloud-Trace-Context"); h != "" {
			id, _, _ = strings.Cut(h, "/")
		}
	}
	if id == "" {
		return ""
	}
	if project == "" {
		return id
	}
	return "projects/" + project + "/traces/" + id
}

// New returns a JSON logger for Cloud Logging writing to w.
func New(w io.Writer, level slog.Leveler) *slog.Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.LevelKey:
				return slog.String("severity", severity(a.Value.Any().(slog.Level)))
			case slog.MessageKey:
				a.Key = "message"
			case slog.TimeKey:
				a.Key = "time"
			}
			return a
		},
	})
	return slog.New(traceHandler{h})
}

func severity(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "ERROR"
	case l >= slog.LevelWarn:
		return "WARNING"
	case l >= slog.LevelInfo:
		return "INFO"
	default:
		return "DEBUG"
	}
}

// traceHandler adds the context's trace to every record.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if t, ok := ctx.Value(traceKey{}).(string); ok {
		r.AddAttrs(slog.String(TraceKey, t))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
