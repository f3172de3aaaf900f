package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// TestOutboxFlush runs `backbone outbox flush` against a real database and
// pstest: an event left processed = 0 is published and flagged.
func TestOutboxFlush(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	_, worker := d.Worker(t)
	ps := pubsubtest.New(t, config.Sandbox, true)
	env := map[string]string{"EVENT_STORE_DSN": worker.DSN, "BACKBONE_ENV": "sandbox",
		"GCP_PROJECT": pubsubtest.Project, "PUBSUB_EMULATOR_HOST": ps.Addr()}
	ev := store.Event{ID: uuid.NewString(), RecordType: "customer", RecordID: "C-1", Source: "netsuite",
		Timestamp: time.Now(), Changes: json.RawMessage(`{"email":"a@x"}`)}
	if err := d.Store.AppendEvent(context.Background(), ev, store.Audit{Fingerprint: strings.Repeat("a", 64),
		RecordType: "customer", RecordID: "C-1", Outcome: store.OutcomeAccepted, Stage: store.StageMerge}); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := dlqRun(t, env, "outbox", "flush", "--older-than", "1h")
	if code != 0 || !strings.Contains(out, "republished 0 event(s)") {
		t.Fatalf("flush of a young event (exit %d):\n%s%s", code, out, errOut)
	}
	code, out, errOut = dlqRun(t, env, "outbox", "flush", "--older-than", "0s", "--limit", "10")
	if code != 0 || !strings.Contains(out, "republished 1 event(s) to events.merged.sandbox") {
		t.Fatalf("flush (exit %d):\n%s%s", code, out, errOut)
	}
	got := ps.Drain(t, ps.Names.SuiteXSub)
	if len(got) != 1 || got[0].Attributes[event.AttrEventID] != ev.ID || got[0].OrderingKey != "customer:C-1" {
		t.Fatalf("merged topic got %+v", got)
	}
	stored, err := d.Store.EventByID(context.Background(), ev.ID)
	if err != nil || !stored.Processed {
		t.Errorf("event after flush: processed %v, %v", stored.Processed, err)
	}
}

func TestOutboxUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"outbox"}, {"outbox", "drain"}, {"outbox", "flush", "--limit", "0"}, {"outbox", "flush", "extra"}} {
		if code, _, _ := dlqRun(t, map[string]string{}, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage)", args, code)
		}
	}
	code, _, errOut := dlqRun(t, map[string]string{"EVENT_STORE_DSN": "x@tcp(127.0.0.1:1)/x"}, "outbox", "flush")
	if code != 2 || !strings.Contains(errOut, "BACKBONE_ENV") {
		t.Errorf("without BACKBONE_ENV: exit %d, want 2 (a missing setting), %s", code, errOut)
	}
	if code, _, _ := dlqRun(t, map[string]string{}, "outbox", "--help"); code != 0 {
		t.Errorf("--help: exit %d", code)
	}
}
