package event_test

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/event"
)

// valid is a raw event every test can start from.
const valid = `{"id":"0B6F3C1E-8D1F-4A57-9A43-2F0D7D6B1C55","record_type":"customer","record_id":"C-1001","source":"netsuite",` +
	`"timestamp":"2026-03-13T22:00:00.123456789+02:00","base_version":7,"changes":{"email":"ada@example.com","phone":null,"tags":[ 1, 2 ]},` +
	`"full_snapshot_ref":"gs://bucket/snapshots/customer/C-1001/7.json"}`

func TestDecodeRaw(t *testing.T) {
	t.Parallel()
	r, err := event.DecodeRaw([]byte(valid), sources)
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != "0b6f3c1e-8d1f-4a57-9a43-2f0d7d6b1c55" {
		t.Errorf("id %q: want the canonical lower-case form", r.ID)
	}
	if r.RecordType != "customer" || r.RecordID != "C-1001" || r.Source != "netsuite" || r.BaseVersion != 7 {
		t.Errorf("decoded %+v", r)
	}
	// Microseconds kept exactly, finer digits truncated, UTC.
	want := time.Date(2026, 3, 13, 20, 0, 0, 123456000, time.UTC)
	if !r.Timestamp.Equal(want) || r.Timestamp.Location() != time.UTC {
		t.Errorf("timestamp %v, want %v", r.Timestamp, want)
	}
	if b, _ := json.Marshal(r.Timestamp); string(b) != `"2026-03-13T20:00:00.123456Z"` {
		t.Errorf("timestamp writes %s", b)
	}
	if r.FullSnapshotRef == nil || *r.FullSnapshotRef != "gs://bucket/snapshots/customer/C-1001/7.json" {
		t.Errorf("full_snapshot_ref %v", r.FullSnapshotRef)
	}
	if len(r.Changes) != 3 || string(r.Changes["phone"]) != "null" || string(r.Changes["tags"]) != "[ 1, 2 ]" {
		t.Errorf("changes %q: values must be kept as sent", r.Changes)
	}

	// Optional fields may be null or absent; 191 four-byte characters fit.
	long := strings.Repeat("😀", event.MaxRecordIDChars)
	r, err = event.DecodeRaw([]byte(`{"id":null,"full_snapshot_ref":null,"record_type":"a","record_id":"`+long+`","source":"suitex","timestamp":"2026-03-13T20:00:00Z","base_version":0,"changes":{"x":{}}}`), sources)
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != "" || r.FullSnapshotRef != nil || r.RecordID != long || r.BaseVersion != 0 {
		t.Errorf("decoded %+v", r)
	}
}

// TestDecodeRawLimits: the edges that are accepted.
func TestDecodeRawLimits(t *testing.T) {
	t.Parallel()
	withChanges := func(c string) string {
		return `{"record_type":"a","record_id":"1","source":"suitex","timestamp":"2026-03-13T20:00:00-23:59","base_version":0,"changes":` + c + `}`
	}
	for name, c := range map[string]string{
		"depth 16":             `{"d":` + strings.Repeat("[", 16) + strings.Repeat("]", 16) + `}`,
		"2^53-1":               `{"n":9007199254740991,"m":-9007199254740991}`,
		"spellings of one":     `{"a":1,"b":1.0,"c":1e0,"d":10e-1,"e":0.1e1,"f":-0,"g":0.0e5}`,
		"doubles":              `{"a":0.1,"b":1e21,"c":5e-324,"d":1.7976931348623157e308,"e":123456789012345680000}`,
		"surrogate pair":       `{"s":"\ud83d\ude00","\ud83d\ude00":"\u00e9"}`,
		"field name 255 chars": `{"` + strings.Repeat("😀", 255) + `":1}`,
		"numbers in strings":   `{"s":"9007199254740993 1e400"}`,
	} {
		if _, err := event.DecodeRaw([]byte(withChanges(c)), sources); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestDecodeRawRejects: every way a raw event can be wrong has its stable
// reason, and the record is known whenever record_type/record_id were valid.
func TestDecodeRawRejects(t *testing.T) {
	t.Parallel()
	obj := func(edit func(m map[string]any)) string {
		m := map[string]any{}
		_ = json.Unmarshal([]byte(valid), &m)
		edit(m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	set := func(k string, v any) string { return obj(func(m map[string]any) { m[k] = v }) }
	del := func(k string) string { return obj(func(m map[string]any) { delete(m, k) }) }
	raw := func(k, v string) string { // a field with literal JSON
		return strings.Replace(del(k), "{", `{"`+k+`":`+v+",", 1)
	}
	cases := []struct {
		name, data, reason string
		knowsRecord        bool
	}{
		{"empty", ``, event.ReasonInvalidJSON, false},
		{"invalid json", `{"record_type":"customer",`, event.ReasonInvalidJSON, false},
		{"trailing garbage", valid + `x`, event.ReasonInvalidJSON, false},
		{"not utf-8", strings.Replace(valid, "C-1001", "C-\xff", 1), event.ReasonInvalidUTF8, false},
		{"too large", set("changes", map[string]string{"blob": strings.Repeat("x", 300<<10)}), event.ReasonTooLarge, false},
		{"array", `[1,2]`, event.ReasonNotObject, false},
		{"string", `"x"`, event.ReasonNotObject, false},
		{"duplicate top-level key", strings.Replace(valid, `"source":"netsuite"`, `"source":"netsuite","source":"suitex"`, 1), event.ReasonDuplicateKey, false},
		{"duplicate key via escape", strings.Replace(valid, `"source":"netsuite"`, `"source":"netsuite","\u0073ource":"suitex"`, 1), event.ReasonDuplicateKey, false},
		{"duplicate nested key", set("changes", json.RawMessage(`{"a":{"x":1,"x":2}}`)), event.ReasonDuplicateKey, false},
		{"case-folded key", strings.Replace(valid, `"source"`, `"Source"`, 1), event.ReasonUnknownField, true},
		{"unknown field", set("extra", 1), event.ReasonUnknownField, true},
		{"missing source", del("source"), event.ReasonMissingField, true},
		{"missing changes", del("changes"), event.ReasonMissingField, true},
		{"missing record_id", del("record_id"), event.ReasonMissingField, false},
		{"record_id number", set("record_id", 42), event.ReasonWrongType, false},
		{"record_id null", set("record_id", nil), event.ReasonWrongType, false},
		{"record_id empty", set("record_id", ""), event.ReasonInvalidRecordID, false},
		{"record_id control", set("record_id", "C-\u0001"), event.ReasonInvalidRecordID, false},
		{"record_id C1 control", set("record_id", "C-\u0085"), event.ReasonInvalidRecordID, false},
		{"record_id 192 chars", set("record_id", strings.Repeat("é", 192)), event.ReasonInvalidRecordID, false},
		{"record_type upper", set("record_type", "Customer"), event.ReasonInvalidRecordType, false},
		{"record_type 65 chars", set("record_type", "a"+strings.Repeat("b", 64)), event.ReasonInvalidRecordType, false},
		{"unknown source", set("source", "salesforce"), event.ReasonUnknownSource, true},
		{"source number", set("source", 1), event.ReasonWrongType, true},
		{"bad timestamp", set("timestamp", "yesterday"), event.ReasonInvalidTimestamp, true},
		{"timestamp no zone", set("timestamp", "2026-03-13T20:00:00"), event.ReasonInvalidTimestamp, true},
		{"timestamp comma", set("timestamp", "2026-03-13T20:00:00,5Z"), event.ReasonInvalidTimestamp, true},
		{"timestamp month 13", set("timestamp", "2026-13-13T20:00:00Z"), event.ReasonInvalidTimestamp, true},
		{"timestamp year 1", set("timestamp", "0001-01-01T00:00:00Z"), event.ReasonInvalidTimestamp, true},
		{"timestamp number", set("timestamp", 1700000000), event.ReasonWrongType, true},
		{"negative base_version", raw("base_version", "-1"), event.ReasonInvalidBaseVersion, true},
		{"float base_version", raw("base_version", "1.5"), event.ReasonInvalidBaseVersion, true},
		{"integral float base_version", raw("base_version", "1.0"), event.ReasonInvalidBaseVersion, true},
		{"exponent base_version", raw("base_version", "1e2"), event.ReasonInvalidBaseVersion, true},
		{"huge base_version", raw("base_version", "9007199254740992"), event.ReasonInvalidBaseVersion, true},
		{"string base_version", set("base_version", "7"), event.ReasonWrongType, true},
		{"null base_version", set("base_version", nil), event.ReasonWrongType, true},
		{"empty changes", set("changes", map[string]any{}), event.ReasonEmptyChanges, true},
		{"changes array", set("changes", []int{1}), event.ReasonWrongType, true},
		{"changes null", set("changes", nil), event.ReasonWrongType, true},
		{"empty field name", set("changes", map[string]int{"": 1}), event.ReasonInvalidFieldName, true},
		{"control in field name", set("changes", map[string]int{"a\nb": 1}), event.ReasonInvalidFieldName, true},
		{"unrepresentable number", set("changes", json.RawMessage(`{"n":1e400}`)), event.ReasonUnsafeNumber, true},
		{"integer beyond 2^53", set("changes", json.RawMessage(`{"n":9007199254740993}`)), event.ReasonUnsafeNumber, true},
		{"negative integer beyond 2^53", set("changes", json.RawMessage(`{"n":[-9007199254740993]}`)), event.ReasonUnsafeNumber, true},
		{"20-digit integer", set("changes", json.RawMessage(`{"n":{"deep":12345678901234567890}}`)), event.ReasonUnsafeNumber, true},
		{"more digits than a double", set("changes", json.RawMessage(`{"n":0.10000000000000000555}`)), event.ReasonUnsafeNumber, true},
		{"underflow", set("changes", json.RawMessage(`{"n":1e-400}`)), event.ReasonUnsafeNumber, true},
		{"huge exponent", set("changes", json.RawMessage(`{"n":1e-99999999999}`)), event.ReasonUnsafeNumber, true},
		{"lone surrogate value", set("changes", json.RawMessage(`{"s":"\ud800"}`)), event.ReasonInvalidUTF16, false},
		{"lone low surrogate", set("changes", json.RawMessage(`{"s":"a\udc00b"}`)), event.ReasonInvalidUTF16, false},
		{"reversed surrogate pair", set("changes", json.RawMessage(`{"s":"\ude00\ud83d"}`)), event.ReasonInvalidUTF16, false},
		{"lone surrogate in field name", set("changes", json.RawMessage(`{"a\ud800":1}`)), event.ReasonInvalidUTF16, false},
		{"lone surrogate in record_id", strings.Replace(valid, `"C-1001"`, `"BAD-\ud800"`, 1), event.ReasonInvalidUTF16, false},
		{"field name 256 chars", set("changes", map[string]int{strings.Repeat("é", 256): 1}), event.ReasonInvalidFieldName, true},
		{"depth 17", set("changes", json.RawMessage(`{"d":`+strings.Repeat("[", 17)+strings.Repeat("]", 17)+`}`)), event.ReasonTooDeep, false},
		{"depth 17 objects", set("changes", json.RawMessage(`{"d":`+strings.Repeat(`{"a":`, 16)+`{}`+strings.Repeat("}", 16)+`}`)), event.ReasonTooDeep, false},
		{"depth 20000", strings.Replace(valid, `"tags":[ 1, 2 ]`, `"tags":`+strings.Repeat("[", 20000)+strings.Repeat("]", 20000), 1), event.ReasonTooDeep, false},
		{"unbalanced depth 20000", `{"changes":` + strings.Repeat("[", 20000), event.ReasonTooDeep, false},
		{"offset +24:00", set("timestamp", "2026-03-13T20:00:00+24:00"), event.ReasonInvalidTimestamp, true},
		{"offset +23:60", set("timestamp", "2026-03-13T20:00:00+23:60"), event.ReasonInvalidTimestamp, true},
		{"offset -99:00", set("timestamp", "2026-03-13T20:00:00-99:00"), event.ReasonInvalidTimestamp, true},
		{"leap second", set("timestamp", "2016-12-31T23:59:60Z"), event.ReasonInvalidTimestamp, true},
		{"year 0", set("timestamp", "0000-01-01T00:00:00Z"), event.ReasonInvalidTimestamp, true},
		{"year 10000", set("timestamp", "10000-01-01T00:00:00Z"), event.ReasonInvalidTimestamp, true},
		{"february 30", set("timestamp", "2026-02-30T00:00:00Z"), event.ReasonInvalidTimestamp, true},
		{"hour 24", set("timestamp", "2026-03-13T24:00:00Z"), event.ReasonInvalidTimestamp, true},
		{"bad id", set("id", "not-a-uuid"), event.ReasonInvalidID, true},
		{"id without dashes", set("id", "0b6f3c1e8d1f4a579a432f0d7d6b1c55"), event.ReasonInvalidID, true},
		{"nil id", set("id", "00000000-0000-0000-0000-000000000000"), event.ReasonInvalidID, true},
		{"id number", set("id", 5), event.ReasonWrongType, true},
		{"snapshot ref too long", set("full_snapshot_ref", strings.Repeat("x", 1025)), event.ReasonInvalidSnapshotRef, true},
		{"snapshot ref object", set("full_snapshot_ref", map[string]int{}), event.ReasonWrongType, true},
	}
	for _, c := range cases {
		r, err := event.DecodeRaw([]byte(c.data), sources)
		ve, ok := event.AsValidation(err)
		if !ok {
			t.Errorf("%s: err = %v, want a *ValidationError", c.name, err)
			continue
		}
		if ve.Reason != c.reason {
			t.Errorf("%s: reason %q (%s), want %q", c.name, ve.Reason, ve.Detail, c.reason)
		}
		if ve.Detail == "" || len(ve.Detail) > 400 {
			t.Errorf("%s: detail %q: want a short explanation", c.name, ve.Detail)
		}
		if knows := r.RecordType == "customer" && r.RecordID == "C-1001"; knows != c.knowsRecord {
			t.Errorf("%s: partial raw %q:%q, want record known = %v", c.name, r.RecordType, r.RecordID, c.knowsRecord)
		}
	}
}

var knownReasons = []string{
	event.ReasonTooLarge, event.ReasonInvalidUTF8, event.ReasonInvalidJSON, event.ReasonNotObject,
	event.ReasonDuplicateKey, event.ReasonUnknownField, event.ReasonMissingField, event.ReasonWrongType,
	event.ReasonInvalidID, event.ReasonInvalidRecordType, event.ReasonInvalidRecordID, event.ReasonUnknownSource,
	event.ReasonInvalidTimestamp, event.ReasonInvalidBaseVersion, event.ReasonEmptyChanges,
	event.ReasonInvalidFieldName, event.ReasonInvalidChangeValue, event.ReasonInvalidSnapshotRef,
	event.ReasonTooDeep, event.ReasonUnsafeNumber, event.ReasonInvalidUTF16,
}

var hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// FuzzDecodeRaw: the decoder never panics, refuses only with a known reason,
// and what it accepts survives a round trip with the same fingerprint. The
// seed corpus runs in every `go test`; `make fuzz` explores further.
func FuzzDecodeRaw(f *testing.F) {
	seeds := []string{
		valid,
		`{"record_type":"a","record_id":"1","source":"suitex","timestamp":"2026-03-13T20:00:00Z","base_version":0,"changes":{"x":null}}`,
		`{"record_type":"a","record_id":"😀\u2028","source":"suitex","timestamp":"2026-03-13T20:00:00.1+14:00","base_version":9007199254740991,"changes":{"<&>":"\ud83d\ude00","n":[1e-7,{"b":1,"a":2}]}}`,
		`{"record_type":"a","record_id":"\ud800","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":1,"changes":{"x":1}}`,
		``, `null`, `[]`, `{}`, `{"":1}`, `{"a":{"a":{"a":[[[[]]]]}}}`, `{"changes":{"a":1,"a":1}}`,
		`{"record_type":"customer","record_id":"C-1","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":-0,"changes":{"a":1}}`,
		`{"record_type":"customer","record_id":"C-1","source":"netsuite","timestamp":"9999-12-31T23:59:59.999999-01:00","base_version":0,"changes":{"a":1}}`,
		"{\"record_type\":\"customer\",\"record_id\":\"C-1\u0000\",\"source\":\"netsuite\"}",
		"\xef\xbb\xbf{}",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := event.DecodeRaw(data, sources)
		if err != nil {
			ve, ok := event.AsValidation(err)
			if !ok || !slices.Contains(knownReasons, ve.Reason) {
				t.Fatalf("error %v is not a known validation error", err)
			}
			return
		}
		fp := event.Fingerprint(r)
		if !hex64.MatchString(fp) {
			t.Fatalf("fingerprint %q", fp)
		}
		if _, err := event.CanonicalIdentity(r); err != nil {
			t.Fatalf("accepted raw has no canonical identity: %v", err)
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		r2, err := event.DecodeRaw(again, sources)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", again, err)
		}
		if event.Fingerprint(r2) != fp || r2.ID != r.ID || !r2.Timestamp.Equal(r.Timestamp.Time) {
			t.Fatalf("round trip changed the event: %s", again)
		}
	})
}

// TestMarshalKeepsValues: stored and sent JSON is never HTML-escaped.
func TestMarshalKeepsValues(t *testing.T) {
	t.Parallel()
	v := map[string]any{"raw": json.RawMessage(`"<a href='x'>&amp;</a>"`), "s": "<>&", "n": 1}
	got, err := event.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"n":1,"raw":"<a href='x'>&amp;</a>","s":"<>&"}`; string(got) != want {
		t.Errorf("Marshal = %s, want %s", got, want)
	}
	plain, _ := json.Marshal(v)
	if strings.Contains(string(got), `\u003c`) || !strings.Contains(string(plain), `\u003c`) {
		t.Errorf("escaping: event.Marshal %s, json.Marshal %s", got, plain)
	}
}
