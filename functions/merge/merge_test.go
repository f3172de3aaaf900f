package mergefunc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/merge"
	"github.com/backbone-sync/backbone/shared/record"
	"github.com/backbone-sync/backbone/shared/store"
)

func TestAcceptedEventIsStoredAndPublished(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ref := "gs://b/s.json"
	r := raw{ID: newID(), RecordType: "customer", RecordID: "C-1001", Source: "netsuite", TS: t0.Add(123456789 * time.Nanosecond),
		Changes: map[string]any{"email": "ada@example.com", "phone": nil}}
	data := strings.Replace(string(r.data()), `{`, `{"full_snapshot_ref":"`+ref+`",`, 1)
	h.pushOK(h.msg([]byte(data)))

	evs := h.history("customer", "C-1001")
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	ev := evs[0]
	if ev.ID != r.ID || ev.BaseVersion != 0 || !ev.Processed || ev.Source != "netsuite" ||
		!ev.Timestamp.Equal(t0.Add(123456*time.Microsecond)) || ev.FullSnapshotRef == nil || *ev.FullSnapshotRef != ref {
		t.Errorf("stored %+v", ev)
	}
	got := h.merged()
	if len(got) != 1 {
		t.Fatalf("%d merged messages, want 1", len(got))
	}
	m := got[0]
	if m.ID != r.ID || m.Version != 1 || m.BaseVersion != 0 || m.Source != "netsuite" || m.Conflicts == nil || len(m.Conflicts) != 0 ||
		string(m.Changes["email"]) != `"ada@example.com"` || string(m.Changes["phone"]) != "null" || m.FullSnapshotRef == nil {
		t.Errorf("merged %+v", m)
	}
	if ts, _ := json.Marshal(m.Timestamp); string(ts) != `"2026-03-13T20:00:00.123456Z"` {
		t.Errorf("merged timestamp %s", ts)
	}
	as := h.audit("customer", "C-1001")
	if len(as) != 1 || as[0].Outcome != store.OutcomeAccepted || as[0].EventID != r.ID || as[0].Version != 1 ||
		as[0].Stage != store.StageMerge || as[0].MessageID == "" || len(as[0].Fingerprint) != 64 || len(as[0].State) != 0 {
		t.Errorf("audit %+v", as)
	}
	if n := len(h.errorsByMessage()); n != 0 {
		t.Errorf("%d error messages for a good event", n)
	}
}

// TestRedelivery: Pub/Sub delivers at least once. Five copies of one message,
// concurrently, give one event, one merged message, and four audited
// duplicates.
func TestRedelivery(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	r := raw{ID: newID(), RecordType: "customer", RecordID: "C-1", Source: "suitex", TS: t0, Changes: map[string]any{"name": "Ada"}}
	m := h.msg(r.data())
	var wg sync.WaitGroup
	codes := make([]int, 5)
	for i := range codes {
		wg.Go(func() { codes[i] = h.push(m) })
	}
	wg.Wait()
	for i, c := range codes {
		if c != 204 {
			t.Errorf("delivery %d: status %d", i, c)
		}
	}
	if evs := h.history("customer", "C-1"); len(evs) != 1 || evs[0].ID != r.ID {
		t.Fatalf("events %+v, want exactly one", evs)
	}
	if got := h.merged(); len(got) != 1 {
		t.Errorf("%d merged messages, want 1", len(got))
	}
	as := h.audit("customer", "C-1")
	n := map[string]int{}
	for _, a := range as {
		n[a.Outcome]++
		if a.Outcome == store.OutcomeDuplicate && (a.EventID != r.ID || a.MessageID != m.ID || a.Version != 1) {
			t.Errorf("duplicate audit row %+v: want the earlier event's id and version", a)
		}
	}
	if n[store.OutcomeAccepted] != 1 || n[store.OutcomeDuplicate] != 4 || len(as) != 5 {
		t.Errorf("audit outcomes %v, want 1 accepted and 4 duplicate", n)
	}
}

// TestRepeatWithNewMetadata: the same change re-sent with a new id and a new
// timestamp is a duplicate (the fingerprint covers neither); an id-less event
// gets the same derived id on every delivery.
func TestRepeatWithNewMetadata(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	first := raw{ID: newID(), RecordType: "customer", RecordID: "C-1", Source: "netsuite", TS: t0, Changes: map[string]any{"email": "a@x", "n": 1}}
	h.send(first)
	again := first
	again.ID, again.TS = newID(), t0.Add(time.Hour)
	again.Changes = map[string]any{"n": 1.0, "email": "a@x"} // same JSON value
	h.send(again)
	if evs := h.history("customer", "C-1"); len(evs) != 1 || evs[0].ID != first.ID {
		t.Fatalf("events %+v, want only the first", evs)
	}
	as := h.audit("customer", "C-1")
	if len(as) != 2 || as[1].Outcome != store.OutcomeDuplicate || as[1].EventID != first.ID || as[1].Fingerprint != as[0].Fingerprint {
		t.Errorf("audit %+v: want accepted then duplicate of %s", as, first.ID)
	}

	noID := raw{RecordType: "customer", RecordID: "C-2", Source: "suitex", TS: t0, Changes: map[string]any{"x": true}}
	h.send(noID)
	noID.TS = t0.Add(time.Minute)
	h.send(noID)
	evs := h.history("customer", "C-2")
	if len(evs) != 1 {
		t.Fatalf("%d events for the id-less change, want 1", len(evs))
	}
	r, err := event.DecodeRaw(noID.data(), []string{"netsuite", "suitex"})
	if err != nil {
		t.Fatal(err)
	}
	if want := event.DerivedID(event.Fingerprint(r)); evs[0].ID != want {
		t.Errorf("id-less event stored as %s, want derived id %s", evs[0].ID, want)
	}
	if n := h.outcomes("customer", "C-2"); n[store.OutcomeDuplicate] != 1 {
		t.Errorf("outcomes %v", n)
	}
	if got := h.merged(); len(got) != 2 {
		t.Errorf("%d merged messages, want 2", len(got))
	}
}

// TestIDConflict: one id, two different changes: the second is refused.
func TestIDConflict(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id := newID()
	h.send(raw{ID: id, RecordType: "customer", RecordID: "C-1", Source: "netsuite", TS: t0, Changes: map[string]any{"a": 1}})
	m := h.send(raw{ID: id, RecordType: "customer", RecordID: "C-1", Source: "netsuite", Base: 1, TS: t0, Changes: map[string]any{"a": 2}})
	e, ok := h.errorsByMessage()[m.ID]
	if !ok || e.Reason != merge.ReasonIDConflict || e.Retryable || e.EventID != id {
		t.Errorf("error message %+v, want permanent id_conflict about %s", e, id)
	}
	if evs := h.history("customer", "C-1"); len(evs) != 1 {
		t.Errorf("%d events, want 1", len(evs))
	}
	if n := h.outcomes("customer", "C-1"); n[store.OutcomeRejected] != 1 {
		t.Errorf("outcomes %v, want one rejected", n)
	}
}

// winner is what SPEC §5 step 3 says a round of two concurrent edits of
// "email" must end with: the later timestamp, then netsuite over suitex.
func roundTimes(i int) (ns, sx time.Time, want string) {
	base := t0.Add(time.Duration(i) * time.Minute)
	switch i % 4 {
	case 0: // netsuite later
		return base.Add(2 * time.Second), base.Add(time.Second), fmt.Sprintf("ns-%d", i)
	case 1: // suitex later
		return base.Add(time.Second), base.Add(2 * time.Second), fmt.Sprintf("sx-%d", i)
	case 2: // equal: source priority
		return base, base, fmt.Sprintf("ns-%d", i)
	default: // suitex later by one microsecond: precision counts
		return base, base.Add(time.Microsecond), fmt.Sprintf("sx-%d", i)
	}
}

// TestConcurrentEdits: in each of 50 rounds NetSuite and SuiteX edit one
// record at the same base version, in parallel. Both edits also change a
// field of their own, so both are stored: the chain grows by exactly two
// per round, gap-free, and "email" ends as step 3 decides whichever edit
// the backbone saw first. The merged messages come out in version order.
func TestConcurrentEdits(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const rounds = 50
	for i := range rounds {
		base := uint64(2 * i)
		nsTS, sxTS, _ := roundTimes(i)
		ns := raw{ID: newID(), RecordType: "customer", RecordID: "C-1", Source: "netsuite", Base: base, TS: nsTS,
			Changes: map[string]any{"email": fmt.Sprintf("ns-%d", i), "credit_limit": i}}
		sx := raw{ID: newID(), RecordType: "customer", RecordID: "C-1", Source: "suitex", Base: base, TS: sxTS,
			Changes: map[string]any{"email": fmt.Sprintf("sx-%d", i), "nickname": fmt.Sprintf("n-%d", i)}}
		var wg sync.WaitGroup
		wg.Go(func() { h.send(ns) })
		wg.Go(func() { h.send(sx) })
		wg.Wait()
	}
	evs := h.history("customer", "C-1")
	if len(evs) != 2*rounds {
		t.Fatalf("%d events, want %d", len(evs), 2*rounds)
	}
	email := ""
	for j, ev := range evs {
		if ev.BaseVersion != uint64(j) || !ev.Processed {
			t.Fatalf("event %d: base_version %d processed %v: the chain must be gap-free and published", j, ev.BaseVersion, ev.Processed)
		}
		var ch map[string]json.RawMessage
		_ = json.Unmarshal(ev.Changes, &ch)
		if v, ok := ch["email"]; ok {
			_ = json.Unmarshal(v, &email)
		}
		if j%2 == 1 {
			_, _, want := roundTimes(j / 2)
			if email != want {
				t.Errorf("round %d: email %q, want %q", j/2, email, want)
			}
		}
	}
	n := h.outcomes("customer", "C-1")
	if n[store.OutcomeAccepted] != rounds || n[store.OutcomeMerged] != rounds {
		t.Errorf("outcomes %v: want one accepted and one merged per round", n)
	}
	got := h.merged()
	if len(got) != 2*rounds {
		t.Fatalf("%d merged messages, want %d", len(got), 2*rounds)
	}
	for j, m := range got {
		if m.Version != uint64(j+1) {
			t.Fatalf("merged message %d has version %d: out of order", j, m.Version)
		}
		if j%2 == 1 {
			// The second of a round weighed its email against the first.
			if len(m.Conflicts) != 1 || m.Conflicts[0].Field != "email" || m.Conflicts[0].OtherVersion != uint64(j) {
				t.Errorf("version %d conflicts %+v", m.Version, m.Conflicts)
				continue
			}
			c := m.Conflicts[0]
			_, won := m.Changes["email"]
			if won != (c.Resolution == merge.ResolutionIncomingWon) {
				t.Errorf("version %d: conflict %+v but email in changes = %v", m.Version, c, won)
			}
			wantRule := merge.RuleLaterTimestamp
			if (j/2)%4 == 2 {
				wantRule = merge.RuleSourcePriority
			}
			if c.Rule != wantRule {
				t.Errorf("version %d: rule %s, want %s", m.Version, c.Rule, wantRule)
			}
		}
	}
}

// TestNoop: a change equal to the current state (JSON semantic equality)
// stores and publishes nothing.
func TestNoop(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.send(raw{ID: newID(), RecordType: "customer", RecordID: "C-1", Source: "netsuite", TS: t0,
		Changes: map[string]any{"email": "a@x", "address": map[string]any{"city": "Berlin", "lines": []any{1, 2}}}})
	if got := h.merged(); len(got) != 1 {
		t.Fatalf("%d merged messages, want 1", len(got))
	}
	same := `{"record_type":"customer","record_id":"C-1","source":"suitex","timestamp":"2026-03-14T00:00:00Z","base_version":1,` +
		`"changes":{"address":{"lines":[1.0,2e0],"city":"Berl\u0069n"},"email":"a@x"}}`
	h.pushOK(h.msg([]byte(same)))
	// An older base with the same value is no conflict either: still a no-op.
	h.send(raw{ID: newID(), RecordType: "customer", RecordID: "C-1", Source: "suitex", Base: 0, TS: t0.Add(-time.Hour), Changes: map[string]any{"email": "a@x"}})

	if evs := h.history("customer", "C-1"); len(evs) != 1 {
		t.Errorf("%d events, want 1", len(evs))
	}
	if got := h.merged(); len(got) != 0 {
		t.Errorf("a no-op published %d messages", len(got))
	}
	if n := h.outcomes("customer", "C-1"); n[store.OutcomeNoop] != 2 || n[store.OutcomeAccepted] != 1 {
		t.Errorf("outcomes %v, want 2 noop", n)
	}
	if n := len(h.errorsByMessage()); n != 0 {
		t.Errorf("%d error messages for no-ops", n)
	}
}

// deliveredTo records what a sink writes when it delivers version v of a
// record to target: a `sending` row just before the request and a
// `delivered` row naming it, both with the digests of the fields sent
// (here v's changes: what the target lacked).
func (h *harness) deliveredTo(target, rt, rid string, v uint64) {
	h.t.Helper()
	ctx := context.Background()
	ev := h.history(rt, rid)[v-1]
	var changes map[string]json.RawMessage
	if err := json.Unmarshal(ev.Changes, &changes); err != nil {
		h.t.Fatal(err)
	}
	sent := record.Digests(changes)
	sending := store.Audit{ID: uuid.Must(uuid.NewV7()).String(), EventID: ev.ID, Fingerprint: strings.Repeat("0", 64), RecordType: rt, RecordID: rid,
		Outcome: store.OutcomeSending, Stage: target, Version: v, MessageID: "sink-" + ev.ID, Fields: &store.FieldSet{Fields: sent}}
	done := sending
	done.ID, done.Outcome, done.Fields = "", store.OutcomeDelivered, &store.FieldSet{Attempt: sending.ID, Fields: sent}
	for _, a := range []store.Audit{sending, done} {
		if err := h.db.Store.AppendAudit(ctx, a); err != nil {
			h.t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // written in order, as a sink does
	}
}

// TestEcho: SPEC §5 step 1. NetSuite sets email (v1), the backbone delivers
// v1 to SuiteX, NetSuite changes email again (v2). SuiteX then re-emits the
// value it received, at base 1 and with a later timestamp: an echo, dropped,
// the record does not regress. A genuine SuiteX change back to an old value
// is kept, both when SuiteX had seen the newer value and when it changed the
// field itself in between.
func TestEcho(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const rt, rid = "customer", "C-7"
	delivered := func(version uint64) {
		t.Helper()
		h.deliveredTo(store.StageSuiteX, rt, rid, version)
	}
	current := func() string {
		t.Helper()
		var email string
		for _, ev := range h.history(rt, rid) {
			var ch map[string]json.RawMessage
			_ = json.Unmarshal(ev.Changes, &ch)
			if v, ok := ch["email"]; ok {
				_ = json.Unmarshal(v, &email)
			}
		}
		return email
	}

	h.send(raw{ID: newID(), RecordType: rt, RecordID: rid, Source: "netsuite", Base: 0, TS: t0, Changes: map[string]any{"email": "old@x", "phone": "1"}})
	delivered(1)
	h.send(raw{ID: newID(), RecordType: rt, RecordID: rid, Source: "netsuite", Base: 1, TS: t0.Add(time.Minute), Changes: map[string]any{"email": "new@x"}})
	h.merged()

	// The echo: SuiteX's webhook fires for the v1 write it received.
	echo := h.send(raw{ID: newID(), RecordType: rt, RecordID: rid, Source: "suitex", Base: 1, TS: t0.Add(time.Hour), Changes: map[string]any{"email": "old@x"}})
	if got := current(); got != "new@x" {
		t.Fatalf("after the echo email is %q: the record regressed", got)
	}
	if n := len(h.history(rt, rid)); n != 2 {
		t.Errorf("%d events after the echo, want 2", n)
	}
	as := h.audit(rt, rid)
	last := as[len(as)-1]
	if last.Outcome != store.OutcomeEcho || last.MessageID != echo.ID || !strings.Contains(last.Detail, `"rule":"echo"`) {
		t.Errorf("echo audited as %+v", last)
	}
	// Nothing new is stored, but SuiteX now holds a value the store does
	// not: the head (v2) is published again so that its sink sends the
	// store's value back (SPEC §7).
	if got := h.merged(); len(got) != 1 || got[0].ID != h.history(rt, rid)[1].ID || got[0].Version != 2 {
		t.Errorf("an echo published %+v, want the head (v2) again", got)
	}

	// An echo among real changes: the echoed field is dropped, the rest kept.
	h.send(raw{ID: newID(), RecordType: rt, RecordID: rid, Source: "suitex", Base: 1, TS: t0.Add(time.Hour), Changes: map[string]any{"email": "old@x", "nickname": "ada"}})
	got := h.merged()
	if len(got) != 1 || got[0].Version != 3 || len(got[0].Changes) != 1 || got[0].Changes["nickname"] == nil ||
		len(got[0].Conflicts) != 1 || got[0].Conflicts[0].Rule != merge.RuleEcho || got[0].Conflicts[0].OtherVersion != 1 {
		t.Errorf("echo with a real change published %+v", got)
	}
	if current() != "new@x" {
		t.Fatal("partial echo regressed email")
	}

	// Genuine change back: SuiteX saw v2 (delivered) and its user sets the
	// old value again.
	delivered(2)
	delivered(3)
	h.send(raw{ID: newID(), RecordType: rt, RecordID: rid, Source: "suitex", Base: 3, TS: t0.Add(2 * time.Hour), Changes: map[string]any{"email": "old@x"}})
	if got := current(); got != "old@x" {
		t.Errorf("a genuine change back to an old value was dropped: email %q", got)
	}

	// Genuine change back after SuiteX changed the field itself: v5 sets
	// email from SuiteX, v6 sets it back to new@x — the very value the
	// newest delivery to SuiteX carrying email (v2) had. Not an echo: SuiteX
	// changed email after that delivery.
	h.send(raw{ID: newID(), RecordType: rt, RecordID: rid, Source: "suitex", Base: 4, TS: t0.Add(3 * time.Hour), Changes: map[string]any{"email": "mine@x"}})
	h.send(raw{ID: newID(), RecordType: rt, RecordID: rid, Source: "suitex", Base: 5, TS: t0.Add(4 * time.Hour), Changes: map[string]any{"email": "new@x"}})
	if got := current(); got != "new@x" {
		t.Errorf("SuiteX's change after its own edit was dropped: email %q", got)
	}
	if n := len(h.history(rt, rid)); n != 6 {
		t.Errorf("%d events, want 6", n)
	}
}

// TestEchoNotAfterOwnChange: the newest delivery to SuiteX carrying email
// (v1) holds the incoming value, but SuiteX changed email itself after it
// (v2), so sending that value again is SuiteX's user changing it back, not
// an echo — even though NetSuite has changed email since (v4, not yet
// delivered). Step 3 then decides: the later timestamp wins.
func TestEchoNotAfterOwnChange(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const rt, rid = "customer", "C-9"
	delivered := func(v uint64) {
		t.Helper()
		h.deliveredTo(store.StageSuiteX, rt, rid, v)
	}
	h.send(raw{ID: newID(), RecordType: rt, RecordID: rid, Source: "netsuite", Base: 0, TS: t0, Changes: map[string]any{"email": "a@x"}})
	delivered(1)
	h.send(raw{ID: newID(), RecordType: rt, RecordID: rid, Source: "suitex", Base: 1, TS: t0.Add(time.Minute), Changes: map[string]any{"email": "b@x"}})
	h.send(raw{ID: newID(), RecordType: rt, RecordID: rid, Source: "netsuite", Base: 2, TS: t0.Add(2 * time.Minute), Changes: map[string]any{"phone": "1"}})
	delivered(3)
	h.send(raw{ID: newID(), RecordType: rt, RecordID: rid, Source: "netsuite", Base: 3, TS: t0.Add(3 * time.Minute), Changes: map[string]any{"email": "c@x"}})
	h.send(raw{ID: newID(), RecordType: rt, RecordID: rid, Source: "suitex", Base: 3, TS: t0.Add(4 * time.Minute), Changes: map[string]any{"email": "a@x"}})
	evs := h.history(rt, rid)
	if len(evs) != 5 || evs[4].Source != "suitex" || string(evs[4].Changes) != `{"email":"a@x"}` {
		t.Fatalf("SuiteX's change back was not kept: %d events", len(evs))
	}
	if n := h.outcomes(rt, rid); n[store.OutcomeMerged] != 1 || n[store.OutcomeEcho] != 0 {
		t.Errorf("outcomes %v: want the change back merged (it won a conflict with v4), no echo", n)
	}
}

// TestEchoNeedsADelivery: without a `delivered` row, a stale SuiteX value is
// a concurrent edit (step 3), not an echo: only deliveries count.
func TestEchoNeedsADelivery(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.send(raw{ID: newID(), RecordType: "customer", RecordID: "C-1", Source: "netsuite", TS: t0, Changes: map[string]any{"email": "old@x"}})
	h.send(raw{ID: newID(), RecordType: "customer", RecordID: "C-1", Source: "netsuite", Base: 1, TS: t0.Add(time.Minute), Changes: map[string]any{"email": "new@x"}})
	h.send(raw{ID: newID(), RecordType: "customer", RecordID: "C-1", Source: "suitex", Base: 1, TS: t0.Add(time.Hour), Changes: map[string]any{"email": "old@x"}})
	evs := h.history("customer", "C-1")
	if len(evs) != 3 {
		t.Fatalf("%d events, want 3 (the later SuiteX edit wins the conflict)", len(evs))
	}
	if n := h.outcomes("customer", "C-1"); n[store.OutcomeMerged] != 1 || n[store.OutcomeEcho] != 0 {
		t.Errorf("outcomes %v", n)
	}
}

// TestVersionGap: a base ahead of the chain is parked as a retryable
// version_gap, audited deferred, and stores nothing; once the chain catches
// up the same message merges.
func TestVersionGap(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ahead := h.send(raw{ID: newID(), RecordType: "customer", RecordID: "C-1", Source: "netsuite", Base: 2, TS: t0, Changes: map[string]any{"c": 3}})
	errs := h.errorsByMessage()
	e, ok := errs[ahead.ID]
	if !ok || e.Reason != merge.ReasonVersionGap || !e.Retryable || e.Stage != store.StageMerge ||
		e.RecordType != "customer" || e.RecordID != "C-1" || string(e.Original.Data) != string(ahead.Data) ||
		e.Original.Subscription != ahead.Subscription || e.Original.Attributes["env"] != string(env) {
		t.Fatalf("error message %+v, want a retryable version_gap carrying the original", e)
	}
	if n := len(h.history("customer", "C-1")); n != 0 {
		t.Errorf("%d events stored for a gap", n)
	}
	if n := h.outcomes("customer", "C-1"); n[store.OutcomeDeferred] != 1 || len(n) != 1 {
		t.Errorf("outcomes %v, want one deferred", n)
	}
	if got := h.merged(); len(got) != 0 {
		t.Errorf("a gap published %d merged messages", len(got))
	}
	h.send(raw{ID: newID(), RecordType: "customer", RecordID: "C-1", Source: "netsuite", Base: 0, TS: t0, Changes: map[string]any{"a": 1}})
	h.send(raw{ID: newID(), RecordType: "customer", RecordID: "C-1", Source: "netsuite", Base: 1, TS: t0, Changes: map[string]any{"b": 2}})
	h.pushOK(ahead) // what Retry does
	evs := h.history("customer", "C-1")
	if len(evs) != 3 || string(evs[2].Changes) != `{"c":3}` {
		t.Errorf("after the gap closed: %d events", len(evs))
	}
	if len(h.errorsByMessage()) != 0 {
		t.Error("error messages after the gap closed")
	}
}

// TestMergedMessagesKeepRecordsApart: many records in parallel, each its own
// chain, each in order on the topic.
func TestMergedMessagesKeepRecordsApart(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const records, per = 8, 6
	var wg sync.WaitGroup
	for r := range records {
		wg.Go(func() {
			for v := range per {
				h.send(raw{ID: newID(), RecordType: "order", RecordID: fmt.Sprintf("O-%d", r), Source: "suitex", Base: uint64(v), TS: t0,
					Changes: map[string]any{"line": v}})
			}
		})
	}
	wg.Wait()
	next := map[string]uint64{}
	for _, m := range h.merged() {
		next[m.RecordID]++
		if m.Version != next[m.RecordID] {
			t.Errorf("%s: version %d arrived when %d was due", m.RecordID, m.Version, next[m.RecordID])
		}
	}
	if len(next) != records {
		t.Errorf("messages for %d records, want %d", len(next), records)
	}
	for id, n := range next {
		if n != per {
			t.Errorf("%s: %d messages, want %d", id, n, per)
		}
	}
}
