package main

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/internal/devstack"
	"github.com/backbone-sync/backbone/shared/config"
)

// TestExamplesDeterministic publishes every example in one go, as fast as
// the publish verb goes, and checks the outcome examples/README.md
// promises for each: none may depend on timing. The echo's second step is
// published once its first was delivered, as the README says.
func TestExamplesDeterministic(t *testing.T) {
	t.Parallel()
	db := devDB(t)
	d, err := startDev(context.Background(), devstack.Options{Env: config.Sandbox, DSN: db.DSN, FuncAddr: "127.0.0.1:0",
		MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, Serve: devstack.ServeInProcess, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	x := &e2e{t: t, d: d, db: db}
	env := map[string]string{"BACKBONE_ENV": "sandbox", "GCP_PROJECT": d.Project, "PUBSUB_EMULATOR_HOST": d.Emulator, "EVENT_STORE_DSN": db.DSN}
	publishFile := func(args ...string) {
		t.Helper()
		if code, out, errs := runWith(env, append([]string{"publish"}, args...)...); code != 0 {
			t.Fatalf("publish %v: exit %d: %s %s", args, code, out, errs)
		}
	}
	for _, f := range []string{"customer-create.json", "customer-update.json", "sales-orders.jsonl", "concurrent-edit.jsonl", "duplicate.jsonl", "echo-1.json"} {
		publishFile("../../examples/" + f)
	}
	publishFile("--verbatim", "../../examples/poison.jsonl")

	audited := func(rt, rid, stage, outcome string, version int) int {
		q := "SELECT COUNT(*) FROM event_audit_log WHERE record_type = ? AND record_id = ? AND stage = ? AND processing_outcome = ?"
		args := []any{rt, rid, stage, outcome}
		if version > 0 {
			q += " AND version = ?"
			args = append(args, version)
		}
		return x.count(q, args...)
	}
	x.waitFor("customer-create then -update: v2 delivered to NetSuite", func() bool {
		return audited("customer", "C-1001", "netsuite", "delivered", 2) > 0
	})
	x.waitFor("sales-orders: SO-2026-0001 at v2", func() bool { return x.head("sales_order", "SO-2026-0001") == 2 })
	x.waitFor("concurrent-edit: merged at v3", func() bool { return audited("customer", "C-2002", "merge", "merged", 3) == 1 })
	x.waitFor("duplicate: two duplicates", func() bool { return audited("customer", "C-4004", "merge", "duplicate", 0) == 2 })
	x.waitFor("poison: 7 merge dead letters", func() bool {
		return x.count("SELECT COUNT(*) FROM dead_letters WHERE stage = 'merge'") == 7
	})
	x.waitFor("echo-1: delivered to SuiteX", func() bool { return audited("customer", "C-3003", "suitex", "delivered", 1) > 0 })
	publishFile("../../examples/echo-2.json")
	x.waitFor("echo-2: an echo", func() bool { return audited("customer", "C-3003", "merge", "echo", 0) == 1 })
	if h := x.head("customer", "C-3003"); h != 1 {
		t.Errorf("the echo stored something: C-3003 at v%d", h)
	}
	if h := x.head("customer", "C-2002"); h != 3 {
		t.Errorf("C-2002 at v%d, want 3", h)
	}
}
