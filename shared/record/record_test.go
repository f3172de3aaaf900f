package record_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/record"
	"github.com/backbone-sync/backbone/shared/store"
)

func ev(base uint64, source, changes string) store.Event {
	return store.Event{ID: "e" + string(rune('0'+base)), RecordType: "customer", RecordID: "C-1", Source: source,
		Timestamp: time.Date(2026, 12, 1, 10, 0, int(base), 0, time.UTC), BaseVersion: base, Changes: json.RawMessage(changes)}
}

// Fold applies the events in version order: each field keeps the value,
// version, source and timestamp of its last change, and per source the last
// version that source changed it.
func TestFold(t *testing.T) {
	t.Parallel()
	st, err := record.Fold([]store.Event{
		ev(0, "netsuite", `{"email":"a@x","phone":"1"}`),
		ev(1, "suitex", `{"email":"b@x"}`),
		ev(2, "netsuite", `{"email":1.0}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	e, p := st.Fields["email"], st.Fields["phone"]
	if st.Version != 3 || st.EventID != "e2" || string(e.Value) != `1` || e.Version != 3 || e.Source != "netsuite" ||
		e.BySource["netsuite"] != 3 || e.BySource["suitex"] != 2 || string(p.Value) != `"1"` || p.Version != 1 {
		t.Fatalf("state %+v, email %+v, phone %+v", st, e, p)
	}
	if _, err := record.Fold([]store.Event{ev(0, "netsuite", `{}`), ev(2, "netsuite", `{}`)}); err == nil || !strings.Contains(err.Error(), "gap") {
		t.Errorf("a gap in the chain: err = %v", err)
	}
}

// Apply and Refresh return a new state and leave the receiver as it was: a
// merge transaction may run again from the same state.
func TestApplyAndRefreshDoNotModifyTheReceiver(t *testing.T) {
	t.Parallel()
	st := record.Empty().Apply(ev(0, "netsuite", `{}`), map[string]json.RawMessage{"email": json.RawMessage(`"a@x"`)})
	before, _ := json.Marshal(st)
	next := st.Apply(ev(1, "suitex", `{}`), map[string]json.RawMessage{"email": json.RawMessage(`"b@x"`)})
	later := event.NewTime(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))
	refreshed := st.Refresh([]string{"email", "missing"}, later, "suitex")
	after, _ := json.Marshal(st)
	if string(before) != string(after) {
		t.Fatalf("receiver changed:\n%s\n%s", before, after)
	}
	if string(next.Fields["email"].Value) != `"b@x"` || next.Version != 2 {
		t.Errorf("applied %+v", next.Fields["email"])
	}
	r := refreshed.Fields["email"]
	if !r.Timestamp.Equal(later.Time) || r.Source != "suitex" || string(r.Value) != `"a@x"` || r.Version != 1 || refreshed.Fields["missing"] != nil {
		t.Errorf("refreshed %+v", r)
	}
}

// Parse accepts only the head's own state in this format; anything else
// is rebuilt from the events.
func TestParse(t *testing.T) {
	t.Parallel()
	good, _ := json.Marshal(record.Empty().Apply(ev(0, "netsuite", `{}`), map[string]json.RawMessage{"a": json.RawMessage(`1`)}))
	for _, c := range []struct {
		name string
		head store.Head
		ok   bool
	}{
		{"new record", store.Head{}, true},
		{"the head's state", store.Head{Version: 1, State: good}, true},
		{"no state stored", store.Head{Version: 1}, false},
		{"another version's", store.Head{Version: 2, State: good}, false},
		{"another format", store.Head{Version: 1, State: json.RawMessage(`{"format":0,"version":1}`)}, false},
		{"not JSON", store.Head{Version: 1, State: json.RawMessage(`{`)}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if st, ok := record.Parse(c.head); ok != c.ok || (ok && st.Fields == nil) {
				t.Errorf("Parse = %+v, %v; want ok %v", st, ok, c.ok)
			}
		})
	}
}

// Digest is the same for semantically equal JSON values, different
// otherwise, and 16 hex digits long.
func TestDigest(t *testing.T) {
	t.Parallel()
	same := [][2]string{{`1`, `1.0`}, {`1`, `1e0`}, {`"\u00e9"`, `"é"`}, {`{"a":1,"b":2}`, `{ "b":2, "a":1 }`}}
	for _, p := range same {
		if record.Digest(json.RawMessage(p[0])) != record.Digest(json.RawMessage(p[1])) {
			t.Errorf("%s and %s: different digests", p[0], p[1])
		}
	}
	if d := record.Digest(json.RawMessage(`"1"`)); d == record.Digest(json.RawMessage(`1`)) || len(d) != 16 {
		t.Errorf(`"1" vs 1: %s`, d)
	}
}

// Attempts pairs each sending row with its first outcome row; an attempt
// without one is in doubt, and only a refusal cannot have applied.
func TestAttempts(t *testing.T) {
	t.Parallel()
	fs := func(attempt string) *store.FieldSet {
		return &store.FieldSet{Attempt: attempt, Fields: map[string]string{"email": "d1"}}
	}
	h := []store.Audit{
		{ID: "s1", Stage: "suitex", Outcome: store.OutcomeSending, Version: 2, Fields: fs("")},
		{ID: "m1", Stage: store.StageMerge, Outcome: store.OutcomeAccepted, Fields: fs("")},
		{ID: "o1", Stage: "suitex", Outcome: store.OutcomeDelivered, Version: 2, Fields: fs("s1")},
		{ID: "s2", Stage: "suitex", Outcome: store.OutcomeSending, Version: 3, Fields: fs("")},
		{ID: "o2", Stage: "suitex", Outcome: store.OutcomeRefused, Version: 3, Fields: fs("s2")},
		{ID: "o2b", Stage: "suitex", Outcome: store.OutcomeDelivered, Version: 3, Fields: fs("s2")},
		{ID: "s3", Stage: "suitex", Outcome: store.OutcomeSending, Version: 4, Fields: fs("")},
	}
	at := record.Attempts(h)
	if len(at) != 3 || at[0].Pos != 0 || at[0].Outcome != store.OutcomeDelivered || at[1].Outcome != store.OutcomeRefused || at[2].Outcome != "" {
		t.Fatalf("attempts %+v %+v %+v", at[0], at[1], at[2])
	}
	if !at[0].MayHaveApplied() || at[1].MayHaveApplied() || !at[2].MayHaveApplied() {
		t.Errorf("may have applied: %v %v %v", at[0].MayHaveApplied(), at[1].MayHaveApplied(), at[2].MayHaveApplied())
	}
}

// randomState is a state as merges make them: fields of any JSON value,
// changed by one of a few sources at some version and time, some by more.
func randomState(rng *rand.Rand) *record.State {
	sources := []string{"netsuite", "suitex", "src \"q\" \\ \u0001", "ünï"}
	values := []string{`"a@x"`, `1`, `null`, `true`, `{"a":[1,"b"]}`, `"\u003c\u2028é"`, `-0.5`}
	st := record.Empty()
	for v := uint64(1); v <= uint64(1+rng.IntN(12)); v++ {
		changes := map[string]json.RawMessage{}
		for range 1 + rng.IntN(3) {
			changes[fmt.Sprintf("f%d", rng.IntN(6))] = json.RawMessage(values[rng.IntN(len(values))])
		}
		ts := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC).Add(time.Duration(rng.Int64N(1e15)) * time.Nanosecond)
		st = st.Apply(store.Event{ID: fmt.Sprintf("e%d", v), Source: sources[rng.IntN(len(sources))], Timestamp: ts, BaseVersion: v - 1}, changes)
		if rng.IntN(3) == 0 {
			st = st.Refresh([]string{"f0", "f1"}, event.NewTime(ts.Add(time.Second)), sources[rng.IntN(len(sources))])
		}
	}
	return st
}

// sameState fails unless a and b hold the same fields with the same value,
// version, source, time and per-source versions.
func sameState(t *testing.T, a, b *record.State) {
	t.Helper()
	if a.Version != b.Version || a.EventID != b.EventID || len(a.Fields) != len(b.Fields) {
		t.Fatalf("state %d %s (%d fields), want %d %s (%d fields)", b.Version, b.EventID, len(b.Fields), a.Version, a.EventID, len(a.Fields))
	}
	for name, fa := range a.Fields {
		fb := b.Fields[name]
		if fb == nil || string(fa.Value) != string(fb.Value) || fa.Version != fb.Version || fa.Source != fb.Source ||
			!fa.Timestamp.Equal(fb.Timestamp.Time) || !maps.Equal(fa.BySource, fb.BySource) {
			t.Fatalf("field %s: %+v, want %+v", name, fb, fa)
		}
	}
}

// The state written (format 2, encoded as the merge does, without HTML
// escapes) reads back as the same state, for random states.
func TestStateRoundTrip(t *testing.T) {
	t.Parallel()
	for seed := range uint64(500) {
		st := randomState(rand.New(rand.NewPCG(seed, 3)))
		b, err := event.Marshal(st)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		back, ok := record.Parse(store.Head{Version: st.Version, State: b})
		if !ok || back.Format != 2 {
			t.Fatalf("seed %d: Parse(%s) = %v", seed, b, ok)
		}
		sameState(t, st, back)
		again, _ := event.Marshal(back)
		if string(again) != string(b) {
			t.Fatalf("seed %d: encoded twice differently:\n%s\n%s", seed, b, again)
		}
	}
}

// A state stored in format 1 (before format 2) still reads, so a record
// stored then needs no rebuild.
func TestFormat1StillReads(t *testing.T) {
	t.Parallel()
	v1 := `{"format":1,"version":5,"event_id":"e5","fields":{"email":{"value":"a@x","version":5,"source":"netsuite",` +
		`"timestamp":"2026-12-02T01:02:03.456789Z","by_source":{"netsuite":5,"suitex":3}}}}`
	st, ok := record.Parse(store.Head{Version: 5, State: json.RawMessage(v1)})
	if !ok {
		t.Fatal("format 1 refused")
	}
	e := st.Fields["email"]
	if st.EventID != "e5" || string(e.Value) != `"a@x"` || e.Version != 5 || e.Source != "netsuite" ||
		!e.Timestamp.Equal(time.Date(2026, 12, 2, 1, 2, 3, 456789000, time.UTC)) || e.BySource["suitex"] != 3 || e.BySource["netsuite"] != 5 {
		t.Fatalf("format 1 read as %+v", e)
	}
}

// A format-2 document that breaks its rules is not trusted: the record is
// rebuilt from its events.
func TestBrokenFormat2IsRebuilt(t *testing.T) {
	t.Parallel()
	for name, doc := range map[string]string{
		"four elements":            `{"format":2,"version":1,"event_id":"e","sources":["a"],"fields":{"f":[1,1,0,5]}}`,
		"source out of list":       `{"format":2,"version":1,"event_id":"e","sources":["a"],"fields":{"f":[1,1,1,5,[1]]}}`,
		"negative source":          `{"format":2,"version":1,"event_id":"e","sources":["a"],"fields":{"f":[1,1,-1,5,[1]]}}`,
		"by_source too short":      `{"format":2,"version":1,"event_id":"e","sources":["a","b"],"fields":{"f":[1,1,0,5,[1]]}}`,
		"version not a number":     `{"format":2,"version":1,"event_id":"e","sources":["a"],"fields":{"f":[1,"1",0,5,[1]]}}`,
		"time not an integer":      `{"format":2,"version":1,"event_id":"e","sources":["a"],"fields":{"f":[1,1,0,5.5,[1]]}}`,
		"by_source trailing comma": `{"format":2,"version":1,"event_id":"e","sources":["a"],"fields":{"f":[1,1,0,5,[1,]]}}`,
		"by_source not numbers":    `{"format":2,"version":1,"event_id":"e","sources":["a","b"],"fields":{"f":[1,1,0,5,[1,"x"]]}}`,
		"by_source too long":       `{"format":2,"version":1,"event_id":"e","sources":["a"],"fields":{"f":[1,1,0,5,[1,2]]}}`,
		"by_source not an array":   `{"format":2,"version":1,"event_id":"e","sources":["a"],"fields":{"f":[1,1,0,5,{"a":1}]}}`,
		"value not JSON":           `{"format":2,"version":1,"event_id":"e","sources":["a"],"fields":{"f":[tru,1,0,5,[1]]}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if st, ok := record.Parse(store.Head{Version: 1, State: json.RawMessage(doc)}); ok {
				t.Errorf("Parse(%s) = %+v, want a rebuild", doc, st)
			}
		})
	}
}

// Format 2 is compact: a 20-field record's state takes about 45 bytes a
// field with its name and a short value, where format 1 took about 150.
func TestStateIsCompact(t *testing.T) {
	t.Parallel()
	st := record.Empty()
	for v := uint64(1); v <= 40; v++ {
		src := []string{"netsuite", "suitex"}[v%2]
		changes := map[string]json.RawMessage{fmt.Sprintf("field_%02d", v%20): json.RawMessage(`"v"`)}
		st = st.Apply(store.Event{ID: fmt.Sprintf("0193b2f1-0000-7000-8000-%012x", v), Source: src,
			Timestamp: time.Date(2026, 12, 2, 0, 0, int(v), 123456000, time.UTC), BaseVersion: v - 1}, changes)
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if per := (len(b) - 100) / 20; per > 50 {
		t.Errorf("%d bytes for 20 fields (%d a field): %s", len(b), per, b)
	}
	t.Logf("20 fields: %d bytes", len(b))
}

// FuzzParseState: no stored document makes Parse panic, and whatever it
// accepts encodes and reads back the same.
func FuzzParseState(f *testing.F) {
	for seed := range uint64(5) {
		b, _ := event.Marshal(randomState(rand.New(rand.NewPCG(seed, 3))))
		f.Add(b)
	}
	f.Add([]byte(`{"format":1,"version":1,"event_id":"e","fields":{"a":{"value":1,"version":1,"source":"s","timestamp":"2026-12-02T00:00:00Z","by_source":{"s":1}}}}`))
	f.Add([]byte(`{"format":2,"version":1,"event_id":"e","sources":["a"],"fields":{"f":[1,1,0,5,[1]]}}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		var probe struct {
			Version uint64 `json:"version"`
		}
		_ = json.Unmarshal(doc, &probe)
		st, ok := record.Parse(store.Head{Version: max(probe.Version, 1), State: doc})
		if !ok {
			return
		}
		b, err := event.Marshal(st)
		if err != nil {
			return // a format-1 value that is not JSON: the merge rebuilds it
		}
		back, ok := record.Parse(store.Head{Version: st.Version, State: b})
		if !ok {
			t.Fatalf("re-encoded state refused: %s", b)
		}
		sameState(t, st, back)
	})
}

// A value that is not JSON cannot be stored: the encode fails (the merge
// stores canonical JSON only, so this guards against a bug, not input).
func TestStateWithABrokenValueDoesNotEncode(t *testing.T) {
	t.Parallel()
	st := record.Empty().Apply(ev(0, "netsuite", `{}`), map[string]json.RawMessage{"a": json.RawMessage(`1`)})
	st.Fields["a"].Value = json.RawMessage(`tru`)
	if b, err := event.Marshal(st); err == nil {
		t.Errorf("encoded %s", b)
	}
}
