package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/shared/record"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

func TestRebuildVerb(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	ctx := context.Background()
	for r := range 3 {
		for v := range 4 {
			ev := store.Event{ID: uuid.NewString(), RecordType: "customer", RecordID: fmt.Sprintf("RV-%d", r), Source: "netsuite",
				Timestamp: time.Date(2026, 12, 1, 0, 0, v, 0, time.UTC), BaseVersion: uint64(v), Changes: json.RawMessage(fmt.Sprintf(`{"n":%d}`, v))}
			if err := d.Store.AppendEvent(ctx, ev, store.Audit{Fingerprint: strings.Repeat("a", 64), RecordType: ev.RecordType,
				RecordID: ev.RecordID, Outcome: store.OutcomeAccepted, Stage: store.StageMerge}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := d.Root.Exec("DELETE FROM record_heads"); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"EVENT_STORE_DSN": d.DSN}
	if code, out, errOut := runWith(env, "rebuild"); code != 0 || !strings.Contains(out, "rebuilt the projection of 3 records") {
		t.Fatalf("rebuild: exit %d\n%s\n%s", code, out, errOut)
	}
	h, err := d.Store.Head(ctx, "customer", "RV-2")
	if err != nil {
		t.Fatal(err)
	}
	st, ok := record.Parse(h)
	if !ok || st.Version != 4 || string(st.Fields["n"].Value) != "3" {
		t.Fatalf("rebuilt head %+v (%s)", h, h.State)
	}
	if code, _, _ := runWith(env, "rebuild", "no-colon"); code != 2 {
		t.Fatalf("a malformed record: exit %d, want 2", code)
	}
	if code, out, _ := runWith(env, "rebuild", "customer:RV-1"); code != 0 || !strings.Contains(out, "of 1 records") {
		t.Fatalf("one record: exit %d %s", code, out)
	}
}
