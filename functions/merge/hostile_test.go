package mergefunc_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
	"github.com/backbone-sync/backbone/shared/store"
)

// hostileCase is one bad input: a raw event's data (pushed in a push
// envelope), or a whole HTTP request (CloudEvents).
type hostileCase struct {
	name   string
	data   string            // raw event data, when req is nil
	attrs  map[string]string // message attributes (default env=sandbox)
	req    func(h *harness) *http.Request
	reason string
}

// hostileCases is the table of bad inputs (SPEC §3, §6). It is also the
// seed corpus of FuzzMergeHandler.
func hostileCases() []hostileCase {
	edit := func(f func(m map[string]any)) string {
		m := map[string]any{}
		_ = json.Unmarshal([]byte(good), &m)
		f(m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	set := func(k string, v any) string { return edit(func(m map[string]any) { m[k] = v }) }
	del := func(k string) string { return edit(func(m map[string]any) { delete(m, k) }) }
	lit := func(k, v string) string { // field k with literal JSON v
		return strings.Replace(del(k), "{", `{"`+k+`":`+v+",", 1)
	}
	changes := func(v string) string { return lit("changes", v) }
	ts := func(v string) string { return set("timestamp", v) }
	nest := func(n int) string { return `{"d":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}` }
	fields := func(n, size int) string {
		m := map[string]int{}
		for i := range n {
			m[fmt.Sprintf("%0*d", size, i)] = i
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	ceBinary := func(typ, drop, body string) func(h *harness) *http.Request {
		return func(h *harness) *http.Request {
			if body == "" {
				body = string(message.PushBody(h.msg([]byte(good))))
			}
			r, _ := http.NewRequest(http.MethodPost, h.url, strings.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Ce-Specversion", "1.0")
			r.Header.Set("Ce-Type", typ)
			r.Header.Set("Ce-Source", "//pubsub.googleapis.com/projects/"+pubsubtest.Project+"/topics/events.raw.sandbox")
			r.Header.Set("Ce-Id", fmt.Sprintf("ce-%d", h.msgs.Add(1)))
			r.Header.Set("Ce-Time", time.Now().UTC().Format(time.RFC3339Nano))
			if drop != "" {
				r.Header.Del(drop)
			}
			return r
		}
	}
	ceStructured := func(fields func(h *harness) string) func(h *harness) *http.Request {
		return func(h *harness) *http.Request {
			r, _ := http.NewRequest(http.MethodPost, h.url, strings.NewReader(`{"specversion":"1.0",`+fields(h)+`}`))
			r.Header.Set("Content-Type", "application/cloudevents+json")
			return r
		}
	}
	envelope := func(h *harness, data string) string { return string(message.PushBody(h.msg([]byte(data)))) }
	published := message.TypeMessagePublished
	return []hostileCase{
		{name: "invalid json", data: `{"record_type":"customer",`, reason: event.ReasonInvalidJSON},
		{name: "empty data", data: ``, reason: event.ReasonInvalidJSON},
		{name: "byte order mark", data: "\xef\xbb\xbf" + good, reason: event.ReasonInvalidJSON},
		{name: "trailing garbage", data: good + "x", reason: event.ReasonInvalidJSON},
		{name: "two documents", data: good + good, reason: event.ReasonInvalidJSON},
		{name: "array", data: `["customer"]`, reason: event.ReasonNotObject},
		{name: "null", data: `null`, reason: event.ReasonNotObject},
		{name: "invalid utf-8", data: strings.Replace(good, "ada@", "ada\xc3@", 1), reason: event.ReasonInvalidUTF8},
		{name: "duplicate key", data: strings.Replace(good, `"source":"netsuite"`, `"source":"netsuite","source":"suitex"`, 1), reason: event.ReasonDuplicateKey},
		{name: "duplicate key escaped as u0061", data: changes(`{"a":1,"\u0061":2}`), reason: event.ReasonDuplicateKey},
		{name: "duplicate nested key", data: changes(`{"a":{"x":1,"x":2}}`), reason: event.ReasonDuplicateKey},
		{name: "unknown field", data: set("priority", "high"), reason: event.ReasonUnknownField},
		{name: "field name in another case", data: strings.Replace(good, `"source"`, `"SOURCE"`, 1), reason: event.ReasonUnknownField},
		{name: "missing record_id", data: del("record_id"), reason: event.ReasonMissingField},
		{name: "missing changes", data: del("changes"), reason: event.ReasonMissingField},
		{name: "missing timestamp", data: del("timestamp"), reason: event.ReasonMissingField},
		{name: "record_id number", data: set("record_id", 1001), reason: event.ReasonWrongType},
		{name: "record_id null", data: set("record_id", nil), reason: event.ReasonWrongType},
		{name: "record_type array", data: set("record_type", []string{"customer"}), reason: event.ReasonWrongType},
		{name: "source number", data: set("source", 1), reason: event.ReasonWrongType},
		{name: "timestamp number", data: set("timestamp", 1700000000), reason: event.ReasonWrongType},
		{name: "id number", data: set("id", 5), reason: event.ReasonWrongType},
		{name: "snapshot ref object", data: set("full_snapshot_ref", map[string]int{}), reason: event.ReasonWrongType},
		{name: "changes string", data: set("changes", "email=x"), reason: event.ReasonWrongType},
		{name: "changes array", data: set("changes", []int{1}), reason: event.ReasonWrongType},
		{name: "changes null", data: set("changes", nil), reason: event.ReasonWrongType},
		{name: "empty changes", data: set("changes", map[string]any{}), reason: event.ReasonEmptyChanges},
		{name: "record_type upper case", data: set("record_type", "Customer"), reason: event.ReasonInvalidRecordType},
		{name: "record_type with a space", data: set("record_type", "customer record"), reason: event.ReasonInvalidRecordType},
		{name: "record_type empty", data: set("record_type", ""), reason: event.ReasonInvalidRecordType},
		{name: "record_type 65 chars", data: set("record_type", "a"+strings.Repeat("b", 64)), reason: event.ReasonInvalidRecordType},
		{name: "record_id empty", data: set("record_id", ""), reason: event.ReasonInvalidRecordID},
		{name: "record_id 192 chars", data: set("record_id", strings.Repeat("😀", 192)), reason: event.ReasonInvalidRecordID},
		{name: "record_id bell", data: set("record_id", "C-\u0007"), reason: event.ReasonInvalidRecordID},
		{name: "record_id NUL", data: set("record_id", "C-\u0000"), reason: event.ReasonInvalidRecordID},
		{name: "record_id DEL", data: set("record_id", "C-\u007f"), reason: event.ReasonInvalidRecordID},
		{name: "record_id C1 control", data: set("record_id", "C-\u0085"), reason: event.ReasonInvalidRecordID},
		{name: "record_id newline", data: set("record_id", "C-1\n"), reason: event.ReasonInvalidRecordID},
		{name: "record_id lone surrogate", data: strings.Replace(good, `"C-1001"`, `"BAD-\ud800"`, 1), reason: event.ReasonInvalidUTF16},
		{name: "field name lone surrogate", data: changes(`{"f\udfff":1}`), reason: event.ReasonInvalidUTF16},
		{name: "value lone surrogate", data: changes(`{"f":["ok","\ud800x"]}`), reason: event.ReasonInvalidUTF16},
		{name: "unknown source", data: set("source", "salesforce"), reason: event.ReasonUnknownSource},
		{name: "source in another case", data: set("source", "NetSuite"), reason: event.ReasonUnknownSource},
		{name: "timestamp not rfc 3339", data: ts("13/03/2026 20:00"), reason: event.ReasonInvalidTimestamp},
		{name: "timestamp no zone", data: ts("2026-03-13T20:00:00"), reason: event.ReasonInvalidTimestamp},
		{name: "timestamp leap second", data: ts("2016-12-31T23:59:60Z"), reason: event.ReasonInvalidTimestamp},
		{name: "timestamp year 0", data: ts("0000-01-01T00:00:00Z"), reason: event.ReasonInvalidTimestamp},
		{name: "timestamp year 10000", data: ts("10000-01-01T00:00:00Z"), reason: event.ReasonInvalidTimestamp},
		{name: "timestamp february 30", data: ts("2026-02-30T12:00:00Z"), reason: event.ReasonInvalidTimestamp},
		{name: "timestamp hour 24", data: ts("2026-03-13T24:00:00Z"), reason: event.ReasonInvalidTimestamp},
		{name: "timestamp offset +24:00", data: ts("2026-03-13T20:00:00+24:00"), reason: event.ReasonInvalidTimestamp},
		{name: "timestamp offset +23:60", data: ts("2026-03-13T20:00:00+23:60"), reason: event.ReasonInvalidTimestamp},
		{name: "timestamp comma fraction", data: ts("2026-03-13T20:00:00,5Z"), reason: event.ReasonInvalidTimestamp},
		{name: "base_version -1", data: lit("base_version", "-1"), reason: event.ReasonInvalidBaseVersion},
		{name: "base_version 1.0", data: lit("base_version", "1.0"), reason: event.ReasonInvalidBaseVersion},
		{name: "base_version 1e0", data: lit("base_version", "1e0"), reason: event.ReasonInvalidBaseVersion},
		{name: "base_version 2^64", data: lit("base_version", "18446744073709551616"), reason: event.ReasonInvalidBaseVersion},
		{name: "base_version 2^53", data: lit("base_version", "9007199254740992"), reason: event.ReasonInvalidBaseVersion},
		{name: "base_version string", data: lit("base_version", `"0"`), reason: event.ReasonWrongType},
		{name: "base_version null", data: lit("base_version", "null"), reason: event.ReasonWrongType},
		{name: "field name empty", data: changes(`{"":1}`), reason: event.ReasonInvalidFieldName},
		{name: "field name 256 chars", data: changes(`{"` + strings.Repeat("é", 256) + `":1}`), reason: event.ReasonInvalidFieldName},
		{name: "field name control", data: changes(`{"a\tb":1}`), reason: event.ReasonInvalidFieldName},
		{name: "number 1e400", data: changes(`{"n":1e400}`), reason: event.ReasonUnsafeNumber},
		{name: "integer 2^53+1", data: changes(`{"n":9007199254740993}`), reason: event.ReasonUnsafeNumber},
		{name: "20-digit integer", data: changes(`{"n":[12345678901234567890]}`), reason: event.ReasonUnsafeNumber},
		{name: "more digits than a double", data: changes(`{"n":{"x":3.14159265358979323846264338}}`), reason: event.ReasonUnsafeNumber},
		{name: "depth 17", data: changes(nest(17)), reason: event.ReasonTooDeep},
		{name: "depth 20000", data: changes(nest(20000)), reason: event.ReasonTooDeep},
		{name: "data over 256 KiB", data: set("changes", map[string]string{"blob": strings.Repeat("x", 300<<10)}), reason: event.ReasonTooLarge},
		{name: "300 fields of 255 chars over 256 KiB", data: changes(fields(1100, 255)), reason: event.ReasonTooLarge},
		{name: "bad id", data: set("id", "12345"), reason: event.ReasonInvalidID},
		{name: "nil id", data: set("id", "00000000-0000-0000-0000-000000000000"), reason: event.ReasonInvalidID},
		{name: "snapshot ref too long", data: set("full_snapshot_ref", strings.Repeat("x", 1025)), reason: event.ReasonInvalidSnapshotRef},
		{name: "wrong env attribute", data: good, attrs: map[string]string{"env": "production"}, reason: failure.ReasonWrongEnv},
		{name: "cloudevent binary wrong type", req: ceBinary("google.cloud.storage.object.v1.finalized", "", ""), reason: message.ReasonUnexpectedEventType},
		{name: "cloudevent binary no type", req: ceBinary(published, "Ce-Type", ""), reason: message.ReasonInvalidCloudEvent},
		{name: "cloudevent binary no source", req: ceBinary(published, "Ce-Source", ""), reason: message.ReasonInvalidCloudEvent},
		{name: "cloudevent binary no id", req: ceBinary(published, "Ce-Id", ""), reason: message.ReasonInvalidCloudEvent},
		{name: "cloudevent binary no envelope", req: ceBinary(published, "", `{"subscription":"s"}`), reason: message.ReasonInvalidCloudEvent},
		{name: "cloudevent binary empty body", req: ceBinary(published, "", " "), reason: message.ReasonInvalidCloudEvent},
		{name: "cloudevent structured wrong type", req: ceStructured(func(h *harness) string {
			return `"type":"com.example.customer.changed","source":"//x","id":"ce-s1","data":` + envelope(h, good)
		}), reason: message.ReasonUnexpectedEventType},
		{name: "cloudevent structured no type", req: ceStructured(func(h *harness) string {
			return `"source":"//x","id":"ce-s2","data":` + envelope(h, good)
		}), reason: message.ReasonInvalidCloudEvent},
		{name: "cloudevent structured no id", req: ceStructured(func(h *harness) string {
			return `"type":"` + published + `","source":"//x","data":` + envelope(h, good)
		}), reason: message.ReasonInvalidCloudEvent},
		{name: "cloudevent structured no data", req: ceStructured(func(h *harness) string {
			return `"type":"` + published + `","source":"//x","id":"ce-s3"`
		}), reason: message.ReasonInvalidCloudEvent},
		{name: "cloudevent structured data without message", req: ceStructured(func(h *harness) string {
			return `"type":"` + published + `","source":"//x","id":"ce-s4","data":{"subscription":"s"}`
		}), reason: message.ReasonInvalidCloudEvent},
		{name: "cloudevent structured base64 bad raw event", req: ceStructured(func(h *harness) string {
			return `"type":"` + published + `","source":"//x","id":"ce-s5","data_base64":"` +
				base64.StdEncoding.EncodeToString([]byte(envelope(h, `{"record_type":`))) + `"`
		}), reason: event.ReasonInvalidJSON},
	}
}

// TestHostileInput: every bad input, over HTTP into the Merge handler, gets
// its stable reason, is audited `rejected` once, acked, parked on the error
// topic (not retryable, with the original), stores and publishes nothing,
// and never trips the panic guard. One subtest per case.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cases := hostileCases()
	if len(cases) < 60 {
		t.Fatalf("%d cases, want at least 60", len(cases))
	}
	defer func() { h.t = t }()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.t = t
			code, sentData := h.pushHostile(c)
			if code != message.StatusAck {
				t.Fatalf("status %d, want %d (ack)", code, message.StatusAck)
			}
			errs := h.errorsByMessage()
			if len(errs) != 1 {
				t.Fatalf("%d error messages, want 1: %v", len(errs), errs)
			}
			var (
				id string
				e  event.Error
			)
			for k, v := range errs {
				id, e = k, v
			}
			if e.Reason != c.reason || e.Retryable || e.Stage != store.StageMerge || e.Detail == "" {
				t.Errorf("error message reason %q retryable %v detail %q, want %q", e.Reason, e.Retryable, e.Detail, c.reason)
			}
			if e.Reason == failure.ReasonInternal {
				t.Errorf("the handler panicked: %s", e.Detail)
			}
			if sentData != nil && !bytes.Equal(e.Original.Data, sentData) {
				t.Errorf("the error message does not carry the original data")
			}
			rows, err := h.db.Root.Query("SELECT processing_outcome, stage, detail FROM event_audit_log WHERE message_id = ?", id)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			n := 0
			for rows.Next() {
				var outcome, stage, detail string
				if err := rows.Scan(&outcome, &stage, &detail); err != nil {
					t.Fatal(err)
				}
				n++
				if outcome != store.OutcomeRejected || stage != store.StageMerge || !strings.HasPrefix(detail, c.reason+": ") {
					t.Errorf("audit %s/%s %q, want rejected with reason %s", outcome, stage, detail, c.reason)
				}
			}
			if n != 1 {
				t.Errorf("%d audit rows for message %s, want 1", n, id)
			}
			if n := h.count("events"); n != 0 {
				t.Errorf("%d events stored", n)
			}
		})
	}
	h.t = t
	if n := len(h.merged()); n != 0 {
		t.Errorf("%d merged messages from bad input", n)
	}
}

// pushHostile sends one case and returns the status and the raw data sent
// (nil for a whole request).
func (h *harness) pushHostile(c hostileCase) (int, []byte) {
	h.t.Helper()
	var req *http.Request
	var data []byte
	if c.req != nil {
		req = c.req(h)
	} else {
		data = []byte(c.data)
		m := h.msg(data)
		if c.attrs != nil {
			m.Attributes = c.attrs
		}
		req, _ = http.NewRequest(http.MethodPost, h.url, bytes.NewReader(message.PushBody(m)))
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("push: %v", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, data
}
