package event_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/shared/event"
)

var sources = []string{"netsuite", "suitex"}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestFingerprintVectors checks the fingerprint against canonical JSON
// written out by hand (RFC 8785: keys sorted by UTF-16 code units, ES6
// number form, minimal string escapes) and hashed here, independently of the
// code under test.
func TestFingerprintVectors(t *testing.T) {
	t.Parallel()
	const example = `{"base_version":7,"changes":{"email":"ada@example.com","phone":null},"record_id":"C-1001","record_type":"customer","source":"netsuite"}`
	cases := []struct {
		name, data, canonical string
	}{
		{
			name:      "spec example",
			data:      `{"id":"0b6f3c1e-8d1f-4a57-9a43-2f0d7d6b1c55","record_type":"customer","record_id":"C-1001","source":"netsuite","timestamp":"2026-03-13T20:00:00.123456Z","base_version":7,"changes":{"email":"ada@example.com","phone":null},"full_snapshot_ref":"gs://bucket/snapshots/customer/C-1001/7.json"}`,
			canonical: example,
		},
		{
			name: "id, timestamp, snapshot, key order and whitespace do not count",
			data: `{ "changes" : { "phone" : null ,
			        "email" : "ada@example.com" },
			        "base_version": 7, "timestamp": "2031-01-01T00:00:00+05:00",
			        "source":"netsuite", "record_id":"C-1001", "record_type":"customer",
			        "id":"6f1d2b0a-1111-4222-8333-944455556666" }`,
			canonical: example,
		},
		{
			name:      "numbers in ES6 form",
			data:      `{"record_type":"customer","record_id":"C-1","source":"suitex","timestamp":"2026-03-13T20:00:00Z","base_version":0,"changes":{"n1":1.0,"n2":1e2,"n3":-0,"n4":0.1,"n5":1E-7,"n6":1.2345678901234568e20,"n7":-12.50}}`,
			canonical: `{"base_version":0,"changes":{"n1":1,"n2":100,"n3":0,"n4":0.1,"n5":1e-7,"n6":123456789012345680000,"n7":-12.5},"record_id":"C-1","record_type":"customer","source":"suitex"}`,
		},
		{
			name:      "string escapes",
			data:      `{"record_type":"customer","record_id":"C-1","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":1,"changes":{"s":"\u00e9\n\t\"\\\/<>&\u001f` + "\x7f" + `"}}`,
			canonical: `{"base_version":1,"changes":{"s":"é\n\t\"\\/<>&\u001f` + "\x7f" + `"},"record_id":"C-1","record_type":"customer","source":"netsuite"}`,
		},
		{
			name:      "keys sorted by UTF-16 code units, not code points",
			data:      `{"record_type":"customer","record_id":"C-1","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":2,"changes":{"ﬀ":1,"😀":2,"€":3,"\u00e9":4,"a":5,"A":6}}`,
			canonical: `{"base_version":2,"changes":{"A":6,"a":5,"é":4,"€":3,"😀":2,"ﬀ":1},"record_id":"C-1","record_type":"customer","source":"netsuite"}`,
		},
		{
			name:      "nested objects and arrays",
			data:      `{"record_type":"customer","record_id":"C-1","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":3,"changes":{"addr":{"zip":"10115","city":"Berlin","lines":["a",{"y":true,"x":false}],"empty":{}}}}`,
			canonical: `{"base_version":3,"changes":{"addr":{"city":"Berlin","empty":{},"lines":["a",{"x":false,"y":true}],"zip":"10115"}},"record_id":"C-1","record_type":"customer","source":"netsuite"}`,
		},
		{
			name:      "4-byte record id and the largest base version",
			data:      `{"record_type":"sales_order","record_id":"客户-😀","source":"suitex","timestamp":"2026-03-13T20:00:00Z","base_version":9007199254740991,"changes":{"status":"open"}}`,
			canonical: `{"base_version":9007199254740991,"changes":{"status":"open"},"record_id":"客户-😀","record_type":"sales_order","source":"suitex"}`,
		},
	}
	seen := map[string]string{}
	for _, c := range cases {
		r, err := event.DecodeRaw([]byte(c.data), sources)
		if err != nil {
			t.Fatalf("%s: decode: %v", c.name, err)
		}
		canon, err := event.CanonicalIdentity(r)
		if err != nil {
			t.Fatalf("%s: canonical: %v", c.name, err)
		}
		if string(canon) != c.canonical {
			t.Errorf("%s: canonical\n got %s\nwant %s", c.name, canon, c.canonical)
		}
		want := sha(c.canonical)
		got := event.Fingerprint(r)
		if got != want {
			t.Errorf("%s: fingerprint %s, want %s", c.name, got, want)
		}
		if prev, ok := seen[got]; ok && c.canonical != example {
			t.Errorf("%s: same fingerprint as %s", c.name, prev)
		}
		seen[got] = c.name
	}
	if len(seen) != len(cases)-1 {
		t.Errorf("%d distinct fingerprints for %d cases (two are the same change)", len(seen), len(cases))
	}
}

func TestFingerprintDistinguishesTheChange(t *testing.T) {
	t.Parallel()
	base := event.Raw{RecordType: "customer", RecordID: "C-1", Source: "netsuite", BaseVersion: 1,
		Changes: map[string]json.RawMessage{"email": json.RawMessage(`"a@x"`)}}
	fp := event.Fingerprint(base)
	variants := map[string]func(r *event.Raw){
		"base_version": func(r *event.Raw) { r.BaseVersion = 2 },
		"record_id":    func(r *event.Raw) { r.RecordID = "c-1" },
		"record_type":  func(r *event.Raw) { r.RecordType = "vendor" },
		"source":       func(r *event.Raw) { r.Source = "suitex" },
		"value":        func(r *event.Raw) { r.Changes = map[string]json.RawMessage{"email": json.RawMessage(`"b@x"`)} },
		"null value":   func(r *event.Raw) { r.Changes = map[string]json.RawMessage{"email": json.RawMessage(`null`)} },
		"field":        func(r *event.Raw) { r.Changes = map[string]json.RawMessage{"Email": json.RawMessage(`"a@x"`)} },
	}
	for name, mutate := range variants {
		r := base
		mutate(&r)
		if event.Fingerprint(r) == fp {
			t.Errorf("changing %s kept the fingerprint", name)
		}
	}
	same := base
	same.ID = uuid.NewString()
	same.Timestamp = event.NewTime(same.Timestamp.AddDate(1, 0, 0))
	ref := "gs://x"
	same.FullSnapshotRef = &ref
	if event.Fingerprint(same) != fp {
		t.Error("id, timestamp or full_snapshot_ref changed the fingerprint")
	}
	// A Raw no decoder would return still gets a stable, distinct hash.
	bad := base
	bad.Changes = map[string]json.RawMessage{"email": json.RawMessage(`{not json`)}
	if f1, f2 := event.Fingerprint(bad), event.Fingerprint(bad); f1 != f2 || len(f1) != 64 || f1 == fp {
		t.Errorf("fingerprint of a non-canonical raw: %s / %s", f1, f2)
	}
}

func TestDerivedID(t *testing.T) {
	t.Parallel()
	data := `{"record_type":"customer","record_id":"C-1","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":0,"changes":{"a":1}}`
	r, err := event.DecodeRaw([]byte(data), sources)
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != "" {
		t.Fatalf("id = %q, want empty when absent", r.ID)
	}
	fp := event.Fingerprint(r)
	id := event.DerivedID(fp)
	u, err := uuid.Parse(id)
	if err != nil || u.Version() != 5 || u.String() != id {
		t.Fatalf("derived id %q: version %d, err %v", id, u.Version(), err)
	}
	if again := event.DerivedID(fp); again != id {
		t.Errorf("derived id not stable: %s then %s", id, again)
	}
	if other := event.DerivedID(sha("x")); other == id {
		t.Error("two fingerprints derived one id")
	}
	// Pinned: the namespace must never change, or redeliveries of events
	// stored before the change would get new ids.
	if got := event.DerivedID(strings.Repeat("0", 64)); got != pinnedDerivedID {
		t.Errorf("DerivedID(000…) = %s, want %s", got, pinnedDerivedID)
	}
}

// pinnedDerivedID is DerivedID of 64 zeros under the fixed namespace.
const pinnedDerivedID = "7d7221f6-a069-5a59-bd89-e9ca16d6be82" // python3: uuid.uuid5(UUID(namespace), "0"*64)

func TestSameJSON(t *testing.T) {
	t.Parallel()
	same := [][2]string{
		{`{"a":1,"b":[1,2]}`, `{ "b" : [1, 2.0], "a" : 1e0 }`},
		{`"é"`, `"\u00e9"`},
		{`null`, ` null `},
		{`-0`, `0`},
	}
	for _, c := range same {
		if !event.SameJSON(json.RawMessage(c[0]), json.RawMessage(c[1])) {
			t.Errorf("SameJSON(%s, %s) = false", c[0], c[1])
		}
	}
	differ := [][2]string{
		{`1`, `"1"`},
		{`null`, `""`},
		{`[1,2]`, `[2,1]`},
		{`{"a":1}`, `{"a":1,"b":null}`},
		{`"A"`, `"a"`},
	}
	for _, c := range differ {
		if event.SameJSON(json.RawMessage(c[0]), json.RawMessage(c[1])) {
			t.Errorf("SameJSON(%s, %s) = true", c[0], c[1])
		}
	}
}
