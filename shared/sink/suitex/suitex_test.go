package suitex_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/internal/fake/suitexfake"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/logging"
	"github.com/backbone-sync/backbone/shared/logging/logtest"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/sink/suitex"
	"github.com/backbone-sync/backbone/shared/sink/targettest"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
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

// delivery is what the Runner hands the target for ev: the key is the event
// id and the first 16 hex of the SHA-256 of the canonical changes.
func delivery(t *testing.T, ev event.Merged, since uint64) sink.Delivery {
	t.Helper()
	b, err := json.Marshal(ev.Changes)
	if err != nil {
		t.Fatal(err)
	}
	canon, err := event.Canonical(b)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(canon)
	return sink.Delivery{Merged: ev, SinceVersion: since, IdempotencyKey: ev.ID + ":" + hex.EncodeToString(sum[:8])}
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
	fake := &suitexfake.Server{Secret: secret, Now: func() time.Time { return fixed.Add(3 * time.Second) }}
	srv := fake.Start(t)
	tgt := newTarget(t, srv.URL+"/", time.Second, suitex.WithClock(func() time.Time { return fixed }))
	ev := mergedEvent("C-1001", "netsuite", 4)
	d := delivery(t, ev, 2)
	if err := tgt.Deliver(context.Background(), d); err != nil {
		t.Fatalf("deliver: %v (fake refused: %v)", err, fake.Refused())
	}
	reqs := fake.Requests()
	if len(reqs) != 1 {
		t.Fatalf("requests %+v refused %v", reqs, fake.Refused())
	}
	got := reqs[0]
	// The body is the merged event of version N exactly as the backbone
	// defines it, plus since_version.
	evJSON, _ := json.Marshal(ev)
	want := append(evJSON[:len(evJSON)-1:len(evJSON)-1], []byte(`,"since_version":2}`)...)
	if !bytes.Equal(got.Body, want) {
		t.Fatalf("body\n got %s\nwant %s", got.Body, want)
	}
	var back struct {
		event.Merged
		SinceVersion *uint64 `json:"since_version"`
	}
	if err := json.Unmarshal(got.Body, &back); err != nil || back.ID != ev.ID || back.Version != 4 || len(back.Conflicts) != 1 ||
		back.SinceVersion == nil || *back.SinceVersion != 2 {
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
	// The key is the Runner's: {event id of N}:{digest of the changes sent}.
	sum := sha256.Sum256([]byte(`{"email":"ada@example.com","phone":null}`))
	if wantKey := ev.ID + ":" + hex.EncodeToString(sum[:8]); got.IdempotencyKey != wantKey || d.IdempotencyKey != wantKey {
		t.Fatalf("Idempotency-Key %q, want %q", got.IdempotencyKey, wantKey)
	}
	if len(fake.Event(got.IdempotencyKey)) == 0 {
		t.Fatal("fake did not store the event")
	}
	if rec := fake.Record("customer", "C-1001"); string(rec["email"]) != `"ada@example.com"` {
		t.Fatalf("SuiteX's record %v", rec)
	}
}

func TestFakeSuiteXRefusesBadSignaturesAndKeys(t *testing.T) {
	t.Parallel()
	fake := &suitexfake.Server{Secret: secret}
	srv := fake.Start(t)

	wrong, err := suitex.New(config.SuiteX{BaseURL: srv.URL, SigningSecret: "not-the-secret"})
	if err != nil {
		t.Fatal(err)
	}
	err = wrong.Deliver(context.Background(), delivery(t, mergedEvent("C-1", "netsuite", 1), 0))
	if f, ok := failure.As(err); !ok || f.Retryable || f.Reason != "http_401" {
		t.Fatalf("wrong secret: %v", err)
	}
	stale := newTarget(t, srv.URL, time.Second, suitex.WithClock(func() time.Time { return time.Now().Add(-time.Hour) }))
	if err := stale.Deliver(context.Background(), delivery(t, mergedEvent("C-2", "netsuite", 1), 0)); err == nil {
		t.Fatal("an hour-old signature was accepted")
	}
	// A correctly signed body under a key that is not {event id}:{16 hex}:
	// another string, the bare event id (the old key), a digest too short.
	id := uuid.NewString()
	body := []byte(`{"id":"` + id + `"}`)
	for _, key := range []string{"something-else", id, id + ":0123abcd", id + ":0123456789ABCDEF"} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/events", bytes.NewReader(body))
		req.Header.Set("X-Backbone-Signature", suitex.Signature([]byte(secret), time.Now(), body))
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("idempotency key %q answered %d", key, resp.StatusCode)
		}
	}
	if got := fake.Refused(); len(got) != 6 || got[0] != "signature mismatch" || got[1] != "t is outside the tolerance" ||
		!strings.Contains(got[2], "Idempotency-Key") || !strings.Contains(got[5], "Idempotency-Key") {
		t.Fatalf("refused %v", got)
	}
	if len(fake.Requests()) != 0 {
		t.Fatal("a refused request was recorded as accepted")
	}
}

// 409 means SuiteX already applied the request: a second delivery of the
// same fields at the same version (Retry after an audit was lost) succeeds
// without being applied twice. A delivery of other fields at the same
// version has another key, so SuiteX's 409 cannot swallow it.
func TestConflictIsSuccess(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	applied := 0 // the fake runs Hook only for a key it has not seen
	fake := &suitexfake.Server{Secret: secret, Hook: func(_ suitexfake.Request, _ func()) (int, string) {
		mu.Lock()
		applied++
		mu.Unlock()
		return 0, ""
	}}
	srv := fake.Start(t)
	tgt := newTarget(t, srv.URL, time.Second)
	ev := mergedEvent("C-1", "netsuite", 1)
	for i := range 2 {
		if err := tgt.Deliver(context.Background(), delivery(t, ev, 0)); err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
	}
	other := ev
	other.Changes = map[string]json.RawMessage{"nickname": json.RawMessage(`"ada"`)}
	if err := tgt.Deliver(context.Background(), delivery(t, other, 0)); err != nil {
		t.Fatalf("other fields at the same version: %v", err)
	}
	reqs := fake.Requests()
	if len(reqs) != 3 || reqs[0].IdempotencyKey != reqs[1].IdempotencyKey || reqs[2].IdempotencyKey == reqs[0].IdempotencyKey {
		t.Fatalf("requests %+v", reqs)
	}
	mu.Lock()
	defer mu.Unlock()
	if applied != 2 {
		t.Fatalf("%d requests applied, want 2 (the repeat answered 409)", applied)
	}
	if rec := fake.Record("customer", "C-1"); string(rec["email"]) != `"ada@example.com"` || string(rec["nickname"]) != `"ada"` {
		t.Fatalf("SuiteX's record %v: the second key's fields were not applied", rec)
	}
	if n := len(fake.Event(reqs[2].IdempotencyKey)); n == 0 {
		t.Fatal("the delivery of other fields was not applied")
	}
}

func TestSuiteXClassification(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	var logs logtest.Buffer
	log := logging.New(&logs, slog.LevelDebug)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	fake := &suitexfake.Server{Secret: secret}
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
	refused := sink.NewRunner(config.Sandbox, newTarget(t, targettest.ClosedURL(t), time.Second), d.Store, log)

	targettest.RunClassification(t, targettest.Classification{Store: d.Store, Stage: store.StageSuiteX, Logs: &logs, Secrets: []string{secret},
		Event: func(rid string) event.Merged { return mergedEvent(rid, "netsuite", 1) },
		Answers: []targettest.Answer{
			{RecordID: "R-200", Runner: r, Outcome: store.OutcomeDelivered, Audited: store.OutcomeDelivered},
			{RecordID: "R-204", Runner: r, Outcome: store.OutcomeDelivered, Audited: store.OutcomeDelivered},
			{RecordID: "R-409", Runner: r, Outcome: store.OutcomeDelivered, Audited: store.OutcomeDelivered},
			{RecordID: "R-400", Runner: r, Outcome: store.OutcomeFailed, Audited: store.OutcomeRefused, Reason: "http_400", Detail: "unknown field phone"},
			{RecordID: "R-400-echo", Runner: r, Outcome: store.OutcomeFailed, Audited: store.OutcomeRefused, Reason: "http_400", Detail: sink.Redacted},
			{RecordID: "R-401", Runner: r, Outcome: store.OutcomeFailed, Audited: store.OutcomeRefused, Reason: "http_401", Detail: "bad signature"},
			{RecordID: "R-404", Runner: r, Outcome: store.OutcomeFailed, Audited: store.OutcomeRefused, Reason: "http_404", Detail: "HTTP 404"},
			{RecordID: "R-429", Runner: r, Outcome: store.OutcomeFailed, Audited: store.OutcomeRefused, Reason: "http_429", Retryable: true, Detail: "slow down"},
			{RecordID: "R-500", Runner: r, Outcome: store.OutcomeFailed, Audited: store.OutcomeFailed, Reason: "http_500", Retryable: true, Detail: "more bytes"},
			{RecordID: "R-503", Runner: r, Outcome: store.OutcomeFailed, Audited: store.OutcomeFailed, Reason: "http_503", Retryable: true, Detail: "unavailable"},
			{RecordID: "R-timeout", Runner: r, Outcome: store.OutcomeFailed, Audited: store.OutcomeFailed, Reason: sink.ReasonTimeout, Retryable: true},
			{RecordID: "R-refused", Runner: refused, Outcome: store.OutcomeFailed, Audited: store.OutcomeRefused, Reason: sink.ReasonConnectionRefused, Retryable: true},
		}})
}

// TestEchoFromSuiteXIsNotSentToSuiteX: SuiteX's own change, which SuiteX
// reported itself, is not sent back to it (skipped_echo, no request).
func TestEchoFromSuiteXIsNotSentToSuiteX(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	fake := &suitexfake.Server{Secret: secret}
	srv := fake.Start(t)
	r := sink.NewRunner(config.Sandbox, newTarget(t, srv.URL, time.Second), d.Store, nil)
	v1 := mergedEvent("C-1", "suitex", 1)
	targettest.StoreMerged(t, d.Store, v1)
	out, err := r.Deliver(context.Background(), targettest.Message(t, v1))
	if err != nil || out != store.OutcomeSkippedEcho || len(fake.Requests()) != 0 {
		t.Fatalf("%q %v, %d requests", out, err, len(fake.Requests()))
	}
	if rec := fake.Record("customer", "C-1"); rec != nil {
		t.Fatalf("SuiteX's record changed: %v", rec)
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
