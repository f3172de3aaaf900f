package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/internal/devstack"
	"github.com/backbone-sync/backbone/internal/fake"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/record"
	"github.com/backbone-sync/backbone/shared/sink/netsuite"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// e2e drives a dev stack from a test.
type e2e struct {
	t     *testing.T
	d     *devstack.Stack
	db    *mysqltest.DB
	pub   publish.Publisher
	mu    sync.Mutex
	sent  []string // Pub/Sub message ids of every raw message published
	edits []edit   // every valid raw event published, in order: a system's own changes
	clock time.Time
}

// edit is a change a system made itself (published as a raw event): the
// system holds those values whatever the merge does with them (SPEC §7).
type edit struct {
	at              time.Time
	rt, rid, source string
	changes         map[string]json.RawMessage
}

func (x *e2e) publish(data []byte, key string) {
	x.t.Helper()
	id, err := x.pub.Publish(context.Background(), x.d.Config.Env.Names().RawTopic, publish.Message{Data: data, OrderingKey: key})
	if err != nil {
		x.t.Fatal(err)
	}
	x.mu.Lock()
	x.sent = append(x.sent, id)
	x.mu.Unlock()
}

// raw publishes a raw event and returns its bytes (for redelivery).
func (x *e2e) raw(id, rt, rid, source string, base uint64, changes map[string]any) []byte {
	x.t.Helper()
	x.clock = x.clock.Add(time.Millisecond + time.Microsecond)
	ch := map[string]json.RawMessage{}
	for k, v := range changes {
		b, _ := json.Marshal(v)
		ch[k] = b
	}
	data, err := json.Marshal(event.Raw{ID: id, RecordType: rt, RecordID: rid, Source: source, Timestamp: event.NewTime(x.clock), BaseVersion: base, Changes: ch})
	if err != nil {
		x.t.Fatal(err)
	}
	x.mu.Lock()
	x.edits = append(x.edits, edit{at: time.Now(), rt: rt, rid: rid, source: source, changes: ch})
	x.mu.Unlock()
	x.publish(data, publish.OrderingKey(rt, rid))
	return data
}

func (x *e2e) head(rt, rid string) uint64 {
	x.t.Helper()
	h, err := x.db.Store.Head(context.Background(), rt, rid)
	if err != nil {
		x.t.Fatal(err)
	}
	return h.Version
}

func (x *e2e) count(q string, args ...any) int {
	x.t.Helper()
	var n int
	if err := x.db.Root.QueryRow(q, args...).Scan(&n); err != nil {
		x.t.Fatal(err)
	}
	return n
}

// waitMerged waits until every published raw message has a final merge
// outcome in the audit log (a version gap is deferred and retried).
func (x *e2e) waitMerged(what string) {
	x.t.Helper()
	x.waitFor(what, func() bool {
		x.mu.Lock()
		ids := append([]string(nil), x.sent...)
		x.mu.Unlock()
		done := 0
		for _, chunk := range chunks(ids, 500) {
			q := "SELECT COUNT(DISTINCT message_id) FROM event_audit_log WHERE stage = 'merge' AND processing_outcome <> 'deferred' AND message_id IN (?" + strings.Repeat(",?", len(chunk)-1) + ")"
			args := make([]any, len(chunk))
			for i, c := range chunk {
				args[i] = c
			}
			done += x.count(q, args...)
		}
		return done == len(ids)
	})
}

// waitDelivered waits until both sinks have brought both targets up to
// date at every record's newest version: the head event of every record has,
// at each target's stage, an audit row saying it was delivered (a delivery
// is audited under the event of the version it carries, N) or that nothing
// was missing (stale, skipped_echo). Older versions need no row of their
// own: a delivery sends what the target lacks at N, so k versions stored
// before it runs cost one request (coalescing).
func (x *e2e) waitDelivered(what string) {
	x.t.Helper()
	x.waitFor(what, func() bool {
		missing := x.count(`SELECT COUNT(*) FROM events e, (SELECT 'netsuite' AS stage UNION ALL SELECT 'suitex') s
			WHERE e.base_version = (SELECT MAX(h.base_version) FROM events h WHERE h.record_type = e.record_type AND h.record_id = e.record_id)
			AND NOT EXISTS (SELECT 1 FROM event_audit_log a WHERE a.event_id = e.id AND a.stage = s.stage
				AND a.processing_outcome IN ('delivered', 'stale', 'skipped_echo'))`)
		return missing == 0
	})
}

func (x *e2e) waitFor(what string, cond func() bool) {
	x.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			var dl []string
			if dls, err := x.db.Store.DeadLetters(context.Background(), store.DeadLetterFilter{}); err == nil {
				for _, d := range dls {
					dl = append(dl, d.Stage+"/"+d.Reason+": "+d.Detail)
				}
			}
			// The newest delivery failures say why (a dead letter holds the
			// first failure only).
			var fails []string
			if rows, err := x.db.Root.Query(`SELECT stage, processing_outcome, COALESCE(detail, '') FROM event_audit_log
				WHERE processing_outcome IN ('failed', 'refused') ORDER BY created_at DESC LIMIT 10`); err == nil {
				for rows.Next() {
					var stage, outcome, detail string
					_ = rows.Scan(&stage, &outcome, &detail)
					fails = append(fails, stage+"/"+outcome+": "+detail)
				}
				rows.Close()
			}
			x.t.Fatalf("timed out waiting for %s; dead letters: %v; newest delivery failures: %v", what, dl, fails)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func chunks(s []string, n int) [][]string {
	var out [][]string
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	if len(s) > 0 {
		out = append(out, s)
	}
	return out
}

// TestEndToEnd runs the dev stack with stand-in targets and a mixed batch of
// over 500 raw events over 60 records: creates, updates, redeliveries,
// repeats with new metadata, concurrent edits, echoes, poison messages, and a
// SuiteX outage that recovers. Then it checks that nothing was lost.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	db := mysqltest.Empty(t)
	ctx := context.Background()
	d, err := startDev(ctx, devstack.Options{Env: config.Sandbox, DSN: db.DSN, FuncAddr: "127.0.0.1:0",
		MinBackoff: 200 * time.Millisecond, MaxBackoff: 2 * time.Second, Serve: devstack.ServeInProcess, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	x := &e2e{t: t, d: d, db: db, pub: publish.Guard(config.Sandbox, d.PubSub), clock: time.Date(2026, 3, 13, 20, 0, 0, 0, time.UTC)}
	const records = 60
	rec := func(k int) (string, string) {
		if k%2 == 0 {
			return "customer", fmt.Sprintf("E2E-C-%03d", k)
		}
		return "sales_order", fmt.Sprintf("E2E-SO-%03d", k)
	}

	// Phase 1: creates from NetSuite; a third of them delivered twice.
	for k := 0; k < records; k++ {
		rt, rid := rec(k)
		data := x.raw(uuid.NewString(), rt, rid, "netsuite", 0, map[string]any{"name": fmt.Sprintf("Record %d 😀 'q' \\", k), "n": 0})
		if k%3 == 0 {
			x.publish(data, publish.OrderingKey(rt, rid)) // redelivery: same id
		}
	}
	x.waitMerged("creates")
	x.waitDelivered("creates delivered")

	// Phase 2: six rounds of updates from alternating sources, with
	// concurrent edits in round 2, repeats with new metadata in round 3, and
	// a SuiteX outage during round 3.
	for round := 1; round <= 6; round++ {
		if round == 3 {
			d.SuiteX.SetDown(http.StatusServiceUnavailable)
		}
		for k := 0; k < records; k++ {
			rt, rid := rec(k)
			base := x.head(rt, rid)
			src, other := "netsuite", "suitex"
			if (k+round)%2 == 1 {
				src, other = other, src
			}
			changes := map[string]any{"n": round, "by_" + src: fmt.Sprintf("r%d", round)}
			x.raw(uuid.NewString(), rt, rid, src, base, changes)
			switch {
			case round == 2 && k%3 == 0:
				// A concurrent edit at the same base: overlapping field n.
				x.raw(uuid.NewString(), rt, rid, other, base, map[string]any{"n": 100 + round, "by_" + other: "concurrent"})
			case round == 3 && k%4 == 0:
				// The same change re-sent with no id and a later timestamp.
				x.raw("", rt, rid, src, base, changes)
			}
		}
		if round == 3 {
			// Keep the outage short of Retry's budget (5 attempts with
			// backoff 200ms..2s, about 3s): recover 200ms after the first
			// refused delivery, however slow the machine is.
			x.waitFor("the outage to refuse a delivery", func() bool { return d.SuiteX.OutageHits() > 0 })
			time.Sleep(200 * time.Millisecond)
			d.SuiteX.SetDown(0)
		}
		x.waitMerged(fmt.Sprintf("round %d", round))
		x.waitDelivered(fmt.Sprintf("round %d delivered", round))
	}

	// Phase 3: echoes. NetSuite sets an email, it reaches SuiteX, and SuiteX
	// re-emits the same value later: an echo, never stored.
	echoRecords := 20
	for k := 0; k < echoRecords; k++ {
		rt, rid := rec(k)
		x.raw(uuid.NewString(), rt, rid, "netsuite", x.head(rt, rid), map[string]any{"email": fmt.Sprintf("e%d@example.com", k)})
	}
	x.waitMerged("echo setup")
	x.waitDelivered("echo setup delivered")
	for k := 0; k < echoRecords; k++ {
		rt, rid := rec(k)
		x.raw(uuid.NewString(), rt, rid, "suitex", x.head(rt, rid), map[string]any{"email": fmt.Sprintf("e%d@example.com", k)})
	}

	// Phase 4: poison messages.
	poison := []string{
		`{not json`,
		`[]`,
		`{"record_type":"customer","record_id":"P-1","source":"salesforce","timestamp":"2026-03-13T20:00:00Z","base_version":0,"changes":{"a":1}}`,
		`{"record_type":"Customer","record_id":"P-2","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":0,"changes":{"a":1}}`,
		`{"record_type":"customer","record_id":"P-3","source":"netsuite","timestamp":"noon","base_version":0,"changes":{"a":1}}`,
		`{"record_type":"customer","record_id":"P-4","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":-1,"changes":{"a":1}}`,
		`{"record_type":"customer","record_id":"P-5","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":0,"changes":{}}`,
		`{"record_type":"customer","record_id":"P-6","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":0,"changes":{"a":1},"extra":true}`,
		`{"record_type":"customer","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":0,"changes":{"a":1}}`,
		`{"record_type":"customer","record_id":"P-\u0007","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":0,"changes":{"a":1}}`,
		`{"record_type":"customer","record_id":"P-8","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":"0","changes":{"a":1}}`,
		`{"record_type":"customer","record_id":"P-9","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":0,"changes":[1]}`,
		`{"id":"not-a-uuid","record_type":"customer","record_id":"P-10","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":0,"changes":{"a":1}}`,
		`{"record_type":"customer","record_id":"P-11","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":1.5,"changes":{"a":1}}`,
		`null`,
		``,
		`{"record_type":"customer","record_id":"","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":0,"changes":{"a":1}}`,
		`{"record_type":"customer","record_id":"P-12","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":0,"changes":{"a":1},"full_snapshot_ref":7}`,
		`{"RECORD_TYPE":"customer","record_id":"P-13","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":0,"changes":{"a":1}}`,
		"\xff\xfe",
	}
	poisonIDs := map[string]bool{}
	for _, p := range poison {
		x.publish([]byte(p), "poison")
		x.mu.Lock()
		poisonIDs[x.sent[len(x.sent)-1]] = true
		x.mu.Unlock()
	}
	x.waitMerged("echoes and poison")
	x.waitFor("poison dead letters", func() bool {
		return x.count("SELECT COUNT(*) FROM dead_letters") >= len(poison)
	})
	x.waitDelivered("everything delivered")

	if n := len(x.sent); n < 500 {
		t.Fatalf("published %d raw messages, want at least 500", n)
	}
	check(t, x, poisonIDs, records, echoRecords)
}

func check(t *testing.T, x *e2e, poisonIDs map[string]bool, records, echoRecords int) {
	t.Helper()
	ctx := context.Background()
	// Every accepted change is stored once, in a gap-free chain.
	var events []store.Event
	type key struct{ rt, rid string }
	perRecord := map[key][]store.Event{}
	rows, err := x.db.Root.Query("SELECT DISTINCT record_type, record_id FROM events")
	if err != nil {
		t.Fatal(err)
	}
	var keys []key
	for rows.Next() {
		var k key
		_ = rows.Scan(&k.rt, &k.rid)
		keys = append(keys, k)
	}
	rows.Close()
	if len(keys) != records {
		t.Errorf("%d records stored, want %d (poison must store nothing)", len(keys), records)
	}
	for _, k := range keys {
		hist, err := x.db.Store.History(ctx, k.rt, k.rid)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range hist {
			if e.BaseVersion != uint64(i) {
				t.Errorf("%s:%s has a gap at %d", k.rt, k.rid, i)
			}
			if !e.Processed {
				t.Errorf("event %s never marked processed", e.ID)
			}
		}
		perRecord[k] = hist
		events = append(events, hist...)
	}
	if dup := x.count(`SELECT COUNT(*) FROM (SELECT fingerprint FROM event_audit_log WHERE processing_outcome IN ('accepted','merged') GROUP BY fingerprint HAVING COUNT(*) > 1) d`); dup != 0 {
		t.Errorf("%d fingerprints stored twice", dup)
	}
	if n := x.count(`SELECT COUNT(*) FROM event_audit_log WHERE stage = 'merge' AND processing_outcome = 'duplicate'`); n < records/3+records/4 {
		t.Errorf("%d duplicates audited, want at least %d", n, records/3+records/4)
	}
	if n := x.count(`SELECT COUNT(*) FROM event_audit_log WHERE stage = 'merge' AND processing_outcome = 'merged'`); n == 0 {
		t.Error("no concurrent edit was resolved as a conflict (merged)")
	}
	if n := x.count(`SELECT COUNT(*) FROM event_audit_log WHERE stage = 'merge' AND processing_outcome = 'echo'`); n < echoRecords {
		t.Errorf("%d echoes, want at least %d", n, echoRecords)
	}

	// The SuiteX outage happened, failed deliveries, and Retry recovered
	// them (no dead letter but the poison ones, checked below).
	if x.d.SuiteX.OutageHits() == 0 {
		t.Error("the SuiteX outage answered no request")
	}
	if n := x.count(`SELECT COUNT(*) FROM event_audit_log WHERE stage = 'suitex' AND processing_outcome = 'failed'`); n == 0 {
		t.Error("no SuiteX delivery failed during the outage")
	}
	if n := x.count(`SELECT COUNT(*) FROM event_audit_log WHERE stage = 'retry' AND processing_outcome = 'retried'`); n == 0 {
		t.Error("Retry recovered nothing")
	}

	// No delivery regresses a target: each request carries the values of
	// the record's newest version N at the time, so the versions a target
	// receives for a record never go down (a repeat at one version follows
	// an attempt whose outcome was in doubt).
	byID := map[string]store.Event{}
	for _, e := range events {
		byID[e.ID] = e
	}
	for _, target := range []*fake.System{&x.d.SuiteX.System, &x.d.NetSuite.System} {
		last := map[string]uint64{}
		for _, dv := range target.Deliveries() {
			e, ok := byID[dv.EventID]
			if !ok {
				t.Errorf("%s received unknown event %q", dv.Target, dv.EventID)
				continue
			}
			if dv.Version != e.Version() || dv.RecordID != e.RecordID {
				t.Errorf("%s received %s:%s v%d under event %s (%s:%s v%d)", dv.Target, dv.RecordType, dv.RecordID, dv.Version,
					e.ID, e.RecordType, e.RecordID, e.Version())
			}
			k := e.RecordType + ":" + e.RecordID
			if e.Version() < last[k] {
				t.Errorf("%s regressed %s: v%d after v%d", dv.Target, k, e.Version(), last[k])
			}
			last[k] = e.Version()
		}
	}

	// Every target converged: for every record, its materialised view (its
	// own changes and every request it accepted, in order) equals the
	// store's folded state. A nudge (a republished head) may still be in
	// flight right after the last merge, so the check polls briefly.
	var diverged []string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if diverged = x.divergence(); len(diverged) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, d := range diverged {
		t.Error(d)
	}

	// Every poison message is in dead_letters; nothing else is.
	dls, err := x.db.Store.DeadLetters(ctx, store.DeadLetterFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, dl := range dls {
		var e event.Error
		if err := json.Unmarshal(dl.Data, &e); err != nil {
			t.Errorf("dead letter %s is not an error message: %v", dl.MessageID, err)
			continue
		}
		if !poisonIDs[e.Original.MessageID] {
			t.Errorf("unexpected dead letter: stage %s reason %s (%s)", dl.Stage, dl.Reason, dl.Detail)
			continue
		}
		found[e.Original.MessageID] = true
		if dl.Stage != "merge" || dl.Reason == "" {
			t.Errorf("poison dead letter %+v", dl)
		}
	}
	if len(found) != len(poisonIDs) {
		t.Errorf("%d of %d poison messages in dead_letters", len(found), len(poisonIDs))
	}
	var reasons []string
	for _, dl := range dls {
		reasons = append(reasons, dl.Reason)
	}
	sort.Strings(reasons)
	t.Logf("%d raw messages, %d events over %d records; poison reasons: %v", len(x.sent), len(events), len(perRecord), reasons)
}

// divergence compares, for every stored record, each target's materialised
// view with the store's folded state and describes every difference. A
// view applies in time order the system's own changes (the raw events
// published from it) and every request its stand-in accepted (SuiteX: the
// changes of each event applied, not the 409s; NetSuite: each upsert body,
// in NetSuite's field names, so the store's state is mapped the same way).
func (x *e2e) divergence() []string {
	x.t.Helper()
	ctx := context.Background()
	mapping, err := netsuite.ParseMapping(x.d.Config.NetSuite.Mapping)
	if err != nil {
		x.t.Fatal(err)
	}
	canon := func(v json.RawMessage) string {
		c, err := event.Canonical(v)
		if err != nil {
			x.t.Fatalf("value %s: %v", v, err)
		}
		return string(c)
	}
	nsFields := func(rt string, changes map[string]json.RawMessage) map[string]json.RawMessage {
		_, body, err := mapping.Apply(rt, changes)
		if err != nil {
			x.t.Fatal(err)
		}
		out := map[string]json.RawMessage{}
		if len(body) > 0 {
			if err := json.Unmarshal(body, &out); err != nil {
				x.t.Fatal(err)
			}
		}
		return out
	}
	type step struct {
		at      time.Time
		changes map[string]json.RawMessage
	}
	apply := func(steps []step) map[string]string {
		sort.SliceStable(steps, func(i, j int) bool { return steps[i].at.Before(steps[j].at) })
		view := map[string]string{}
		for _, s := range steps {
			for f, v := range s.changes {
				if c := canon(v); c == "null" {
					delete(view, f)
				} else {
					view[f] = c
				}
			}
		}
		return view
	}
	x.mu.Lock()
	edits := append([]edit(nil), x.edits...)
	x.mu.Unlock()
	sxDeliveries, nsDeliveries := x.d.SuiteX.Deliveries(), x.d.NetSuite.Deliveries()

	var out []string
	rows, err := x.db.Root.Query("SELECT DISTINCT record_type, record_id FROM events")
	if err != nil {
		x.t.Fatal(err)
	}
	type key struct{ rt, rid string }
	var keys []key
	for rows.Next() {
		var k key
		_ = rows.Scan(&k.rt, &k.rid)
		keys = append(keys, k)
	}
	rows.Close()
	for _, k := range keys {
		hist, err := x.db.Store.History(ctx, k.rt, k.rid)
		if err != nil {
			x.t.Fatal(err)
		}
		st, err := record.Fold(hist)
		if err != nil {
			x.t.Fatal(err)
		}
		state := map[string]json.RawMessage{}
		for f, fs := range st.Fields {
			state[f] = fs.Value
		}
		nsType, _, _ := mapping.Apply(k.rt, nil)
		var sx, ns []step
		for _, e := range edits {
			if e.rt != k.rt || e.rid != k.rid {
				continue
			}
			switch e.source {
			case store.StageSuiteX:
				sx = append(sx, step{e.at, e.changes})
			case store.StageNetSuite:
				ns = append(ns, step{e.at, nsFields(k.rt, e.changes)})
			}
		}
		for _, dv := range sxDeliveries {
			if dv.RecordType != k.rt || dv.RecordID != k.rid || dv.Duplicate {
				continue
			}
			var body struct {
				Changes map[string]json.RawMessage `json:"changes"`
			}
			if err := json.Unmarshal(dv.Body, &body); err != nil {
				x.t.Fatal(err)
			}
			sx = append(sx, step{dv.At, body.Changes})
		}
		for _, dv := range nsDeliveries {
			if dv.RecordType != nsType || dv.RecordID != k.rid {
				continue
			}
			fields := map[string]json.RawMessage{}
			if err := json.Unmarshal(dv.Body, &fields); err != nil {
				x.t.Fatal(err)
			}
			if vf := x.d.Config.NetSuite.VersionField; vf != "" {
				delete(fields, vf)
			}
			ns = append(ns, step{dv.At, fields})
		}
		for _, c := range []struct {
			name string
			view map[string]string
			want map[string]json.RawMessage
		}{
			{store.StageSuiteX, apply(sx), state},
			{store.StageNetSuite, apply(ns), nsFields(k.rt, state)},
		} {
			want := apply([]step{{changes: c.want}})
			if !maps.Equal(c.view, want) {
				out = append(out, fmt.Sprintf("%s:%s at v%d: %s holds %v, the store %v", k.rt, k.rid, st.Version, c.name, c.view, want))
			}
		}
	}
	return out
}
