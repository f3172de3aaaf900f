package record_test

import (
	"encoding/json"
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
