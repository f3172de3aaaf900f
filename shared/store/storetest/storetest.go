// Package storetest is the conformance suite every store.Store driver must
// pass, run against the real server (as gocloud.dev's drivertest is for its
// pubsub drivers).
package storetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/shared/store"
)

// Factory returns a fresh, empty, migrated store for one test.
type Factory func(t *testing.T) store.Store

// Run runs the whole suite.
func Run(t *testing.T, newStore Factory) {
	tests := map[string]func(*testing.T, store.Store){
		"AppendAndRead":            testAppendAndRead,
		"MicrosecondsRoundTrip":    testMicroseconds,
		"BytesRoundTrip":           testBytesRoundTrip,
		"CaseSensitiveRecords":     testCaseSensitive,
		"VersionTaken":             testVersionTaken,
		"DuplicateID":              testDuplicateID,
		"FingerprintLookup":        testFingerprint,
		"HeadAndHistory":           testHeadAndHistory,
		"MarkProcessedAndOutbox":   testMarkProcessed,
		"SystemHistory":            testSystemHistory,
		"KnownHistory":             testKnownHistory,
		"DeadLettersIdempotent":    testDeadLetters,
		"DeadLetterIDReused":       testDeadLetterIDReused,
		"ConcurrentAppendsGapFree": testConcurrentAppends,
		"TxRollsBackOnError":       testTxRollback,
		"ExclusiveSerialises":      testExclusive,
		"ConcurrentMarkProcessed":  testConcurrentMark,
		"LockRecordProbes":         testLockProbes,
		"MarkProcessedAcrossTx":    testMarkAcrossTx,
	}
	for name, fn := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn(t, newStore(t))
		})
	}
}

func fp(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// NewEvent builds a valid event for tests.
func NewEvent(rt, rid string, base uint64, changes string) store.Event {
	return store.Event{
		ID: uuid.NewString(), RecordType: rt, RecordID: rid, Source: "netsuite",
		Timestamp:   time.Date(2026, 3, 13, 20, 0, 0, 123456000, time.UTC),
		BaseVersion: base, Changes: json.RawMessage(changes),
	}
}

func accepted(e store.Event, fingerprint string) store.Audit {
	return store.Audit{Fingerprint: fingerprint, RecordType: e.RecordType, RecordID: e.RecordID,
		Outcome: store.OutcomeAccepted, Stage: store.StageMerge, MessageID: "m-" + e.ID,
		State: json.RawMessage(fmt.Sprintf(`{"v":%d}`, e.Version()))}
}

func testAppendAndRead(t *testing.T, s store.Store) {
	ctx := context.Background()
	ref := "gs://bucket/snapshots/customer/C-1/1.json"
	e := NewEvent("customer", "C-1", 0, `{"email":"ada@example.com","phone":null}`)
	e.FullSnapshotRef = &ref
	if err := s.AppendEvent(ctx, e, accepted(e, fp("a"))); err != nil {
		t.Fatal(err)
	}
	got, err := s.EventByID(ctx, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != e.ID || got.RecordType != "customer" || got.RecordID != "C-1" || got.Source != "netsuite" ||
		got.BaseVersion != 0 || got.Version() != 1 || string(got.Changes) != string(e.Changes) ||
		got.FullSnapshotRef == nil || *got.FullSnapshotRef != ref || got.Processed || got.CreatedAt.IsZero() {
		t.Errorf("read back %+v", got)
	}
	audits, err := s.AuditForEvent(ctx, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(audits) != 1 || audits[0].Outcome != store.OutcomeAccepted || audits[0].Version != 1 ||
		audits[0].EventID != e.ID || audits[0].Fingerprint != fp("a") || audits[0].MessageID != "m-"+e.ID ||
		len(audits[0].State) != 0 {
		t.Errorf("audit %+v (the state belongs to the record's head, not to the audit row)", audits)
	}
	if h, err := s.Head(ctx, "customer", "C-1"); err != nil || h.Version != 1 || string(h.State) != `{"v":1}` || h.NewestID != e.ID {
		t.Errorf("head after the append = %+v (%s), %v; want version 1 with the state", h, h.State, err)
	}
	if _, err := s.EventByID(ctx, uuid.NewString()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing event: err = %v, want ErrNotFound", err)
	}
	if err := s.AppendAudit(ctx, store.Audit{Fingerprint: fp("x"), RecordType: "customer", RecordID: "C-1", Outcome: store.OutcomeRejected, Stage: store.StageMerge, Detail: "bad"}); err != nil {
		t.Fatal(err)
	}
	trail, err := s.AuditTrail(ctx, "customer", "C-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(trail) != 2 || trail[1].Outcome != store.OutcomeRejected || trail[1].EventID != "" || trail[1].Detail != "bad" {
		t.Errorf("trail %+v", trail)
	}
}

func testMicroseconds(t *testing.T, s store.Store) {
	ctx := context.Background()
	for i, ts := range []time.Time{
		time.Date(2026, 3, 13, 20, 0, 0, 123456000, time.UTC),
		time.Date(2026, 3, 13, 20, 0, 0, 1000, time.UTC),
		time.Date(2026, 3, 13, 20, 0, 0, 999999000, time.UTC),
		time.Date(2099, 12, 31, 23, 59, 59, 500001000, time.UTC), // past 2038
	} {
		e := NewEvent("order", fmt.Sprintf("O-%d", i), 0, `{"a":1}`)
		e.Timestamp = ts
		before := time.Now().UTC().Truncate(time.Microsecond)
		if err := s.AppendEvent(ctx, e, accepted(e, fp(e.ID))); err != nil {
			t.Fatal(err)
		}
		got, err := s.EventByID(ctx, e.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Timestamp.Equal(ts) || got.Timestamp.Location() != time.UTC {
			t.Errorf("timestamp %v came back as %v", ts, got.Timestamp)
		}
		// created_at is the server's CURRENT_TIMESTAMP(6): it must carry
		// microseconds (not .000000) and be UTC.
		if got.CreatedAt.Before(before.Add(-time.Minute)) || got.CreatedAt.Location() != time.UTC {
			t.Errorf("created_at %v", got.CreatedAt)
		}
		audits, _ := s.AuditForEvent(ctx, e.ID)
		if len(audits) != 1 || audits[0].CreatedAt.IsZero() {
			t.Fatalf("audit %+v", audits)
		}
	}
	// Over several rows, a DATETIME(0) column would give only whole seconds.
	var fractional int
	for i := 0; i < 5; i++ {
		e := NewEvent("order", fmt.Sprintf("F-%d", i), 0, `{"a":1}`)
		if err := s.AppendEvent(ctx, e, accepted(e, fp(e.ID))); err != nil {
			t.Fatal(err)
		}
		got, _ := s.EventByID(ctx, e.ID)
		if got.CreatedAt.Nanosecond() != 0 {
			fractional++
		}
		if got.CreatedAt.Nanosecond()%1000 != 0 {
			t.Errorf("created_at finer than microseconds: %v", got.CreatedAt)
		}
	}
	if fractional == 0 {
		t.Error("created_at never had a fractional second: microseconds are lost")
	}
}

func testBytesRoundTrip(t *testing.T, s store.Store) {
	ctx := context.Background()
	ids := []string{
		"C-😀-𝄞-漢字",
		`quote's "double" back\slash`,
		"'; DROP TABLE events; --",
		`\x00 literal \n not a newline`,
		"Robert'); DELETE FROM events WHERE ('1'='1",
		"%_ like wildcards",
	}
	changes := []string{
		`{"name":"Ada 😀 𝄞","note":"it's \"quoted\" \\ back"}`,
		`{"sql":"1'; DROP TABLE events; --","emoji":"🦄"}`,
		`{"nested":{"a":[1,2,{"b":null}]},"u":"\u00e9"}`,
	}
	for i, rid := range ids {
		e := NewEvent("customer", rid, 0, changes[i%len(changes)])
		if err := s.AppendEvent(ctx, e, accepted(e, fp(e.ID))); err != nil {
			t.Fatalf("append %q: %v", rid, err)
		}
		got, err := s.EventByID(ctx, e.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.RecordID != rid {
			t.Errorf("record_id %q came back as %q", rid, got.RecordID)
		}
		if string(got.Changes) != string(e.Changes) {
			t.Errorf("changes %s came back as %s", e.Changes, got.Changes)
		}
		h, err := s.Head(ctx, "customer", rid)
		if err != nil || h.Version != 1 {
			t.Errorf("head of %q = %+v, %v", rid, h, err)
		}
	}
}

func testCaseSensitive(t *testing.T, s store.Store) {
	ctx := context.Background()
	upper := NewEvent("customer", "C-1", 0, `{"a":1}`)
	lower := NewEvent("customer", "c-1", 0, `{"a":2}`)
	for _, e := range []store.Event{upper, lower} {
		if err := s.AppendEvent(ctx, e, accepted(e, fp(e.ID))); err != nil {
			t.Fatalf("append %s: %v", e.RecordID, err)
		}
	}
	for rid, want := range map[string]string{"C-1": upper.ID, "c-1": lower.ID} {
		h, err := s.History(ctx, "customer", rid)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != 1 || h[0].ID != want {
			t.Errorf("history of %s = %+v", rid, h)
		}
	}
}

func testVersionTaken(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := NewEvent("customer", "V-1", 0, `{"a":1}`)
	b := NewEvent("customer", "V-1", 0, `{"a":2}`)
	if err := s.AppendEvent(ctx, a, accepted(a, fp(a.ID))); err != nil {
		t.Fatal(err)
	}
	// Outside InTx's retry: the raw insert reports the lost race.
	err := s.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		err := tx.AppendEvent(ctx, b, accepted(b, fp(b.ID)))
		if errors.Is(err, store.ErrVersionTaken) {
			return fmt.Errorf("seen: %w", errStop)
		}
		return err
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("second append at the same version: %v, want ErrVersionTaken", err)
	}
	if _, err := s.EventByID(ctx, b.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("losing event stored: %v", err)
	}
	if audits, _ := s.AuditForEvent(ctx, b.ID); len(audits) != 0 {
		t.Errorf("losing event's audit row stored: %+v", audits)
	}
}

var errStop = errors.New("stop")

func testDuplicateID(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := NewEvent("customer", "D-1", 0, `{"a":1}`)
	if err := s.AppendEvent(ctx, a, accepted(a, fp(a.ID))); err != nil {
		t.Fatal(err)
	}
	b := a
	b.RecordID = "D-2"
	if err := s.AppendEvent(ctx, b, accepted(b, fp(b.ID))); !errors.Is(err, store.ErrDuplicateID) {
		t.Errorf("same id twice: %v, want ErrDuplicateID", err)
	}
}

func testFingerprint(t *testing.T, s store.Store) {
	ctx := context.Background()
	e := NewEvent("customer", "F-1", 0, `{"a":1}`)
	if err := s.AppendEvent(ctx, e, accepted(e, fp("raw-1"))); err != nil {
		t.Fatal(err)
	}
	// A duplicate's audit row carries the same fingerprint and must not
	// confuse the lookup; a rejected row with another fingerprint neither.
	if err := s.AppendAudit(ctx, store.Audit{EventID: e.ID, Fingerprint: fp("raw-1"), RecordType: "customer", RecordID: "F-1", Outcome: store.OutcomeDuplicate}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendAudit(ctx, store.Audit{Fingerprint: fp("raw-2"), RecordType: "customer", RecordID: "F-1", Outcome: store.OutcomeRejected}); err != nil {
		t.Fatal(err)
	}
	// Both probes in one round trip.
	for _, c := range []struct {
		id, fp       string
		wantID, want bool
	}{
		{e.ID, fp("raw-1"), true, true},
		{e.ID, fp("raw-2"), true, false},
		{"", fp("raw-1"), false, true},
		{uuid.NewString(), fp("nope"), false, false},
	} {
		byID, byFP, err := s.Duplicates(ctx, c.id, c.fp)
		if err != nil || (byID != nil) != c.wantID || (byFP != nil) != c.want ||
			(byID != nil && byID.ID != e.ID) || (byFP != nil && byFP.ID != e.ID) {
			t.Errorf("Duplicates(%q, %q) = %v, %v, %v", c.id, c.fp, byID, byFP, err)
		}
	}
}

func testHeadAndHistory(t *testing.T, s store.Store) {
	ctx := context.Background()
	h, err := s.Head(ctx, "customer", "H-1")
	if err != nil || h.Version != 0 || h.State != nil {
		t.Fatalf("head of new record = %+v, %v", h, err)
	}
	var ids []string
	for v := uint64(0); v < 5; v++ {
		e := NewEvent("customer", "H-1", v, fmt.Sprintf(`{"n":%d}`, v))
		ids = append(ids, e.ID)
		err := s.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			h, _, err := tx.LockRecord(ctx, "customer", "H-1", store.Probe{})
			if err != nil {
				return err
			}
			if h.Version != v {
				return fmt.Errorf("locked head version %d, want %d", h.Version, v)
			}
			return tx.AppendEvent(ctx, e, accepted(e, fp(e.ID)))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	h, err = s.Head(ctx, "customer", "H-1")
	if err != nil || h.Version != 5 || string(h.State) != `{"v":5}` || h.NewestID != ids[4] || h.NewestProcessed {
		t.Errorf("head = %+v (%s), %v", h, h.State, err)
	}
	if err := s.MarkProcessed(ctx, ids[4]); err != nil {
		t.Fatal(err)
	}
	if h, err = s.Head(ctx, "customer", "H-1"); err != nil || !h.NewestProcessed {
		t.Errorf("head after MarkProcessed = %+v, %v", h, err)
	}
	hist, err := s.History(ctx, "customer", "H-1")
	if err != nil || len(hist) != 5 {
		t.Fatalf("history: %d, %v", len(hist), err)
	}
	for i, e := range hist {
		if e.ID != ids[i] || e.BaseVersion != uint64(i) {
			t.Errorf("history[%d] = %s base %d", i, e.ID, e.BaseVersion)
		}
	}
}

func testMarkProcessed(t *testing.T, s store.Store) {
	ctx := context.Background()
	e := NewEvent("customer", "P-1", 0, `{"a":1}`)
	if err := s.AppendEvent(ctx, e, accepted(e, fp(e.ID))); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	un, err := s.Unprocessed(ctx, later, 10)
	if err != nil || len(un) != 1 || un[0].ID != e.ID {
		t.Fatalf("unprocessed = %+v, %v", un, err)
	}
	if un, _ := s.Unprocessed(ctx, time.Now().Add(-time.Hour), 10); len(un) != 0 {
		t.Errorf("older-than filter ignored: %+v", un)
	}
	for i := 0; i < 2; i++ { // the second call is a no-op, not an error
		if err := s.MarkProcessed(ctx, e.ID); err != nil {
			t.Fatalf("mark processed (call %d): %v", i+1, err)
		}
	}
	got, _ := s.EventByID(ctx, e.ID)
	if !got.Processed {
		t.Error("processed not set")
	}
	if un, _ := s.Unprocessed(ctx, later, 10); len(un) != 0 {
		t.Errorf("still unprocessed: %+v", un)
	}
}

// historyRow is one audit row of the history cases, named by its detail.
type historyRow struct {
	id, stage, outcome, source string
	version                    uint64
	fields                     *store.FieldSet
	state                      json.RawMessage
}

// appendRow writes r to record customer:rid.
func appendRow(t *testing.T, s store.Store, rid string, r historyRow) {
	t.Helper()
	a := store.Audit{Fingerprint: fp(r.id), RecordType: "customer", RecordID: rid,
		Outcome: r.outcome, Stage: r.stage, Version: r.version, Source: r.source, Fields: r.fields, State: r.state, Detail: r.id}
	if err := s.AppendAudit(context.Background(), a); err != nil {
		t.Fatal(err)
	}
}

// testSystemHistory: what a system knows of a record is its own reports
// (merge rows with source = system and an accepted or dropped outcome) and
// the rows of its own stage, each with a field set, in the order written;
// fromVersion keeps the newer versions only.
func testSystemHistory(t *testing.T, s store.Store) {
	ctx := context.Background()
	fields := &store.FieldSet{Fields: map[string]string{"email": "d1"}}
	rows := []struct {
		historyRow
		want bool
	}{
		{historyRow{"report-accepted", store.StageMerge, store.OutcomeAccepted, "suitex", 1, fields, nil}, true},
		{historyRow{"report-other-source", store.StageMerge, store.OutcomeAccepted, "netsuite", 2, fields, nil}, false},
		{historyRow{"report-noop", store.StageMerge, store.OutcomeNoop, "suitex", 2, fields, nil}, true},
		{historyRow{"deferred", store.StageMerge, store.OutcomeDeferred, "suitex", 2, fields, nil}, false},
		{historyRow{"rejected", store.StageMerge, store.OutcomeRejected, "suitex", 2, fields, nil}, false},
		{historyRow{"sending", store.StageSuiteX, store.OutcomeSending, "", 2, fields, nil}, true},
		{historyRow{"delivered", store.StageSuiteX, store.OutcomeDelivered, "", 2, &store.FieldSet{Attempt: "sending", Fields: fields.Fields}, nil}, true},
		{historyRow{"no-field-set", store.StageSuiteX, store.OutcomeStale, "", 3, nil, nil}, false},
		{historyRow{"other-target", store.StageNetSuite, store.OutcomeDelivered, "", 3, fields, nil}, false},
		{historyRow{"report-echo", store.StageMerge, store.OutcomeEcho, "suitex", 3, fields, nil}, true},
		// A checkpoint is not part of SystemHistory (KnownHistory's).
		{historyRow{"checkpoint", store.StageSuiteX, store.OutcomeStale, "", 3, nil, json.RawMessage(`{}`)}, false},
	}
	var want, newer []string
	for _, r := range rows {
		appendRow(t, s, "SH-1", r.historyRow)
		if r.want {
			want = append(want, r.id)
			if r.version >= 2 {
				newer = append(newer, r.id)
			}
		}
	}
	for _, c := range []struct {
		from uint64
		want []string
	}{{0, want}, {2, newer}} {
		h, err := s.SystemHistory(ctx, "customer", "SH-1", store.StageSuiteX, c.from)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range h {
			got = append(got, a.Detail)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("SystemHistory(from %d) = %v, want %v", c.from, got, c.want)
		}
	}
}

// testKnownHistory: Checkpoint is the version of the system's newest
// checkpoint (a row of its stage with a state; another system's, or a merge
// row's state, is none), and KnownHistory is SystemHistory with the
// system's checkpoints, from a version on plus the rows without one.
func testKnownHistory(t *testing.T, s store.Store) {
	ctx := context.Background()
	fields := &store.FieldSet{Fields: map[string]string{"email": "d1"}}
	ck := json.RawMessage(`{"opaque":1}`)
	rows := []historyRow{
		{"report-1", store.StageMerge, store.OutcomeAccepted, "suitex", 1, fields, nil},
		{"sending-2", store.StageSuiteX, store.OutcomeSending, "", 2, fields, nil},
		{"checkpoint-3", store.StageSuiteX, store.OutcomeStale, "", 3, nil, ck},
		{"report-no-version", store.StageMerge, store.OutcomeNoop, "suitex", 0, fields, nil},
		{"sending-3", store.StageSuiteX, store.OutcomeSending, "", 3, fields, nil},
		{"other-checkpoint-4", store.StageNetSuite, store.OutcomeStale, "", 4, nil, ck},
		{"merge-state-4", store.StageMerge, store.OutcomeAccepted, "suitex", 4, fields, ck},
		{"report-5", store.StageMerge, store.OutcomeEcho, "suitex", 5, fields, nil},
	}
	add := func(i int) { appendRow(t, s, "KH-1", rows[i]) }
	checkpoint := func(want uint64) {
		t.Helper()
		if v, err := s.Checkpoint(ctx, "customer", "KH-1", store.StageSuiteX); err != nil || v != want {
			t.Errorf("Checkpoint = %d, %v; want %d", v, err, want)
		}
	}
	read := func(since uint64, want ...string) {
		t.Helper()
		h, err := s.KnownHistory(ctx, "customer", "KH-1", store.StageSuiteX, since)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range h {
			got = append(got, a.Detail)
			if a.Detail == "checkpoint-3" && string(a.State) != string(ck) {
				t.Errorf("checkpoint state %s, want %s", a.State, ck)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("KnownHistory(since %d) = %v, want %v", since, got, want)
		}
	}
	add(0)
	add(1)
	checkpoint(0)
	read(0, "report-1", "sending-2")
	for i := 2; i < len(rows); i++ {
		add(i)
	}
	checkpoint(3)
	read(0, "report-1", "sending-2", "checkpoint-3", "report-no-version", "sending-3", "merge-state-4", "report-5")
	read(3, "checkpoint-3", "report-no-version", "sending-3", "merge-state-4", "report-5")
}

func testDeadLetters(t *testing.T, s store.Store) {
	ctx := context.Background()
	pt := time.Date(2026, 3, 13, 20, 0, 0, 654321000, time.UTC)
	d := store.DeadLetter{MessageID: "msg-1", Subscription: "events.error.sandbox-retry-sub", DeliveryAttempts: 5,
		Stage: "suitex", Reason: "http_503", Detail: "gave up", EventID: uuid.NewString(), RecordType: "customer", RecordID: "C-😀",
		Data: []byte(`{"raw":"\u0000 bytes 😀"}`), Attributes: map[string]string{"env": "sandbox", "k": "v'\""}, PublishTime: pt}
	for i := 0; i < 3; i++ {
		ins, err := s.AppendDeadLetter(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if ins != (i == 0) {
			t.Errorf("append %d: inserted = %v", i, ins)
		}
	}
	got, err := s.DeadLetter(ctx, "msg-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.DeliveryAttempts != 5 || got.Subscription != d.Subscription || got.Stage != "suitex" || got.Reason != "http_503" ||
		got.EventID != d.EventID || got.RecordID != "C-😀" || string(got.Data) != string(d.Data) ||
		got.Attributes["k"] != `v'"` || !got.PublishTime.Equal(pt) || got.CreatedAt.IsZero() {
		t.Errorf("dead letter %+v", got)
	}
	d2 := d
	d2.MessageID, d2.Stage, d2.Reason, d2.RecordID = "msg-2", "merge", "invalid_json", "X"
	if _, err := s.AppendDeadLetter(ctx, d2); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		f    store.DeadLetterFilter
		want int
	}{
		{store.DeadLetterFilter{}, 2},
		{store.DeadLetterFilter{Stage: "suitex"}, 1},
		{store.DeadLetterFilter{Reason: "invalid_json"}, 1},
		{store.DeadLetterFilter{RecordType: "customer", RecordID: "X"}, 1},
		{store.DeadLetterFilter{Since: time.Now().Add(time.Hour)}, 0},
		{store.DeadLetterFilter{Until: time.Now().Add(time.Hour), Limit: 1}, 1},
	} {
		got, err := s.DeadLetters(ctx, c.f)
		if err != nil || len(got) != c.want {
			t.Errorf("filter %+v: %d rows, %v; want %d", c.f, len(got), err, c.want)
		}
	}
	if _, err := s.DeadLetter(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing dead letter: %v", err)
	}
}

// testDeadLetterIDReused: a message id seen again with other data (an
// emulator restarted numbers from m0 again) is a new dead letter, stored
// beside the first; the same id with the same data stays one row.
func testDeadLetterIDReused(t *testing.T, s store.Store) {
	ctx := context.Background()
	first := store.DeadLetter{MessageID: "m0", Subscription: "events.error.sandbox-retry-sub", Stage: "merge", Reason: "invalid_json",
		RecordType: "customer", RecordID: "C-1", Data: []byte(`{"run":1}`), Attributes: map[string]string{"env": "sandbox"}}
	second := first
	second.Reason, second.Data = "version_gap", []byte(`{"run":2}`)
	for i, d := range []store.DeadLetter{first, second, first, second} {
		ins, err := s.AppendDeadLetter(ctx, d)
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		if ins != (i < 2) {
			t.Errorf("append %d (%s): inserted = %v, want %v", i, d.Data, ins, i < 2)
		}
	}
	all, err := s.DeadLettersByID(ctx, "m0")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || string(all[0].Data) != `{"run":1}` || string(all[1].Data) != `{"run":2}` {
		t.Fatalf("dead letters m0 = %+v; want both runs, oldest first", all)
	}
	for _, d := range all {
		if d.ContentDigest != store.DigestOf(d.Data) {
			t.Errorf("content digest %q of %s, want %q", d.ContentDigest, d.Data, store.DigestOf(d.Data))
		}
	}
	newest, err := s.DeadLetter(ctx, "m0")
	if err != nil || string(newest.Data) != `{"run":2}` {
		t.Errorf("DeadLetter(m0) = %s, %v; want the newest (run 2)", newest.Data, err)
	}
	if got, err := s.DeadLetters(ctx, store.DeadLetterFilter{OldestFirst: true}); err != nil || len(got) != 2 || string(got[0].Data) != `{"run":1}` {
		t.Errorf("oldest first = %d rows, %v", len(got), err)
	}
	if got, err := s.DeadLettersByID(ctx, "nope"); err != nil || len(got) != 0 {
		t.Errorf("DeadLettersByID(nope) = %v, %v; want none", got, err)
	}
}

// testConcurrentAppends: 16 writers race to extend one record; the lock and
// the unique index must give a gap-free chain with every append landing.
func testConcurrentAppends(t *testing.T, s store.Store) {
	ctx := context.Background()
	const writers, each = 16, 5
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				err := s.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
					h, _, err := tx.LockRecord(ctx, "customer", "CC-1", store.Probe{})
					if err != nil {
						return err
					}
					e := NewEvent("customer", "CC-1", h.Version, `{"w":1}`)
					return tx.AppendEvent(ctx, e, accepted(e, fp(e.ID)))
				})
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	hist, err := s.History(ctx, "customer", "CC-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != writers*each {
		t.Fatalf("%d events, want %d", len(hist), writers*each)
	}
	for i, e := range hist {
		if e.BaseVersion != uint64(i) {
			t.Fatalf("chain has a gap at %d: base %d", i, e.BaseVersion)
		}
	}
}

func testTxRollback(t *testing.T, s store.Store) {
	ctx := context.Background()
	e := NewEvent("customer", "TX-1", 0, `{"a":1}`)
	boom := errors.New("boom")
	err := s.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		if err := tx.AppendEvent(ctx, e, accepted(e, fp(e.ID))); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx = %v", err)
	}
	if _, err := s.EventByID(ctx, e.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("rolled-back event visible: %v", err)
	}
}

// testExclusive: holders of one key never overlap; other keys do not wait.
func testExclusive(t *testing.T, s store.Store) {
	ctx := context.Background()
	var (
		mu      sync.Mutex
		inside  int
		overlap bool
		wg      sync.WaitGroup
	)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.Exclusive(ctx, "deliver:suitex:customer:C-1", 10*time.Second, func(ctx context.Context, l store.Locked) error {
				if _, err := l.SystemHistory(ctx, "customer", "C-1", store.StageSuiteX, 0); err != nil {
					return err
				}
				mu.Lock()
				inside++
				if inside > 1 {
					overlap = true
				}
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
				mu.Lock()
				inside--
				mu.Unlock()
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if overlap {
		t.Error("two holders of one key ran at once")
	}
	// A held key times out for another holder; a different key does not.
	boom := errors.New("inner")
	err := s.Exclusive(ctx, "k1", time.Second, func(ctx context.Context, _ store.Locked) error {
		if err := s.Exclusive(ctx, "k2", time.Second, func(context.Context, store.Locked) error { return nil }); err != nil {
			return fmt.Errorf("other key waited: %w", err)
		}
		done := make(chan error, 1)
		go func() {
			done <- s.Exclusive(context.Background(), "k1", time.Second, func(context.Context, store.Locked) error { return nil })
		}()
		if err := <-done; !errors.Is(err, store.ErrUnavailable) {
			return fmt.Errorf("held key granted twice: %v", err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("Exclusive = %v, want fn's error", err)
	}
	// Released after fn: the key is free again.
	if err := s.Exclusive(ctx, "k1", time.Second, func(context.Context, store.Locked) error { return nil }); err != nil {
		t.Errorf("key not released: %v", err)
	}
}

// testConcurrentMark: many concurrent MarkProcessed calls (grouped into
// batches by a driver that can) each return only once their own flag is set.
func testConcurrentMark(t *testing.T, s store.Store) {
	ctx := context.Background()
	const n = 60
	ids := make([]string, n)
	for i := range ids {
		e := NewEvent("customer", fmt.Sprintf("M-%d", i), 0, `{"a":1}`)
		if err := s.AppendEvent(ctx, e, accepted(e, fp(e.ID))); err != nil {
			t.Fatal(err)
		}
		ids[i] = e.ID
	}
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.MarkProcessed(ctx, id); err != nil {
				t.Error(err)
				return
			}
			// Returned: the flag must be committed now.
			e, err := s.EventByID(ctx, id)
			if err != nil || !e.Processed {
				t.Errorf("event %s: processed = %v after MarkProcessed returned (%v)", id, e.Processed, err)
			}
		}()
	}
	wg.Wait()
	if un, _ := s.Unprocessed(ctx, time.Now().Add(time.Hour), 100); len(un) != 0 {
		t.Errorf("%d events still unprocessed", len(un))
	}
}

// testLockProbes: LockRecord's probes find what Duplicates finds, for a
// record with a head and for a new record (no row to lock).
func testLockProbes(t *testing.T, s store.Store) {
	ctx := context.Background()
	e := NewEvent("customer", "LP-1", 0, `{"a":1}`)
	if err := s.AppendEvent(ctx, e, accepted(e, fp("lp-raw-1"))); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, record string
		probe        store.Probe
		wantID, want bool
		wantVersion  uint64
	}{
		{"id and fingerprint", "LP-1", store.Probe{ID: e.ID, Fingerprint: fp("lp-raw-1")}, true, true, 1},
		{"id only", "LP-1", store.Probe{ID: e.ID, Fingerprint: fp("lp-other")}, true, false, 1},
		{"fingerprint only", "LP-1", store.Probe{Fingerprint: fp("lp-raw-1")}, false, true, 1},
		{"nothing", "LP-1", store.Probe{ID: uuid.NewString(), Fingerprint: fp("lp-nope")}, false, false, 1},
		{"new record, copy of another's id", "LP-2", store.Probe{ID: e.ID, Fingerprint: fp("lp-raw-1")}, true, true, 0},
		{"new record, nothing", "LP-2", store.Probe{ID: uuid.NewString(), Fingerprint: fp("lp-nope")}, false, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := s.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
				h, f, err := tx.LockRecord(ctx, "customer", c.record, c.probe)
				if err != nil {
					return err
				}
				if h.Version != c.wantVersion || (f.ByID != nil) != c.wantID || (f.ByFingerprint != nil) != c.want ||
					(f.ByID != nil && f.ByID.ID != e.ID) || (f.ByFingerprint != nil && f.ByFingerprint.ID != e.ID) {
					t.Errorf("LockRecord(%s, %+v) = head %+v, found %+v", c.record, c.probe, h, f)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// testMarkAcrossTx: a flag requested while transactions are open is set
// whether the next transaction commits or rolls back.
func testMarkAcrossTx(t *testing.T, s store.Store) {
	ctx := context.Background()
	for _, commit := range []bool{true, false} {
		t.Run(fmt.Sprintf("commit=%v", commit), func(t *testing.T) {
			e := NewEvent("customer", fmt.Sprintf("MX-%v", commit), 0, `{"a":1}`)
			if err := s.AppendEvent(ctx, e, accepted(e, fp(e.ID))); err != nil {
				t.Fatal(err)
			}
			marked := make(chan error, 1)
			errRollback := errors.New("roll back")
			err := s.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
				go func() { marked <- s.MarkProcessed(ctx, e.ID) }()
				time.Sleep(time.Millisecond) // usually queued by now
				if !commit {
					return errRollback
				}
				return nil
			})
			if commit != (err == nil) {
				t.Fatalf("InTx: %v", err)
			}
			if err := <-marked; err != nil {
				t.Fatalf("MarkProcessed: %v", err)
			}
			if got, err := s.EventByID(ctx, e.ID); err != nil || !got.Processed {
				t.Errorf("processed = %v (%v) after MarkProcessed returned", got.Processed, err)
			}
		})
	}
}
