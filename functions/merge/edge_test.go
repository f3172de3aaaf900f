package mergefunc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/backbone-sync/backbone/functions/retry"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/merge"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
	"github.com/backbone-sync/backbone/shared/store"
)

// rawData is a raw event with literal JSON changes.
func rawData(id, rid string, base uint64, changes string) []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"record_type":"customer","record_id":%s,"source":"netsuite","timestamp":"2026-03-13T20:00:0%dZ","base_version":%d,"changes":%s}`,
		id, rid, base%10, base, changes))
}

func quoteJSON(s string) string {
	b, _ := event.Marshal(s)
	return string(b)
}

// TestAcceptedEdgesRoundTrip: the edge cases that are valid are stored and
// published byte for byte: four records that a PAD SPACE or case-folding
// comparison would merge, 200 KB of `<>&` never HTML-escaped, a
// 191-character 4-byte id, and equal values in other spellings (no-ops).
func TestAcceptedEdgesRoundTrip(t *testing.T) {
	t.Parallel()
	h := newHarness(t)

	ids := []string{"C-1", "c-1", "C-1 ", "C-😀", strings.Repeat("😀", event.MaxRecordIDChars)}
	blob := strings.Repeat("<>&", 200<<10/3)
	values := map[string]string{
		"C-1":  `{"v":"C-1"}`,
		"c-1":  `{"v":"c-1"}`,
		"C-1 ": `{"html":` + quoteJSON(blob) + `}`,
		"C-😀":  `{"n":1,"name":"\u00e9"}`,
	}
	for _, id := range ids {
		ch, ok := values[id]
		if !ok {
			ch = `{"long":true}`
		}
		h.pushOK(h.msg(rawData(newID(), quoteJSON(id), 0, ch)))
	}
	if errs := h.errorsByMessage(); len(errs) != 0 {
		t.Fatalf("error messages: %v", errs)
	}
	byRecord := map[string]event.Merged{}
	for _, m := range h.merged() {
		if _, dup := byRecord[m.RecordID]; dup {
			t.Errorf("two merged events for %q", m.RecordID)
		}
		byRecord[m.RecordID] = m
	}
	for _, id := range ids {
		evs := h.history("customer", id)
		if len(evs) != 1 || evs[0].RecordID != id {
			t.Fatalf("record %q: %d events, want its own one (identity must be exact)", id, len(evs))
		}
		want := values[id]
		if want == "" {
			want = `{"long":true}`
		}
		if string(evs[0].Changes) != want {
			t.Errorf("record %q stored %.80s, want %.80s", id, evs[0].Changes, want)
		}
		m, ok := byRecord[id]
		if !ok {
			t.Errorf("record %q not published", id)
			continue
		}
		got, _ := event.Marshal(m.Changes)
		if string(got) != want {
			t.Errorf("record %q published %.80s, want %.80s", id, got, want)
		}
	}
	// The published bytes themselves: no \u003c anywhere, and the record's
	// projection row holds the blob once, unescaped.
	var state []byte
	if err := h.db.Root.QueryRow("SELECT state FROM record_heads WHERE record_type = 'customer' AND record_id = ?", "C-1 ").Scan(&state); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(state, []byte(`\u003c`)) || bytes.Count(state, []byte(blob)) != 1 || len(state) > len(blob)+4096 {
		t.Errorf("state row of %d bytes for a %d-byte value: want it unescaped, once", len(state), len(blob))
	}

	// Equal values in other spellings are no-ops: \u00e9 and é, 1, 1.0, 1e0.
	for _, ch := range []string{`{"name":"é"}`, `{"n":1.0}`, `{"n":1e0,"name":"\u00e9"}`} {
		h.pushOK(h.msg(rawData(newID(), quoteJSON("C-😀"), 1, ch)))
	}
	if evs := h.history("customer", "C-😀"); len(evs) != 1 {
		t.Errorf("%d events for C-😀: equal values in other spellings must be no-ops", len(evs))
	}
	if n := h.outcomes("customer", "C-😀"); n[store.OutcomeNoop] != 3 {
		t.Errorf("outcomes %v, want 3 noops", n)
	}
	if n := len(h.merged()); n != 0 {
		t.Errorf("%d merged messages for no-ops", n)
	}
}

// TestRecordTooLarge: a record whose stored state would exceed its bound
// rejects the change that would grow it (record_too_large, audited,
// parked, not retryable); the record stays usable for smaller changes.
func TestRecordTooLarge(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	big := quoteJSON(strings.Repeat("x", 250<<10))
	var last message.Message
	base := uint64(0)
	for i := 0; ; i++ {
		if i > store.MaxStateBytes/(250<<10)+2 {
			t.Fatal("the state never reached its bound")
		}
		last = h.msg(rawData(newID(), `"BIG-1"`, base, fmt.Sprintf(`{"f%d":%s}`, i, big)))
		h.pushOK(last)
		if len(h.history("customer", "BIG-1")) == int(base) {
			break // rejected
		}
		base++
	}
	errs := h.errorsByMessage()
	e, ok := errs[last.ID]
	if !ok || e.Reason != merge.ReasonRecordTooLarge || e.Retryable || !strings.Contains(e.Detail, "bound") {
		t.Fatalf("error message %+v, want permanent record_too_large with a clear detail", e)
	}
	var outcome, detail string
	if err := h.db.Root.QueryRow("SELECT processing_outcome, detail FROM event_audit_log WHERE message_id = ?", last.ID).Scan(&outcome, &detail); err != nil {
		t.Fatal(err)
	}
	if outcome != store.OutcomeRejected || !strings.HasPrefix(detail, merge.ReasonRecordTooLarge+": ") {
		t.Errorf("audit %s %q", outcome, detail)
	}
	h.merged()
	h.pushOK(h.msg(rawData(newID(), `"BIG-1"`, base, `{"small":1}`)))
	if evs := h.history("customer", "BIG-1"); len(evs) != int(base)+1 {
		t.Errorf("a small change after the rejection: %d events, want %d", len(evs), base+1)
	}
}

// TestLongAuditDetail: 300 field names of 245 characters re-sent unchanged
// make a no-op whose audit detail is over 64 KiB. The detail is truncated,
// never the cause of a failure.
func TestLongAuditDetail(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	m := map[string]int{}
	for i := range 300 {
		m[fmt.Sprintf("%0245d", i)] = i
	}
	ch, _ := json.Marshal(m)
	h.pushOK(h.msg(rawData(newID(), `"LONG-1"`, 0, string(ch))))
	again := h.msg(rawData(newID(), `"LONG-1"`, 1, string(ch)))
	h.pushOK(again)
	if errs := h.errorsByMessage(); len(errs) != 0 {
		for _, e := range errs {
			t.Errorf("error message %s: %.200s", e.Reason, e.Detail)
		}
	}
	var outcome, detail string
	if err := h.db.Root.QueryRow("SELECT processing_outcome, detail FROM event_audit_log WHERE message_id = ?", again.ID).Scan(&outcome, &detail); err != nil {
		t.Fatal(err)
	}
	if outcome != store.OutcomeNoop || len(detail) > store.MaxDetailBytes {
		t.Errorf("audit %s with a %d-byte detail, want noop within %d", outcome, len(detail), store.MaxDetailBytes)
	}
}

// TestStoreRefusal: a statement the real server refuses for its content
// (here error 1406, raised by a trigger the test adds) rejects the message
// with a reason naming the refusal, audited `rejected`, parked as not
// retryable (Retry sends it to the dead-letter archive); an error number the
// table does not know is retried, and the audit row says so.
func TestStoreRefusal(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	if _, err := h.db.Root.Exec("CREATE TRIGGER test_refuse BEFORE INSERT ON events FOR EACH ROW BEGIN " +
		"IF NEW.record_id = 'R-refused' THEN SIGNAL SQLSTATE '22001' SET MYSQL_ERRNO = 1406, MESSAGE_TEXT = 'Data too long for column changes'; END IF; " +
		"IF NEW.record_id = 'R-odd' THEN SIGNAL SQLSTATE 'HY000' SET MYSQL_ERRNO = 31999, MESSAGE_TEXT = 'an error no table knows'; END IF; END"); err != nil {
		t.Fatal(err)
	}
	refused := h.msg(rawData(newID(), `"R-refused"`, 0, `{"a":1}`))
	odd := h.msg(rawData(newID(), `"R-odd"`, 0, `{"a":1}`))
	h.pushOK(refused)
	h.pushOK(odd)
	errs := h.errorsByMessage()
	if e := errs[refused.ID]; e.Reason != "store_refused_data_too_long" || e.Retryable || !strings.Contains(e.Detail, "1406") {
		t.Errorf("refused: error message %+v, want permanent store_refused_data_too_long", e)
	}
	if e := errs[odd.ID]; e.Reason != failure.ReasonStoreError || !e.Retryable || !strings.Contains(e.Detail, "retried by default") {
		t.Errorf("unknown number: error message %+v, want retryable store_error saying so", e)
	}
	for id, want := range map[string]string{refused.ID: store.OutcomeRejected, odd.ID: store.OutcomeDeferred} {
		var outcome, detail string
		if err := h.db.Root.QueryRow("SELECT processing_outcome, detail FROM event_audit_log WHERE message_id = ?", id).Scan(&outcome, &detail); err != nil {
			t.Fatalf("message %s: %v", id, err)
		}
		if outcome != want {
			t.Errorf("message %s audited %s %q, want %s", id, outcome, detail, want)
		}
	}
	if n := h.count("events"); n != 0 {
		t.Errorf("%d events stored", n)
	}

	// Retry sends the refusal straight to the dead-letter topic (it is not
	// retryable) and re-runs the unclassified one, which fails again: nack.
	rt, err := retryfunc.New(retryfunc.Deps{Env: env, Stages: map[string]retryfunc.Stage{store.StageMerge: func(ctx context.Context, m message.Message) error {
		_, err := h.eng.Process(ctx, m)
		return err
	}}, Publisher: h.ps.Publisher(t), Store: h.store})
	if err != nil {
		t.Fatal(err)
	}
	for id, wantAck := range map[string]bool{refused.ID: true, odd.ID: false} {
		data, err := event.Marshal(errs[id])
		if err != nil {
			t.Fatal(err)
		}
		err = rt(context.Background(), message.Message{Data: data, Attributes: map[string]string{"env": string(env)}, ID: "r-" + id,
			Subscription: pubsubtest.SubPath(h.names.RetrySub), DeliveryAttempt: 1})
		if (err == nil) != wantAck {
			t.Errorf("retry of %s: %v, want ack %v", errs[id].Reason, err, wantAck)
		}
	}
	dlq := h.ps.Drain(t, h.names.DLQSub)
	if len(dlq) != 1 || !strings.Contains(string(dlq[0].Data), "store_refused_data_too_long") {
		t.Errorf("dead letters %d, want the refusal only", len(dlq))
	}
}
