// Package targettest is the conformance suite every sink target runs (like
// storetest for store drivers): whatever protocol it speaks, a target turns
// its system's answers into the failures the sink machinery relies on
// (SPEC §7) — 2xx delivered; 429, 5xx and timeouts retryable; other 4xx
// permanent; and whether the system may have applied the request, which
// decides whether the fields it carried become unknown. StoreMerged stores
// the events a delivery test's messages name, as the merge does.
package targettest

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/store"
)

// Timeout is the client timeout New must give the target: the suite's slow
// answer takes longer.
const Timeout = 300 * time.Millisecond

// New builds the target under test against baseURL, with Timeout.
type New func(t *testing.T, baseURL string) sink.Target

// Run runs the suite. The server it points the target at answers every
// request with the case's status; it checks no authentication, which each
// target's own tests do against its system's fake.
func Run(t *testing.T, newTarget New) {
	cases := []struct {
		name       string
		status     int
		header     http.Header
		slow       bool
		ok         bool
		retryable  bool
		notApplied bool
		retryAfter time.Duration
	}{
		{name: "2xx is delivered", status: http.StatusOK, ok: true},
		{name: "204 is delivered", status: http.StatusNoContent, ok: true},
		{name: "503 is retryable and may have been applied", status: http.StatusServiceUnavailable, retryable: true},
		{name: "500 is retryable and may have been applied", status: http.StatusInternalServerError, retryable: true},
		{name: "400 is permanent and was not applied", status: http.StatusBadRequest, notApplied: true},
		{name: "403 is permanent and was not applied", status: http.StatusForbidden, notApplied: true},
		{name: "429 is retryable, not applied, and says how long to wait", status: http.StatusTooManyRequests,
			header: http.Header{"Retry-After": {"7"}}, retryable: true, notApplied: true, retryAfter: 7 * time.Second},
		{name: "a timeout is retryable and may have been applied", status: http.StatusOK, slow: true, retryable: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var requests atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				if c.slow {
					select {
					case <-r.Context().Done():
					case <-time.After(3 * Timeout):
					}
				}
				for k, vs := range c.header {
					w.Header()[k] = vs
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(c.status)
				_, _ = w.Write([]byte(`{}`))
			}))
			t.Cleanup(srv.Close)
			tgt := newTarget(t, srv.URL)
			err := tgt.Deliver(context.Background(), delivery())
			if requests.Load() < 1 {
				t.Fatalf("no request reached the system")
			}
			if c.ok {
				if err != nil {
					t.Fatalf("HTTP %d: %v, want delivered", c.status, err)
				}
				return
			}
			f, ok := failure.As(err)
			if !ok {
				t.Fatalf("HTTP %d: %v, want a *failure.Failure", c.status, err)
			}
			if f.Retryable != c.retryable || f.NotApplied != c.notApplied || f.Reason == "" || f.Stage != tgt.Name() {
				t.Fatalf("HTTP %d (slow %v): %+v, want retryable %v, not applied %v, a reason, stage %s",
					c.status, c.slow, f, c.retryable, c.notApplied, tgt.Name())
			}
			if c.retryAfter != 0 && f.RetryAfter != c.retryAfter {
				t.Fatalf("Retry-After: %s, want %s", f.RetryAfter, c.retryAfter)
			}
		})
	}
	t.Run("a connection never made was not applied", func(t *testing.T) {
		t.Parallel()
		f, ok := failure.As(newTarget(t, ClosedURL(t)).Deliver(context.Background(), delivery()))
		if !ok || !f.Retryable || !f.NotApplied {
			t.Fatalf("refused connection: %+v, want retryable and not applied", f)
		}
	})
	t.Run("its name is a delivery stage", func(t *testing.T) {
		t.Parallel()
		if n := newTarget(t, "http://127.0.0.1:1").Name(); n != store.StageNetSuite && n != store.StageSuiteX {
			t.Fatalf("name %q is not a delivery stage", n)
		}
	})
}

// delivery is one ordinary delivery: two fields at version 3.
func delivery() sink.Delivery {
	return sink.Delivery{
		Merged: event.Merged{ID: "0b6f3c1e-8d1f-4a57-9a43-2f0d7d6b1c55", RecordType: "customer", RecordID: "C-1001", Source: "suitex",
			Timestamp: event.NewTime(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)), BaseVersion: 2, Version: 3,
			Changes:   map[string]json.RawMessage{"email": json.RawMessage(`"ada@example.com"`), "phone": json.RawMessage(`null`)},
			Conflicts: []event.Conflict{}},
		SinceVersion:   1,
		IdempotencyKey: "0b6f3c1e-8d1f-4a57-9a43-2f0d7d6b1c55:0123456789abcdef",
	}
}

// ClosedURL is the base URL of a local port nothing listens on: a
// connection to it is refused, so the request was never applied.
func ClosedURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	return url
}
