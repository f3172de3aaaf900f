package merge_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/merge"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// A no-op with a later timestamp refreshes the field's conflict timestamp
// (SPEC §5 step 4): an older concurrent change processed afterwards cannot
// beat the newer edit of equal value.
func TestNoopRefreshesTheConflictTimestamp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := mysqltest.New(t)
	st, _ := d.Worker(t)
	eng := merge.New(st, pubsubtest.New(t, env, true).Publisher(t), env, config.DefaultSources, discard)
	process := func(source string, base uint64, ts time.Time, changes string) merge.Result {
		t.Helper()
		res, err := eng.Process(ctx, rawMsg(uuid.NewString(), "customer", "NR-1", source, base, ts, changes))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	process("netsuite", 0, t0, `{"f":"a"}`) // v1 f=a at t0
	if res := process("netsuite", 1, t0.Add(20*time.Second), `{"f":"a"}`); res.Outcome != store.OutcomeNoop {
		t.Fatalf("equal value: %s, want noop", res.Outcome)
	}
	// SuiteX's concurrent change of f, made before it saw v1, at t0+10s:
	// newer than v1's f, older than NetSuite's equal-valued edit at t0+20s.
	if res := process("suitex", 0, t0.Add(10*time.Second), `{"f":"b"}`); res.Outcome != store.OutcomeSuperseded {
		t.Fatalf("older concurrent change after the refresh: %s, want superseded", res.Outcome)
	}
}

// The projection is rebuildable from the events and the audit log: drop
// every row, rebuild, and the rows are what the merge kept, byte for byte.
func TestRebuildProjection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := mysqltest.New(t)
	st, _ := d.Worker(t)
	eng := merge.New(st, pubsubtest.New(t, env, true).Publisher(t), env, config.DefaultSources, discard)
	for i, rid := range []string{"RB-1", "RB-2", "RB-3"} {
		steps := []struct {
			source  string
			base    uint64
			sec     int
			changes string
		}{
			{"netsuite", 0, 0, `{"a":1,"b":"x"}`},
			{"suitex", 1, 2, `{"b":"y","c":[1,{"d":null}]}`},
			{"netsuite", 1, 1, `{"b":"z"}`},   // a conflict it loses
			{"netsuite", 2, 9, `{"a":1}`},     // a no-op that refreshes a's timestamp
			{"suitex", 2, 5, `{"a":2,"e":3}`}, // merged: a superseded by the refresh, e accepted
			{"netsuite", 3, 12, `{"c":null}`},
		}
		for _, s := range steps[:3+i] {
			if _, err := eng.Process(ctx, rawMsg(uuid.NewString(), "customer", rid, s.source, s.base, t0.Add(time.Duration(s.sec)*time.Second), s.changes)); err != nil {
				t.Fatal(err)
			}
		}
	}
	snapshot := func() map[string]string {
		rows, err := d.Root.Query("SELECT record_id, version, event_id, state FROM record_heads ORDER BY record_id")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]string{}
		for rows.Next() {
			var rid, eid, state string
			var v int
			if err := rows.Scan(&rid, &v, &eid, &state); err != nil {
				t.Fatal(err)
			}
			out[rid] = fmtHead(v, eid, state)
		}
		return out
	}
	before := snapshot()
	if len(before) != 3 {
		t.Fatalf("%d projection rows, want 3", len(before))
	}
	if _, err := d.Root.Exec("DELETE FROM record_heads"); err != nil {
		t.Fatal(err)
	}
	n, err := merge.Rebuild(ctx, d.Store, nil, nil)
	if err != nil || n != 3 {
		t.Fatalf("rebuild: %d, %v", n, err)
	}
	after := snapshot()
	for rid, want := range before {
		if after[rid] != want {
			t.Errorf("%s rebuilt as\n  %s\nwant\n  %s", rid, after[rid], want)
		}
	}
	// The merge goes on from the rebuilt projection.
	h, err := d.Store.Head(ctx, "customer", "RB-3")
	if err != nil {
		t.Fatal(err)
	}
	if res, err := eng.Process(ctx, rawMsg(uuid.NewString(), "customer", "RB-3", "suitex", h.Version, t0.Add(time.Minute), `{"z":1}`)); err != nil || res.Version != h.Version+1 {
		t.Fatalf("merge after rebuild: %+v, %v", res, err)
	}
}

func fmtHead(v int, eid, state string) string { return fmt.Sprintf("%s v%d %s", eid, v, state) }
