package suitex_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/logging"
	"github.com/backbone-sync/backbone/shared/logging/logtest"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/sink/sinktest"
	"github.com/backbone-sync/backbone/shared/sink/suitex"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/testdb"
)

const secret = "sx-SIGNING-SECRET-6f0e1d2c3b4a59687766554433221100"

var fixed = time.Date(2026, 3, 13, 20, 0, 0, 0, time.UTC)

func mergedEvent(rid, source string, version uint64) event.Merged {
	ref := "gs://bucket/snapshots/customer/" + rid + ".json"
	ts := event.NewTime(fixed)
	return event.Merged{ID: uuid.NewString(), RecordType: "customer", RecordID: rid, Source: source,
		Timestamp: ts, BaseVersion: version - 1, Version: version,
		Changes:         map[string]json.RawMessage{"email": json.RawMessage(`"ada@example.com"`), "phone": json.RawMessage(`null`)},
		FullSnapshotRef: &ref,
		Conflicts:       []event.Conflict{{Field: "phone", Resolution: "incoming_won", Rule: "later_timestamp", OtherSource: "netsuite", OtherVersion: version - 1, OtherTimestamp: &ts}},
	}
}

func pushMsg(t *testing.T, ev event.Merged) message.Message {
	t.Helper()
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return message.Message{Data: data, ID: uuid.NewString(),
		Attributes: map[string]string{"env": "sandbox", "source": ev.Source, "record_type": ev.RecordType, "event_id": ev.ID}}
}

func newTarget(t *testing.T, base string, timeout time.Duration, opts ...suitex.Option) *suitex.Target {
	t.Helper()
	tgt, err := suitex.New(config.SuiteX{BaseURL: base, SigningSecret: secret, Timeout: timeout}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return tgt
}

func TestSignatureAndIdempotencyKeyAreExact(t *testing.T) {
	t.Parallel()
	fake := &sinktest.SuiteX{Secret: secret, Now: func() time.Time { return fixed.Add(3 * time.Second) }}
	srv := fake.Start(t)
	tgt := newTarget(t, srv.URL+"/", time.Second, suitex.WithClock(func() time.Time { return fixed }))
	ev := mergedEvent("C-1001", "netsuite", 4)
	if err := tgt.Deliver(context.Background(), ev); err != nil {
		t.Fatalf("deliver: %v (fake refused: %v)", err, fake.Refused())
	}
	reqs := fake.Requests()
	if len(reqs) != 1 {
		t.Fatalf("requests %+v refused %v", reqs, fake.Refused())
	}
	got := reqs[0]
	// The body is the merged event exactly as the backbone defines it.
	want, _ := json.Marshal(ev)
	if !bytes.Equal(got.Body, want) {
		t.Fatalf("body\n got %s\nwant %s", got.Body, want)
	}
	var back event.Merged
	if err := json.Unmarshal(got.Body, &back); err != nil || back.ID != ev.ID || back.Version != 4 || len(back.Conflicts) != 1 {
		t.Fatalf("body does not round-trip: %+v %v", back, err)
	}
	// Signature recomputed here, byte for byte: t=unix,v1=hex(HMAC-SHA256(secret, t + "." + body)).
	ts := "1773432000" // fixed in unix seconds
	if fixed.Unix() != 1773432000 {
		t.Fatalf("fixed is %d", fixed.Unix())
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + string(want)))
	if wantSig := "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil)); got.Signature != wantSig {
		t.Fatalf("signature\n got %s\nwant %s", got.Signature, wantSig)
	}
	if got.IdempotencyKey != ev.ID {
		t.Fatalf("Idempotency-Key %q, want %q", got.IdempotencyKey, ev.ID)
	}
	if len(fake.Event(ev.ID)) == 0 {
		t.Fatal("fake did not store the event")
	}
}

func TestFakeSuiteXRefusesBadSignaturesAndKeys(t *testing.T) {
	t.Parallel()
	fake := &sinktest.SuiteX{Secret: secret}
	srv := fake.Start(t)

	wrong, err := suitex.New(config.SuiteX{BaseURL: srv.URL, SigningSecret: "not-the-secret"})
	if err != nil {
		t.Fatal(err)
	}
	err = wrong.Deliver(context.Background(), mergedEvent("C-1", "netsuite", 1))
	if f, ok := failure.As(err); !ok || f.Retryable || f.Reason != "http_401" {
		t.Fatalf("wrong secret: %v", err)
	}
	stale := newTarget(t, srv.URL, time.Second, suitex.WithClock(func() time.Time { return time.Now().Add(-time.Hour) }))
	if err := stale.Deliver(context.Background(), mergedEvent("C-2", "netsuite", 1)); err == nil {
		t.Fatal("an hour-old signature was accepted")
	}
	// A correctly signed body under a key that is not the event id.
	body := []byte(`{"id":"` + uuid.NewString() + `"}`)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/events", bytes.NewReader(body))
	req.Header.Set("X-Backbone-Signature", suitex.Signature([]byte(secret), time.Now(), body))
	req.Header.Set("Idempotency-Key", "something-else")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("mismatched idempotency key answered %d", resp.StatusCode)
	}
	if got := fake.Refused(); len(got) != 3 || got[0] != "signature mismatch" || got[1] != "t is outside the tolerance" {
		t.Fatalf("refused %v", got)
	}
	if len(fake.Requests()) != 0 {
		t.Fatal("a refused request was recorded as accepted")
	}
}

// 409 means SuiteX already applied the event: a second delivery of the same
// event (the Runner skips it, but Retry after a lost audit may not) succeeds.
func TestConflictIsSuccess(t *testing.T) {
	t.Parallel()
	fake := &sinktest.SuiteX{Secret: secret}
	srv := fake.Start(t)
	tgt := newTarget(t, srv.URL, time.Second)
	ev := mergedEvent("C-1", "netsuite", 1)
	for i := range 2 {
		if err := tgt.Deliver(context.Background(), ev); err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
	}
	if n := len(fake.Requests()); n != 2 {
		t.Fatalf("%d requests", n)
	}
}

func TestSuiteXClassification(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	var logs logtest.Buffer
	log := logging.New(&logs, slog.LevelDebug)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	fake := &sinktest.SuiteX{Secret: secret}
	fake.Respond = func(r *http.Request, body []byte) (int, string) {
		var ev event.Merged
		_ = json.Unmarshal(body, &ev)
		switch ev.RecordID {
		case "R-200":
			return 200, `{"ok":true}`
		case "R-204":
			return 204, ""
		case "R-409":
			return 409, `{"error":"already applied"}`
		case "R-400":
			return 400, `{"error":"unknown field phone"}`
		case "R-400-echo":
			return 400, `{"error":"bad","echo":"` + r.Header.Get("X-Backbone-Signature") + " " + secret + `"}`
		case "R-401":
			return 401, `{"error":"bad signature"}`
		case "R-404":
			return 404, ""
		case "R-429":
			return 429, `{"error":"slow down"}`
		case "R-500":
			return 500, strings.Repeat("x", 5000)
		case "R-503":
			return 503, "unavailable"
		case "R-timeout":
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return 504, ""
		}
		return 418, ""
	}
	srv := fake.Start(t)
	r := sink.NewRunner(config.Sandbox, newTarget(t, srv.URL, 400*time.Millisecond), d.Store, log)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	_ = l.Close()
	refused := sink.NewRunner(config.Sandbox, newTarget(t, closed, time.Second), d.Store, log)

	cases := []struct {
		rid       string
		runner    *sink.Runner
		outcome   string
		reason    string
		retryable bool
		detail    string
	}{
		{"R-200", r, store.OutcomeDelivered, "", false, ""},
		{"R-204", r, store.OutcomeDelivered, "", false, ""},
		{"R-409", r, store.OutcomeDelivered, "", false, ""},
		{"R-400", r, store.OutcomeFailed, "http_400", false, "unknown field phone"},
		{"R-400-echo", r, store.OutcomeFailed, "http_400", false, sink.Redacted},
		{"R-401", r, store.OutcomeFailed, "http_401", false, "bad signature"},
		{"R-404", r, store.OutcomeFailed, "http_404", false, "HTTP 404"},
		{"R-429", r, store.OutcomeFailed, "http_429", true, "slow down"},
		{"R-500", r, store.OutcomeFailed, "http_500", true, "more bytes"},
		{"R-503", r, store.OutcomeFailed, "http_503", true, "unavailable"},
		{"R-timeout", r, store.OutcomeFailed, sink.ReasonTimeout, true, ""},
		{"R-refused", refused, store.OutcomeFailed, sink.ReasonConnectionRefused, true, ""},
	}
	var (
		mu     sync.Mutex
		report []string
	)
	t.Run("cases", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.rid, func(t *testing.T) {
				t.Parallel()
				ev := mergedEvent(tc.rid, "netsuite", 1)
				out, err := tc.runner.Deliver(context.Background(), pushMsg(t, ev))
				if out != tc.outcome {
					t.Fatalf("outcome %q, want %q (%v)", out, tc.outcome, err)
				}
				rows, aerr := d.Store.AuditForEvent(context.Background(), ev.ID)
				if aerr != nil || len(rows) != 1 || rows[0].Outcome != tc.outcome || rows[0].Stage != store.StageSuiteX {
					t.Fatalf("audit %+v %v", rows, aerr)
				}
				if tc.outcome == store.OutcomeDelivered {
					if err != nil {
						t.Fatal(err)
					}
					return
				}
				f, ok := failure.As(err)
				if !ok || f.Reason != tc.reason || f.Retryable != tc.retryable || f.Stage != store.StageSuiteX || f.EventID != ev.ID {
					t.Fatalf("failure %+v, want %s retryable %v", err, tc.reason, tc.retryable)
				}
				if !strings.Contains(f.Detail, tc.detail) || len(f.Detail) > 2100 {
					t.Fatalf("detail (%d bytes) lacks %q: %s", len(f.Detail), tc.detail, f.Detail)
				}
				mu.Lock()
				report = append(report, f.Detail, rows[0].Detail)
				mu.Unlock()
			})
		}
	})
	all := logs.String() + strings.Join(report, "\n")
	if strings.Contains(all, secret) {
		t.Error("signing secret leaked into logs, failures or audit")
	}
	if !strings.Contains(logs.String(), "delivery failed") {
		t.Fatal("no failure was logged: the leak check saw nothing")
	}
}

func TestEchoFromSuiteXIsNotSentToSuiteX(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	fake := &sinktest.SuiteX{Secret: secret}
	srv := fake.Start(t)
	r := sink.NewRunner(config.Sandbox, newTarget(t, srv.URL, time.Second), d.Store, nil)
	out, err := r.Deliver(context.Background(), pushMsg(t, mergedEvent("C-1", "suitex", 2)))
	if err != nil || out != store.OutcomeSkippedEcho || len(fake.Requests()) != 0 {
		t.Fatalf("%q %v, %d requests", out, err, len(fake.Requests()))
	}
}

func TestNewRejectsBadConfiguration(t *testing.T) {
	t.Parallel()
	for _, c := range []config.SuiteX{
		{BaseURL: "", SigningSecret: secret},
		{BaseURL: "suitex.example", SigningSecret: secret},
		{BaseURL: "https://suitex.example?x=1", SigningSecret: secret},
		{BaseURL: "https://suitex.example"},
	} {
		_, err := suitex.New(c)
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("%+v: %v", c.BaseURL, err)
		}
	}
}

func BenchmarkSignature(b *testing.B) {
	body, _ := json.Marshal(mergedEvent("C-1", "netsuite", 3))
	key := []byte(secret)
	b.ReportAllocs()
	for b.Loop() {
		suitex.Signature(key, fixed, body)
	}
}
