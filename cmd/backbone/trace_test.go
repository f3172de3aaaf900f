package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
	"github.com/backbone-sync/backbone/shared/store/storetest"
)

func TestTraceTimeline(t *testing.T) {
	t.Parallel()
	db := mysqltest.New(t)
	ctx := context.Background()
	s := db.Store
	e := storetest.NewEvent("customer", "T:1", 0, `{"email":"a@example.com"}`)
	audit := func(a store.Audit) {
		t.Helper()
		a.RecordType, a.RecordID = "customer", "T:1"
		if a.Fingerprint == "" {
			a.Fingerprint = strings.Repeat("a", 64)
		}
		if err := s.AppendAudit(ctx, a); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // distinct created_at, so the order is the writing order
	}
	if err := s.AppendEvent(ctx, e, store.Audit{Fingerprint: strings.Repeat("b", 64), RecordType: "customer", RecordID: "T:1",
		Outcome: store.OutcomeAccepted, Stage: store.StageMerge, MessageID: "m1"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	audit(store.Audit{EventID: e.ID, Outcome: store.OutcomeDuplicate, Stage: store.StageMerge, MessageID: "m2", Version: 1})
	audit(store.Audit{EventID: e.ID, Outcome: store.OutcomeSkippedEcho, Stage: store.StageNetSuite, Version: 1})
	audit(store.Audit{EventID: e.ID, Outcome: store.OutcomeFailed, Stage: store.StageSuiteX, Version: 1, Detail: "http_503: down"})
	if _, err := s.AppendDeadLetter(ctx, store.DeadLetter{MessageID: "dl-1", Subscription: "events.error.sandbox-retry-sub", DeliveryAttempts: 5,
		Stage: "suitex", Reason: "http_503", EventID: e.ID, RecordType: "customer", RecordID: "T:1", Data: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	audit(store.Audit{EventID: e.ID, Outcome: store.OutcomeRedriven, Stage: store.StageRedrive, Version: 1})
	audit(store.Audit{EventID: e.ID, Outcome: store.OutcomeDelivered, Stage: store.StageSuiteX, Version: 1})

	envs := map[string]string{"EVENT_STORE_DSN": db.DSN}
	var out, errb bytes.Buffer
	c := &cli{stdout: &out, stderr: &errb, getenv: func(k string) string { return envs[k] }}
	// record ids may contain colons: only the first one splits.
	if code := run(ctx, c, []string{"trace", "customer:T:1"}); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	text := out.String()
	want := []string{"accepted", "duplicate", "skipped_echo", "failed", "suitex/http_503", "redriven", "delivered"}
	last := -1
	for _, w := range want {
		i := strings.Index(text, w)
		if i < 0 || i < last {
			t.Fatalf("timeline misses %q or has it out of order:\n%s", w, text)
		}
		last = i
	}
	if !strings.Contains(text, "version 1") || !strings.Contains(text, `{"email":"a@example.com"}`) {
		t.Errorf("timeline:\n%s", text)
	}
	out.Reset()
	if code := run(ctx, c, []string{"trace", "--json", "customer:T:1"}); code != 0 {
		t.Fatalf("--json exit %d: %s", code, errb.String())
	}
	var entries []traceEntry
	if err := json.Unmarshal(out.Bytes(), &entries); err != nil || len(entries) != 7 {
		t.Fatalf("--json: %d entries, %v\n%s", len(entries), err, out.String())
	}
	if code := run(ctx, c, []string{"trace", "customer:nope"}); code != 1 {
		t.Errorf("unknown record: exit %d, want 1", code)
	}
	if code := run(ctx, c, []string{"trace", "no-colon"}); code != 2 {
		t.Errorf("bad argument: exit %d, want 2", code)
	}
}

// TestTraceWrapsAndFillsEveryColumn: a long DETAIL is shown whole (wrapped),
// every row has a SOURCE, and a delivery shows the fields it sent, also
// when its outcome row names the sending row.
func TestTraceWrapsAndFillsEveryColumn(t *testing.T) {
	t.Parallel()
	db := mysqltest.New(t)
	ctx := context.Background()
	s := db.Store
	e := storetest.NewEvent("customer", "W-1", 0, `{"email":"a@example.com","phone":"1"}`)
	e.Source = "netsuite"
	if err := s.AppendEvent(ctx, e, store.Audit{Fingerprint: strings.Repeat("b", 64), RecordType: "customer", RecordID: "W-1",
		Outcome: store.OutcomeAccepted, Stage: store.StageMerge, MessageID: "m1", Source: "netsuite"}); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("word ", 60) + "END-OF-DETAIL"
	rows := []store.Audit{
		{Outcome: store.OutcomeNoop, Stage: store.StageMerge, MessageID: "m2", Source: "suitex", Detail: long},
		{ID: "attempt-1", EventID: e.ID, Outcome: store.OutcomeSending, Stage: store.StageSuiteX, Version: 1,
			Fields: &store.FieldSet{Fields: map[string]string{"email": "d1", "phone": "d2"}}},
		{EventID: e.ID, Outcome: store.OutcomeDelivered, Stage: store.StageSuiteX, Version: 1, Fields: &store.FieldSet{Attempt: "attempt-1"}},
	}
	for _, a := range rows {
		time.Sleep(2 * time.Millisecond)
		a.RecordType, a.RecordID, a.Fingerprint = "customer", "W-1", strings.Repeat("c", 64)
		if err := s.AppendAudit(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	var out, errb bytes.Buffer
	c := &cli{stdout: &out, stderr: &errb, getenv: func(k string) string { return map[string]string{"EVENT_STORE_DSN": db.DSN}[k] }}
	if code := run(ctx, c, []string{"trace", "customer:W-1"}); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	text := out.String()
	if !strings.Contains(text, "END-OF-DETAIL") || strings.Contains(text, "...") {
		t.Errorf("DETAIL cut:\n%s", text)
	}
	lines := strings.Split(text, "\n")
	var srcCol, sentCol int
	for _, l := range lines {
		if strings.HasPrefix(l, "TIME") {
			srcCol, sentCol = strings.Index(l, "SOURCE"), strings.Index(l, "FIELDS SENT")
			continue
		}
		if !strings.HasPrefix(l, "20") || len(l) <= sentCol {
			continue
		}
		if strings.HasPrefix(l[srcCol:], "-") {
			t.Errorf("row without SOURCE: %s", l)
		}
		if strings.Contains(l, "  suitex  ") && !strings.Contains(l, " merge ") && !strings.HasPrefix(l[sentCol:], "email,phone") {
			t.Errorf("delivery row without its fields: %s", l)
		}
	}
	out.Reset()
	if code := run(ctx, c, []string{"trace", "customer:W-1", "--json"}); code != 0 {
		t.Fatalf("--json after the argument: exit %d: %s", code, errb.String())
	}
	var entries []traceEntry
	if err := json.Unmarshal(out.Bytes(), &entries); err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if en.Source == "" || (en.Stage == store.StageSuiteX && strings.Join(en.FieldsSent, ",") != "email,phone") || (en.Outcome == store.OutcomeNoop && en.Detail != long) {
			t.Errorf("entry %+v", en)
		}
	}
}
