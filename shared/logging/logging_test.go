package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/backbone-sync/backbone/shared/logging"
)

func TestCloudLoggingShape(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := logging.New(&buf, slog.LevelDebug)
	r := httptest.NewRequest("POST", "/", nil)
	r.Header.Set("X-Cloud-Trace-Context", "105445aa7843bc8bf206b12000100000/1;o=1")
	ctx := logging.WithTrace(context.Background(), logging.TraceFromRequest(r, "proj"))
	log.ErrorContext(ctx, "dead letter archived", "stage", "suitex")
	log.Debug("d")
	log.Warn("w")
	log.Info("i")
	var lines []map[string]any
	dec := json.NewDecoder(&buf)
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 4 {
		t.Fatalf("%d lines", len(lines))
	}
	first := lines[0]
	if first["severity"] != "ERROR" || first["message"] != "dead letter archived" || first["stage"] != "suitex" ||
		first[logging.TraceKey] != "projects/proj/traces/105445aa7843bc8bf206b12000100000" || first["level"] != nil || first["msg"] != nil {
		t.Errorf("line %v", first)
	}
	for i, want := range []string{"DEBUG", "WARNING", "INFO"} {
		if lines[i+1]["severity"] != want || lines[i+1][logging.TraceKey] != nil {
			t.Errorf("line %d = %v", i+1, lines[i+1])
		}
	}
	r2 := httptest.NewRequest("POST", "/", nil)
	r2.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if got := logging.TraceFromRequest(r2, "p"); got != "projects/p/traces/4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("traceparent: %q", got)
	}
}
