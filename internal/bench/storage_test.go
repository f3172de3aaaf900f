package bench

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// TestStorageWorkload: a create with all 20 fields, then edits of one to
// three fields each to values the field never had, sources alternating.
func TestStorageWorkload(t *testing.T) {
	t.Parallel()
	w := newStorageWorkload("r", config.DefaultSources)
	first := w.next()
	if len(first.Changes) != 20 || first.BaseVersion != 0 {
		t.Fatalf("create: %d fields at base %d, want 20 at 0", len(first.Changes), first.BaseVersion)
	}
	seen := map[string]map[string]bool{}
	for f, v := range first.Changes {
		seen[f] = map[string]bool{string(v): true}
	}
	sizes := map[int]int{}
	for i := 1; i <= 3000; i++ {
		e := w.next()
		if e.BaseVersion != uint64(i) || e.Source != config.DefaultSources[i%2] {
			t.Fatalf("event %d: base %d, source %s", i, e.BaseVersion, e.Source)
		}
		sizes[len(e.Changes)]++
		for f, v := range e.Changes {
			if seen[f] == nil {
				t.Fatalf("event %d changes %s, not a field of the record", i, f)
			}
			if seen[f][string(v)] {
				t.Fatalf("event %d sets %s to %s again", i, f, v)
			}
			if !json.Valid(v) {
				t.Fatalf("event %d: %s = %s is not JSON", i, f, v)
			}
			seen[f][string(v)] = true
		}
	}
	for n := 1; n <= 3; n++ {
		if sizes[n] < 500 {
			t.Errorf("%d events change %d fields, want each of 1, 2, 3 often: %v", sizes[n], n, sizes)
		}
	}
	if len(sizes) != 3 {
		t.Errorf("change sizes %v, want 1 to 3 fields only", sizes)
	}
}

// TestMeasureStorage merges a short history on the real server through the
// engine over the production grant set and checks what was counted: every
// event stored with one audit row, the projection row updated in place, and
// sizes that can only come from real growth.
func TestMeasureStorage(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	worker, _ := d.Worker(t)
	const events = 250
	s, err := MeasureStorage(context.Background(), d.Root, worker, StorageOptions{Events: events, Env: config.Sandbox, Sources: config.DefaultSources})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", s)
	if s.Events != events || s.Fields != 20 || s.Warnings != 0 {
		t.Fatalf("events %d, fields %d, warnings %d (%s)", s.Events, s.Fields, s.Warnings, s.FirstWarning)
	}
	rows := map[string]int64{}
	for _, tg := range s.Tables {
		rows[tg.Table] = tg.Rows
	}
	// One event and one accepted audit row per merge; the head is one row,
	// updated; nothing dead-lettered.
	want := map[string]int64{"events": events, "event_audit_log": events, "record_heads": 0, "dead_letters": 0}
	for tbl, n := range want {
		got, ok := rows[tbl]
		if !ok || got != n {
			t.Errorf("%s: %d rows added (listed: %v), want %d", tbl, got, ok, n)
		}
	}
	// One to three short fields: a JSON object of 15 to a few hundred bytes.
	if s.MeanChangesBytes < 15 || s.MeanChangesBytes > 300 {
		t.Errorf("mean changes %.1f bytes", s.MeanChangesBytes)
	}
	// Each event stores at least its changes, its id twice (event and audit
	// row) and its fingerprint, so the values alone are more than that.
	if min := s.MeanChangesBytes + 2*36 + 64; s.LogicalBytesPerEvent < min {
		t.Errorf("logical %.1f bytes/event, less than the %.1f every event stores", s.LogicalBytesPerEvent, min)
	}
	if s.BytesPerEvent <= 0 {
		t.Errorf("%.1f bytes/event allocated: the tables did not grow", s.BytesPerEvent)
	}
	// Records hold the values and more (headers, index entries); pages hold
	// the records and their free space.
	if !(s.LogicalBytesPerEvent < s.RecordBytesPerEvent && s.RecordBytesPerEvent <= s.PageBytesPerEvent) {
		t.Errorf("per event: values %.1f, records %.1f, pages %.1f bytes: want values < records <= pages",
			s.LogicalBytesPerEvent, s.RecordBytesPerEvent, s.PageBytesPerEvent)
	}
	// Every merge commits an insert and an update: the redo log grew.
	if s.RedoBytesPerEvent <= 0 {
		t.Errorf("redo log %.1f bytes/event: Innodb_os_log_written did not grow", s.RedoBytesPerEvent)
	}
	// The projection state is the record's row in record_heads, read back;
	// it holds 20 fields with their values, far more than 20 bytes each.
	var state int64
	if err := d.Root.QueryRow("SELECT LENGTH(state) FROM record_heads WHERE record_type = ? AND record_id = ?", RecordType, "storage-r1").Scan(&state); err != nil {
		t.Fatal(err)
	}
	if s.ProjectionStateBytes != state || s.ProjectionStateBytes <= 20*20 {
		t.Errorf("projection state %d bytes, record_heads holds %d: want them equal and > %d", s.ProjectionStateBytes, state, 20*20)
	}
}

// TestStorageTargetRow: the target row compares the bytes of pages in use
// with twice the changes plus 600.
func TestStorageTargetRow(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		perEvent float64
		ok       bool
	}{{799.9, true}, {800, true}, {800.1, false}, {0, false}} {
		r := &Result{Storage: &Storage{Events: 10000, Fields: 20, MeanChangesBytes: 100, PageBytesPerEvent: c.perEvent}}
		r.EvaluateTargets()
		if len(r.Targets) != 1 || r.Targets[0].OK != c.ok || r.Targets[0].Got != c.perEvent || r.Targets[0].Want != "<= 2×changes+600 = 800" {
			t.Errorf("%.1f bytes/event: targets %+v, want one, met %v", c.perEvent, r.Targets, c.ok)
		}
	}
}
