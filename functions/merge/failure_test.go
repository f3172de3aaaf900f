package mergefunc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/merge"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql"
)

const good = `{"id":"0b6f3c1e-8d1f-4a57-9a43-2f0d7d6b1c55","record_type":"customer","record_id":"C-1001","source":"netsuite",` +
	`"timestamp":"2026-03-13T20:00:00.123456Z","base_version":0,"changes":{"email":"ada@example.com","phone":null}}`

// TestBadInput: every kind of bad raw event is parked on the error topic
// with its stable reason (not retryable), audited `rejected` with its
// message id, acked, and stores nothing.
func TestBadInput(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	edit := func(f func(m map[string]any)) string {
		m := map[string]any{}
		_ = json.Unmarshal([]byte(good), &m)
		f(m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	set := func(k string, v any) string { return edit(func(m map[string]any) { m[k] = v }) }
	del := func(k string) string { return edit(func(m map[string]any) { delete(m, k) }) }
	cases := []struct {
		name, data string
		attrs      map[string]string
		reason     string
	}{
		{"invalid json", `{"record_type":"customer",`, nil, event.ReasonInvalidJSON},
		{"empty data", ``, nil, event.ReasonInvalidJSON},
		{"not an object", `["customer"]`, nil, event.ReasonNotObject},
		{"missing field", del("record_id"), nil, event.ReasonMissingField},
		{"wrong type", set("record_id", 1001), nil, event.ReasonWrongType},
		{"unknown source", set("source", "salesforce"), nil, event.ReasonUnknownSource},
		{"wrong env attribute", good, map[string]string{"env": "production"}, failure.ReasonWrongEnv},
		{"300 KiB", set("changes", map[string]string{"blob": strings.Repeat("x", 300<<10)}), nil, event.ReasonTooLarge},
		{"control character in record_id", set("record_id", "C-\u0007"), nil, event.ReasonInvalidRecordID},
		{"unknown field", set("priority", "high"), nil, event.ReasonUnknownField},
		{"field name in another case", strings.Replace(good, `"source"`, `"SOURCE"`, 1), nil, event.ReasonUnknownField},
		{"negative base_version", strings.Replace(good, `"base_version":0`, `"base_version":-1`, 1), nil, event.ReasonInvalidBaseVersion},
		{"fractional base_version", strings.Replace(good, `"base_version":0`, `"base_version":0.5`, 1), nil, event.ReasonInvalidBaseVersion},
		{"bad timestamp", set("timestamp", "13/03/2026 20:00"), nil, event.ReasonInvalidTimestamp},
		{"empty changes", set("changes", map[string]any{}), nil, event.ReasonEmptyChanges},
		{"duplicate key", strings.Replace(good, `"source":"netsuite"`, `"source":"netsuite","source":"suitex"`, 1), nil, event.ReasonDuplicateKey},
		{"invalid utf-8", strings.Replace(good, "ada@", "ada\xc3@", 1), nil, event.ReasonInvalidUTF8},
		{"bad record_type", set("record_type", "Customer Record"), nil, event.ReasonInvalidRecordType},
		{"bad id", set("id", "12345"), nil, event.ReasonInvalidID},
		{"record_id too long", set("record_id", strings.Repeat("x", 192)), nil, event.ReasonInvalidRecordID},
		{"snapshot ref too long", set("full_snapshot_ref", strings.Repeat("x", 1025)), nil, event.ReasonInvalidSnapshotRef},
		{"changes not an object", set("changes", "email=x"), nil, event.ReasonWrongType},
	}
	sent := map[string]int{}
	for i, c := range cases {
		m := h.msg([]byte(c.data))
		if c.attrs != nil {
			m.Attributes = c.attrs
		}
		if code := h.push(m); code != 204 {
			t.Errorf("%s: status %d, want 204 (ack)", c.name, code)
		}
		sent[m.ID] = i
	}
	errs := h.errorsByMessage()
	rows, err := h.db.Root.Query("SELECT message_id, processing_outcome, stage, detail, fingerprint FROM event_audit_log")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	audited := map[string]int{}
	for rows.Next() {
		var id, outcome, stage, detail, fp string
		if err := rows.Scan(&id, &outcome, &stage, &detail, &fp); err != nil {
			t.Fatal(err)
		}
		c := cases[sent[id]]
		audited[id]++
		if outcome != store.OutcomeRejected || stage != store.StageMerge || !strings.HasPrefix(detail, c.reason+": ") || len(fp) != 64 {
			t.Errorf("%s: audit %s/%s %q", c.name, outcome, stage, detail)
		}
	}
	for id, i := range sent {
		c := cases[i]
		if audited[id] != 1 {
			t.Errorf("%s: %d audit rows, want 1", c.name, audited[id])
		}
		e, ok := errs[id]
		if !ok {
			t.Errorf("%s: no error message", c.name)
			continue
		}
		if e.Reason != c.reason || e.Retryable || e.Stage != store.StageMerge || e.Detail == "" {
			t.Errorf("%s: error message reason %q retryable %v detail %q, want %q", c.name, e.Reason, e.Retryable, e.Detail, c.reason)
		}
		if string(e.Original.Data) != c.data || e.Original.MessageID != id {
			t.Errorf("%s: the error message does not carry the original", c.name)
		}
	}
	if n := h.count("events"); n != 0 {
		t.Errorf("%d events stored from bad input", n)
	}
	if n := len(h.merged()); n != 0 {
		t.Errorf("%d merged messages from bad input", n)
	}
}

// TestHandlerNeverPanics: a few hundred random corruptions of a good event,
// over HTTP. Every one is acked, audited exactly once, and none trips the
// handler's panic guard.
func TestHandlerNeverPanics(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	rng := rand.New(rand.NewPCG(1, 2))
	seeds := []string{good, `{"record_type":"a","record_id":"1","source":"suitex","timestamp":"2026-03-13T20:00:00Z","base_version":0,"changes":{"x":{"y":[1,"2",null,true]}}}`}
	var ids []string
	for i := range 300 {
		b := []byte(seeds[i%len(seeds)])
		for range 1 + rng.IntN(4) {
			switch p := rng.IntN(len(b)); rng.IntN(5) {
			case 0:
				b[p] = byte(rng.IntN(256))
			case 1:
				b = b[:p]
			case 2:
				b = append(b[:p], b[min(len(b), p+1+rng.IntN(8)):]...)
			case 3:
				b = append(b[:p], append([]byte(`{"\u0000":[`), b[p:]...)...)
			default:
				b = append(b[:p], append([]byte{'"', '\\', 'u', 'd', '8'}, b[p:]...)...)
			}
			if len(b) == 0 {
				b = []byte("{")
			}
		}
		m := h.msg(b)
		if code := h.push(m); code != 204 {
			t.Fatalf("input %q: status %d", b, code)
		}
		ids = append(ids, m.ID)
	}
	for id, e := range h.errorsByMessage() {
		if e.Reason == failure.ReasonInternal {
			t.Errorf("message %s made the handler panic: %s", id, e.Detail)
		}
	}
	var n int
	if err := h.db.Root.QueryRow("SELECT COUNT(DISTINCT message_id) FROM event_audit_log WHERE stage = 'merge'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := h.db.Root.QueryRow("SELECT COUNT(*) FROM event_audit_log WHERE stage = 'merge'").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if n != len(ids) || rows != len(ids) {
		t.Errorf("%d audit rows for %d distinct messages, want one row for each of %d", rows, n, len(ids))
	}
}

// failMerged fails the next n publishes to the merged topic: the crash
// window between commit and publish.
type failMerged struct{ n atomic.Int32 }

func (f *failMerged) wrap(next publish.Publisher) publish.Publisher {
	return publish.Func(func(ctx context.Context, topic string, m publish.Message) (string, error) {
		if topic == env.Names().MergedTopic && f.n.Add(-1) >= 0 {
			return "", errors.New("injected: Pub/Sub unreachable after commit")
		}
		return next.Publish(ctx, topic, m)
	})
}

// TestCrashWindow: the publish after commit fails. The event stays
// processed = 0, the failure is parked as retryable publish_failed, and the
// redelivery publishes the event exactly once and sets the flag. A newer
// change of the record first publishes an older event left unpublished, so
// the merged topic still sees the record in version order.
func TestCrashWindow(t *testing.T) {
	t.Parallel()
	var f failMerged
	h := newHarness(t, option{wrap: f.wrap})
	f.n.Store(1)
	v1 := raw{ID: newID(), RecordType: "customer", RecordID: "C-1", Source: "netsuite", TS: t0, Changes: map[string]any{"a": 1}}
	m1 := h.send(v1)

	e, ok := h.errorsByMessage()[m1.ID]
	if !ok || e.Reason != merge.ReasonPublishFailed || !e.Retryable || e.EventID != v1.ID {
		t.Fatalf("error message %+v, want retryable publish_failed for %s", e, v1.ID)
	}
	evs := h.history("customer", "C-1")
	if len(evs) != 1 || evs[0].Processed {
		t.Fatalf("events %+v: want one, processed = 0", evs)
	}
	if n := len(h.merged()); n != 0 {
		t.Fatalf("%d merged messages after a failed publish", n)
	}

	h.pushOK(m1) // the redelivery (Retry re-runs the stage the same way)
	got := h.merged()
	if len(got) != 1 || got[0].ID != v1.ID || got[0].Version != 1 {
		t.Fatalf("after redelivery: merged %+v, want v1 once", got)
	}
	if evs := h.history("customer", "C-1"); !evs[0].Processed {
		t.Error("redelivery did not set processed = 1")
	}
	h.pushOK(m1)
	if n := len(h.merged()); n != 0 {
		t.Errorf("a third delivery published %d more messages", n)
	}
	n := h.outcomes("customer", "C-1")
	if n[store.OutcomeAccepted] != 1 || n[store.OutcomeDuplicate] != 2 || n[store.OutcomePublished] != 1 {
		t.Errorf("outcomes %v, want accepted, 2 duplicates, 1 published", n)
	}

	// v2's publish fails and nobody redelivers it; v3 arrives.
	f.n.Store(1)
	v2 := raw{ID: newID(), RecordType: "customer", RecordID: "C-1", Source: "netsuite", Base: 1, TS: t0, Changes: map[string]any{"a": 2}}
	h.send(v2)
	v3 := raw{ID: newID(), RecordType: "customer", RecordID: "C-1", Source: "suitex", Base: 2, TS: t0, Changes: map[string]any{"b": 3}}
	h.send(v3)
	got = h.merged()
	if len(got) != 2 || got[0].ID != v2.ID || got[1].ID != v3.ID {
		t.Fatalf("merged %+v, want v2 then v3", got)
	}
	for _, ev := range h.history("customer", "C-1") {
		if !ev.Processed {
			t.Errorf("event v%d left processed = 0", ev.Version())
		}
	}
}

// TestDatabaseUnreachable: with the event store down, a message is nacked
// (SPEC §6: an outage is not the message's fault, and merge-sub keeps it),
// never parked, never acked as done, bad input included — its rejection
// cannot be audited yet. With the error topic down too, the handler nacks.
func TestDatabaseUnreachable(t *testing.T) {
	t.Parallel()
	down := func() store.Store {
		db, closeFn, err := mysql.Open(context.Background(), config.DB{DSN: "sync_worker:x@tcp(127.0.0.1:1)/backbone?timeout=2s"})
		if err != nil {
			t.Fatal(err)
		}
		s := mysql.New(db, closeFn)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	h := newHarness(t, option{store: down()})
	ok := h.msg(raw{ID: newID(), RecordType: "customer", RecordID: "C-1", Source: "netsuite", TS: t0, Changes: map[string]any{"a": 1}}.data())
	bad := h.msg([]byte(`{"record_type":`))
	for _, m := range []message.Message{ok, bad} {
		if code := h.push(m); message.Acked(code) {
			t.Errorf("message %s: status %d with the store down, want a nack", m.ID, code)
		}
	}
	if errs := h.errorsByMessage(); len(errs) != 0 {
		t.Errorf("%d error messages parked during the outage, want none (nack instead): %+v", len(errs), errs)
	}
	if n := len(h.merged()); n != 0 {
		t.Errorf("%d merged messages with the store down", n)
	}

	unreachable := publish.Func(func(ctx context.Context, topic string, m publish.Message) (string, error) {
		return "", errors.New("injected: error topic unreachable")
	})
	h2 := newHarness(t, option{store: down(), reporterPub: unreachable})
	m := h2.msg(raw{ID: newID(), RecordType: "customer", RecordID: "C-1", Source: "netsuite", TS: t0, Changes: map[string]any{"a": 1}}.data())
	if code := h2.push(m); message.Acked(code) {
		t.Errorf("store and error topic down: status %d, want a nack", code)
	}
}

// TestConcurrentEditsTwoInstances: the edits of a round reach two instances
// (two processes, two pools) at once, so only the database orders them: the
// record lock, the unique index and the outbox gate. The chain stays
// gap-free, step 3 decides every round, and on the merged topic each version
// first appears in order (a version may appear twice: an instance publishes
// its predecessor's event if it is not yet flagged; sinks are idempotent).
func TestConcurrentEditsTwoInstances(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	other := h.secondInstance()
	const rounds = 20
	for i := range rounds {
		base := uint64(2 * i)
		nsTS, sxTS, _ := roundTimes(i)
		ns := h.msg(raw{ID: newID(), RecordType: "customer", RecordID: "C-2", Source: "netsuite", Base: base, TS: nsTS,
			Changes: map[string]any{"email": fmt.Sprintf("ns-%d", i), "credit_limit": i}}.data())
		sx := h.msg(raw{ID: newID(), RecordType: "customer", RecordID: "C-2", Source: "suitex", Base: base, TS: sxTS,
			Changes: map[string]any{"email": fmt.Sprintf("sx-%d", i), "nickname": fmt.Sprintf("n-%d", i)}}.data())
		var wg sync.WaitGroup
		var c1, c2 int
		wg.Go(func() { c1 = h.push(ns) })
		wg.Go(func() { c2 = h.pushTo(other, sx) })
		wg.Wait()
		if c1 != 204 || c2 != 204 {
			t.Fatalf("round %d: status %d / %d", i, c1, c2)
		}
	}
	if errs := h.errorsByMessage(); len(errs) != 0 {
		for _, e := range errs {
			t.Errorf("error message %s: %s", e.Reason, e.Detail)
		}
	}
	evs := h.history("customer", "C-2")
	if len(evs) != 2*rounds {
		t.Fatalf("%d events, want %d", len(evs), 2*rounds)
	}
	email := ""
	for j, ev := range evs {
		if ev.BaseVersion != uint64(j) || !ev.Processed {
			t.Fatalf("event %d: base_version %d processed %v", j, ev.BaseVersion, ev.Processed)
		}
		var ch map[string]json.RawMessage
		_ = json.Unmarshal(ev.Changes, &ch)
		if v, ok := ch["email"]; ok {
			_ = json.Unmarshal(v, &email)
		}
		if _, _, want := roundTimes(j / 2); j%2 == 1 && email != want {
			t.Errorf("round %d: email %q, want %q", j/2, email, want)
		}
	}
	var next uint64 = 1
	for _, m := range h.merged() {
		switch {
		case m.Version == next:
			next++
		case m.Version > next:
			t.Fatalf("version %d published before version %d", m.Version, next)
		}
	}
	if next != 2*rounds+1 {
		t.Errorf("versions up to %d published, want %d", next-1, 2*rounds)
	}
}

// TestPanicIsParked: a bug in the engine (here: no store at all) must not
// crash the server nor be acked as done.
func TestPanicIsParked(t *testing.T) {
	t.Parallel()
	h := newHarness(t, option{store: nilStore{}})
	m := h.msg([]byte(good))
	h.pushOK(m)
	e, ok := h.errorsByMessage()[m.ID]
	if !ok || e.Reason != failure.ReasonInternal || !e.Retryable {
		t.Errorf("error message %+v, want retryable internal_error", e)
	}
}

// nilStore panics on every call, as a nil pointer would.
type nilStore struct{ store.Store }
