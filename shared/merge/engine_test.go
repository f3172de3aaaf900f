package merge_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/merge"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

const env = config.Sandbox

var (
	t0      = time.Date(2026, 3, 13, 20, 0, 0, 0, time.UTC)
	discard = slog.New(slog.NewTextHandler(io.Discard, nil))
)

func rawMsg(id, rt, rid, source string, base uint64, ts time.Time, changes string) message.Message {
	data := fmt.Sprintf(`{"id":%q,"record_type":%q,"record_id":%q,"source":%q,"timestamp":%q,"base_version":%d,"changes":%s}`,
		id, rt, rid, source, ts.Format(time.RFC3339Nano), base, changes)
	return message.Message{Data: []byte(data), ID: "m-" + uuid.NewString(), Attributes: map[string]string{}}
}

// switchable is a publisher whose merged-topic publishes fail while off.
type switchable struct {
	next publish.Publisher
	off  atomic.Bool
	// failKey, when set, fails only that ordering key.
	failKey atomic.Value
}

func (s *switchable) Publish(ctx context.Context, topic string, m publish.Message) (string, error) {
	if k, _ := s.failKey.Load().(string); s.off.Load() && (k == "" || k == m.OrderingKey) {
		return "", errors.New("injected publish failure")
	}
	return s.next.Publish(ctx, topic, m)
}

func mergedVersions(t *testing.T, ps *pubsubtest.Server) map[string][]uint64 {
	t.Helper()
	out := map[string][]uint64{}
	for _, r := range ps.Drain(t, ps.Names.SuiteXSub) {
		var m event.Merged
		if err := json.Unmarshal(r.Data, &m); err != nil {
			t.Fatal(err)
		}
		out[m.RecordID] = append(out[m.RecordID], m.Version)
	}
	return out
}

// TestFlush: events left processed = 0 are republished by Flush, per record
// in version order; young ones are left to their merge; a record whose
// publish fails keeps its place for the next flush while the others go on.
func TestFlush(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := mysqltest.New(t)
	st, _ := d.Worker(t)
	ps := pubsubtest.New(t, env, true)
	pub := &switchable{next: ps.Publisher(t)}
	eng := merge.New(st, pub, env, config.DefaultSources, discard)

	// A: v1 through the engine with the publish failing (the crash window).
	pub.off.Store(true)
	_, err := eng.Process(ctx, rawMsg(uuid.NewString(), "customer", "A", "netsuite", 0, t0, `{"a":1}`))
	if f, ok := failure.As(err); !ok || f.Reason != merge.ReasonPublishFailed {
		t.Fatalf("Process: %v, want publish_failed", err)
	}
	// B: three unprocessed versions, as an older tool could leave them
	// (the engine itself never stores v2 while v1 is unpublished).
	for v := range 3 {
		ev := store.Event{ID: uuid.NewString(), RecordType: "customer", RecordID: "B", Source: "suitex", Timestamp: t0,
			BaseVersion: uint64(v), Changes: json.RawMessage(fmt.Sprintf(`{"b":%d}`, v))}
		if err := d.Store.AppendEvent(ctx, ev, store.Audit{Fingerprint: strings.Repeat("b", 64), RecordType: "customer", RecordID: "B",
			Outcome: store.OutcomeAccepted, Stage: store.StageMerge}); err != nil {
			t.Fatal(err)
		}
	}
	pub.off.Store(false)

	if n, err := eng.Flush(ctx, time.Hour, 0); n != 0 || err != nil {
		t.Errorf("Flush of young events: %d, %v; want 0, nil", n, err)
	}
	// B fails, A goes through.
	pub.failKey.Store("customer:B")
	pub.off.Store(true)
	n, err := eng.Flush(ctx, 0, 0)
	if n != 1 || err == nil || !strings.Contains(err.Error(), "customer:B") {
		t.Errorf("Flush with B failing: %d, %v; want 1 and B's error", n, err)
	}
	pub.off.Store(false)
	if n, err := eng.Flush(ctx, 0, 0); n != 3 || err != nil {
		t.Errorf("Flush: %d, %v; want 3, nil", n, err)
	}
	if n, err := eng.Flush(ctx, 0, 0); n != 0 || err != nil {
		t.Errorf("second Flush: %d, %v; want nothing left", n, err)
	}
	got := mergedVersions(t, ps)
	if fmt.Sprint(got["A"]) != "[1]" || fmt.Sprint(got["B"]) != "[1 2 3]" {
		t.Errorf("merged versions %v, want A [1] and B [1 2 3]", got)
	}
	left, err := d.Store.Unprocessed(ctx, time.Now().Add(time.Second), 0)
	if err != nil || len(left) != 0 {
		t.Errorf("unprocessed after flush: %d, %v", len(left), err)
	}
	trail, _ := d.Store.AuditTrail(ctx, "customer", "B")
	published := 0
	for _, a := range trail {
		if a.Outcome == store.OutcomePublished && a.Stage == store.StageOutbox && a.EventID != "" && a.Version > 0 {
			published++
		}
	}
	if published != 3 {
		t.Errorf("%d `published` audit rows for B, want 3", published)
	}
}

// TestStateRebuild: a record whose events carry no folded state (appended by
// another tool) is merged correctly: the state is rebuilt from the events.
func TestStateRebuild(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := mysqltest.New(t)
	ps := pubsubtest.New(t, env, true)
	eng := merge.New(d.Store, ps.Publisher(t), env, config.DefaultSources, discard)
	for v, ch := range []string{`{"email":"a@x","phone":"1"}`, `{"email":"b@x"}`} {
		ev := store.Event{ID: uuid.NewString(), RecordType: "customer", RecordID: "R", Source: "netsuite", Timestamp: t0.Add(time.Duration(v) * time.Minute),
			BaseVersion: uint64(v), Changes: json.RawMessage(ch), Processed: true}
		if err := d.Store.AppendEvent(ctx, ev, store.Audit{Fingerprint: strings.Repeat("c", 64), RecordType: "customer", RecordID: "R",
			Outcome: store.OutcomeAccepted, Stage: store.StageMerge}); err != nil {
			t.Fatal(err)
		}
	}
	// Same values as the rebuilt state: a no-op.
	res, err := eng.Process(ctx, rawMsg(uuid.NewString(), "customer", "R", "suitex", 2, t0.Add(time.Hour), `{"email":"b@x","phone":"1"}`))
	if err != nil || res.Outcome != store.OutcomeNoop {
		t.Fatalf("Process: %+v, %v; want noop against the rebuilt state", res, err)
	}
	// A concurrent edit at base 1 with an older timestamp loses email (v2
	// changed it) and keeps the new field.
	res, err = eng.Process(ctx, rawMsg(uuid.NewString(), "customer", "R", "suitex", 1, t0, `{"email":"c@x","name":"n"}`))
	if err != nil || res.Outcome != store.OutcomeMerged || res.Version != 3 || len(res.Conflicts) != 1 ||
		res.Conflicts[0].Resolution != merge.ResolutionIncomingDropped || res.Conflicts[0].OtherVersion != 2 {
		t.Fatalf("Process: %+v, %v", res, err)
	}
	h, err := d.Store.Head(ctx, "customer", "R")
	if err != nil || h.Version != 3 || !strings.Contains(string(h.State), `"event_id"`) {
		t.Errorf("head %d state %s: the merge must store the folded state again", h.Version, h.State)
	}
}

// TestResolveRules: step 3 with a configured priority (suitex first).
func TestResolveRules(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := mysqltest.New(t)
	ps := pubsubtest.New(t, env, true)
	eng := merge.New(d.Store, ps.Publisher(t), env, []string{"suitex", "netsuite"}, discard)
	must := func(m message.Message) merge.Result {
		t.Helper()
		res, err := eng.Process(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	must(rawMsg(uuid.NewString(), "customer", "P", "netsuite", 0, t0, `{"x":0}`))
	must(rawMsg(uuid.NewString(), "customer", "P", "netsuite", 1, t0, `{"x":1,"y":1}`))
	// Equal timestamps, suitex ranks first now: it wins x.
	res := must(rawMsg(uuid.NewString(), "customer", "P", "suitex", 1, t0, `{"x":2}`))
	if res.Outcome != store.OutcomeMerged || res.Conflicts[0].Rule != merge.RuleSourcePriority || res.Conflicts[0].Resolution != merge.ResolutionIncomingWon {
		t.Errorf("suitex first: %+v", res)
	}
	// Same source, same timestamp: the stored value stays.
	res = must(rawMsg(uuid.NewString(), "customer", "P", "netsuite", 1, t0, `{"y":3}`))
	if res.Outcome != store.OutcomeSuperseded || res.Conflicts[0].Rule != merge.RuleStoredValueStays {
		t.Errorf("same source and time: %+v", res)
	}
	// Earlier timestamp loses whatever the priority.
	res = must(rawMsg(uuid.NewString(), "customer", "P", "suitex", 1, t0.Add(-time.Microsecond), `{"y":4}`))
	if res.Outcome != store.OutcomeSuperseded || res.Conflicts[0].Rule != merge.RuleLaterTimestamp {
		t.Errorf("earlier timestamp: %+v", res)
	}
	// A field nobody changed since the base is no conflict.
	res = must(rawMsg(uuid.NewString(), "customer", "P", "netsuite", 1, t0.Add(-time.Hour), `{"z":1}`))
	if res.Outcome != store.OutcomeAccepted || len(res.Conflicts) != 0 || res.Version != 4 {
		t.Errorf("unrelated field: %+v", res)
	}
}

// TestMergedMessage: the wire form of a merged event.
func TestMergedMessage(t *testing.T) {
	t.Parallel()
	ref := "gs://x"
	ev := store.Event{ID: "e1", RecordType: "customer", RecordID: "C-1", Source: "suitex", Timestamp: t0.Add(1500 * time.Nanosecond),
		BaseVersion: 4, Changes: json.RawMessage(`{"a":1,"b":null}`), FullSnapshotRef: &ref}
	m, err := merge.MergedMessage(ev, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"e1","record_type":"customer","record_id":"C-1","source":"suitex","timestamp":"2026-03-13T20:00:00.000001Z",` +
		`"base_version":4,"version":5,"changes":{"a":1,"b":null},"full_snapshot_ref":"gs://x","conflicts":[]}`
	if string(m.Data) != want {
		t.Errorf("data\n got %s\nwant %s", m.Data, want)
	}
	if m.OrderingKey != "customer:C-1" || m.Attributes["source"] != "suitex" || m.Attributes["record_type"] != "customer" || m.Attributes["event_id"] != "e1" {
		t.Errorf("attributes %v key %q", m.Attributes, m.OrderingKey)
	}
	if _, err := merge.MergedMessage(store.Event{Changes: json.RawMessage(`nope`)}, nil); err == nil {
		t.Error("broken changes rendered")
	}
}
