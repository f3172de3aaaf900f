package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/internal/devstack"
	"github.com/backbone-sync/backbone/internal/fake"
	"github.com/backbone-sync/backbone/internal/stress"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/deadletter"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/merge"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// Destructive steps ask first (SPEC §4, §8): the verbs an operator can get
// wrong, and stress on a production store.

// requests counts every request a fake answered, whatever the answer.
func requests(t *fake.System) int {
	return len(t.Deliveries()) + len(t.Refused()) + t.OutageHits()
}

// TestStressThenOutboxFlushReachesNoTarget: `stress` (with its Pub/Sub
// probe, through the running stack) and then the README's catch-all
// `outbox flush` send nothing to NetSuite or SuiteX, even for a stress
// event an older binary left processed = 0. A normal record published
// alongside is delivered, so the stand-ins were listening.
func TestStressThenOutboxFlushReachesNoTarget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	x := startPipeline(t)
	_, worker := x.db.Worker(t)
	env := map[string]string{"BACKBONE_ENV": string(config.Sandbox), "PUBSUB_EMULATOR_HOST": x.d.Emulator,
		"GCP_PROJECT": devstack.Project, "EVENT_STORE_DSN": worker.DSN}

	// What the stress of an earlier release left behind: stored, never
	// published.
	leftover := store.Event{ID: uuid.NewString(), RecordType: stress.RecordType, RecordID: "old-run-00001", Source: "stress",
		Timestamp: time.Now(), Changes: json.RawMessage(`{"n":1}`)}
	if err := x.db.Store.AppendEvent(ctx, leftover, store.Audit{Fingerprint: strings.Repeat("b", 64), RecordType: leftover.RecordType,
		RecordID: leftover.RecordID, Outcome: store.OutcomeAccepted, Stage: "stress"}); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := stressRun(t, env, "--n", "300", "--records", "30", "--concurrency", "8")
	if code != 0 {
		t.Fatalf("stress: exit %d\n%s%s", code, out, errOut)
	}
	if n := x.count("SELECT COUNT(*) FROM events WHERE record_type LIKE 'backbone\\_stress%' AND processed = 0"); n != 1 {
		t.Errorf("%d stress events left processed = 0 by stress, want only the planted leftover", n)
	}
	code, out, errOut = dlqRun(t, env, "outbox", "flush", "--older-than", "0s")
	if code != 0 {
		t.Fatalf("outbox flush: exit %d\n%s%s", code, out, errOut)
	}
	if n := x.count("SELECT COUNT(*) FROM events WHERE processed = 0"); n != 0 {
		t.Errorf("%d events still processed = 0 after the flush", n)
	}
	if n := x.audits(leftover.ID, store.StageOutbox, merge.OutcomeWithheld); n != 1 {
		t.Errorf("leftover stress event: %d withheld audit rows, want 1", n)
	}

	// The control: a real record reaches SuiteX through the same stack.
	control := x.createFromNetSuite("SAFE-CONTROL-1")
	x.waitFor("the control record to reach SuiteX", func() bool {
		return x.audits(control.ID, store.StageSuiteX, store.OutcomeDelivered) > 0
	})
	time.Sleep(500 * time.Millisecond) // anything else in flight lands by now
	x.d.Stop()
	if n := requests(&x.d.NetSuite.System); n != 0 {
		t.Errorf("NetSuite received %d requests, want 0 (stress is never delivered; the control came from NetSuite)", n)
	}
	ds := x.d.SuiteX.Deliveries()
	if len(ds) != 1 || ds[0].EventID != control.ID || requests(&x.d.SuiteX.System) != 1 {
		t.Errorf("SuiteX received %d requests (%+v), want only the control record", requests(&x.d.SuiteX.System), ds)
	}
}

// TestMigrateDownRefusesNonEmptyStore: `migrate down` on a store with rows
// says what it would drop, exits 1 and drops nothing; --destroy-data does.
func TestMigrateDownRefusesNonEmptyStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := mysqltest.New(t)
	env := map[string]string{"EVENT_STORE_DSN": d.DSN}
	ev := store.Event{ID: uuid.NewString(), RecordType: "customer", RecordID: "C-1", Source: "netsuite",
		Timestamp: time.Now(), Changes: json.RawMessage(`{"email":"a@x"}`)}
	if err := d.Store.AppendEvent(ctx, ev, store.Audit{Fingerprint: strings.Repeat("a", 64), RecordType: "customer", RecordID: "C-1",
		Outcome: store.OutcomeAccepted, Stage: store.StageMerge}); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := dlqRun(t, env, "migrate", "down")
	if code != 1 || !strings.Contains(errOut, "events (1 rows)") || !strings.Contains(errOut, "event_audit_log (1 rows)") ||
		!strings.Contains(errOut, "--destroy-data") {
		t.Fatalf("migrate down on a non-empty store: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if got, err := d.Store.EventByID(ctx, ev.ID); err != nil || got.ID != ev.ID {
		t.Fatalf("the event is gone after a refused down: %v", err)
	}
	if code, out, errOut := dlqRun(t, env, "migrate", "status"); code != 0 || strings.Contains(out, "Pending") {
		t.Errorf("status after a refused down: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = dlqRun(t, env, "migrate", "down", "--destroy-data")
	if code != 0 || !strings.Contains(out, "rolled back") {
		t.Fatalf("migrate down --destroy-data: exit %d\n%s%s", code, out, errOut)
	}
	var n int
	if err := d.Root.QueryRow("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'events'", d.Name).Scan(&n); err != nil || n != 0 {
		t.Errorf("events table after down --destroy-data: %d, %v", n, err)
	}
	// An empty store goes down without the flag.
	if code, out, errOut := dlqRun(t, env, "migrate", "up"); code != 0 {
		t.Fatalf("up: exit %d %s%s", code, out, errOut)
	}
	if code, out, errOut := dlqRun(t, env, "migrate", "down"); code != 0 || !strings.Contains(errOut, "events (0 rows)") {
		t.Errorf("down on an empty store: exit %d\n%s%s", code, out, errOut)
	}
}

// TestDLQRedriveDryRunChecksTheTopic: a dry run fails when the error topic
// does not exist, instead of reporting a redrive that would then fail.
func TestDLQRedriveDryRunChecksTheTopic(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	_, worker := d.Worker(t)
	dlqSeed(t, d.Root, "dl-a", "suitex", "http_503", "customer", "C-1", time.Now())
	bare := pubsubtest.New(t, config.Sandbox, false) // no topics
	env := map[string]string{"EVENT_STORE_DSN": worker.DSN, "BACKBONE_ENV": "sandbox",
		"GCP_PROJECT": pubsubtest.Project, "PUBSUB_EMULATOR_HOST": bare.Addr()}
	code, out, errOut := dlqRun(t, env, "dlq", "redrive", "--dry-run", "dl-a")
	if code != 1 || !strings.Contains(errOut, "events.error.sandbox does not exist") || strings.Contains(out, "would redrive") {
		t.Errorf("dry run without the topic: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if code, _, errOut := dlqRun(t, env, "dlq", "redrive", "dl-a"); code != 1 || !strings.Contains(errOut, "does not exist") {
		t.Errorf("redrive without the topic: exit %d %s", code, errOut)
	}
	full := pubsubtest.New(t, config.Sandbox, true)
	env["PUBSUB_EMULATOR_HOST"] = full.Addr()
	code, out, errOut = dlqRun(t, env, "dlq", "redrive", "--dry-run", "dl-a")
	if code != 0 || !strings.Contains(out, "would redrive dl-a") || !strings.Contains(errOut, "topic events.error.sandbox: exists") {
		t.Errorf("dry run with the topic: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}

// archiveMessage archives m as DLQArchive would.
func archiveMessage(t *testing.T, s store.Store, m message.Message) {
	t.Helper()
	if _, err := deadletter.Archive(context.Background(), s, config.Sandbox, m); err != nil {
		t.Fatal(err)
	}
}

// TestDLQRedriveRetryable: --retryable redrives the transient failure, skips
// the permanent rejection beside it, probes the target first (held back,
// exit 1, while it answers 503), audits the redrive as automatic, and does
// not redrive the same dead letter twice.
func TestDLQRedriveRetryable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := mysqltest.New(t)
	_, worker := d.Worker(t)
	ps := pubsubtest.New(t, config.Sandbox, true)
	transient := dlqErrorData(t, "suitex", "http_503", "customer", "C-1")
	f := failure.Permanent(store.StageSuiteX, "http_400", "SuiteX refused the field")
	f.RecordType, f.RecordID = "customer", "C-2"
	orig := message.Message{Data: []byte(dlqRawEvent), ID: "orig-2", Subscription: "projects/p/subscriptions/events.merged.sandbox-suitex-sub"}
	permanent, err := json.Marshal(failure.Message(f, orig))
	if err != nil {
		t.Fatal(err)
	}
	archiveMessage(t, d.Store, message.Message{ID: "dl-transient", Data: transient, Attributes: map[string]string{"env": "sandbox"}})
	archiveMessage(t, d.Store, message.Message{ID: "dl-permanent", Data: permanent,
		Attributes: map[string]string{"env": "sandbox", deadletter.AttrDeadLetterReason: "not_retryable"}})

	status := http.StatusServiceUnavailable
	suitex := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status) }))
	defer suitex.Close()
	env := map[string]string{"EVENT_STORE_DSN": worker.DSN, "BACKBONE_ENV": "sandbox", "SUITEX_BASE_URL": suitex.URL,
		"GCP_PROJECT": pubsubtest.Project, "PUBSUB_EMULATOR_HOST": ps.Addr()}

	code, out, errOut := dlqRun(t, env, "dlq", "redrive", "--retryable", "--rate", "50")
	if code != 1 || !strings.Contains(errOut, "holding back 1 suitex") || len(ps.Drain(t, ps.Names.RetrySub)) != 0 {
		t.Fatalf("target down: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	status = http.StatusNotFound // up: any answer but 5xx or 429
	code, out, errOut = dlqRun(t, env, "dlq", "redrive", "--retryable", "--rate", "50")
	if code != 0 || !strings.Contains(out, "redriven dl-transient") || strings.Contains(out, "dl-permanent") ||
		!strings.Contains(errOut, "1 permanent") {
		t.Fatalf("target up: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	got := ps.Drain(t, ps.Names.RetrySub)
	if len(got) != 1 || got[0].Attributes[deadletter.AttrRedriveOf] != "dl-transient" {
		t.Fatalf("published %+v, want the transient one only", got)
	}
	var detail string
	if err := d.Root.QueryRowContext(ctx, "SELECT detail FROM event_audit_log WHERE processing_outcome = ? AND message_id = ?",
		store.OutcomeRedriven, "dl-transient").Scan(&detail); err != nil || !strings.Contains(detail, "--retryable") {
		t.Errorf("redrive audit %q, %v", detail, err)
	}
	// The next scheduled run finds nothing new.
	code, out, errOut = dlqRun(t, env, "dlq", "redrive", "--retryable")
	if code != 0 || !strings.Contains(errOut, "1 redriven before") || len(ps.Drain(t, ps.Names.RetrySub)) != 0 {
		t.Errorf("second run: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}
