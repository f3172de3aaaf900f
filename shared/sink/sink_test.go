package sink_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/logging"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/record"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/sink/targettest"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// recorder is a target that records what it is given and answers with err.
type recorder struct {
	name    string
	secrets []string

	mu    sync.Mutex
	calls []sink.Delivery
	err   error
}

func (r *recorder) Name() string { return r.name }
func (r *recorder) Deliver(_ context.Context, d sink.Delivery) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, d)
	return r.err
}
func (r *recorder) Secrets() []string { return r.secrets }
func (r *recorder) called() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}
func (r *recorder) last() sink.Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[len(r.calls)-1]
}
func (r *recorder) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

func merged(rt, rid, source string, version uint64) event.Merged {
	return mergedWith(rt, rid, source, version, `{"email":"ada@example.com","phone":null}`)
}

// mergedWith is a merged event of version with the changes given as JSON.
func mergedWith(rt, rid, source string, version uint64, changes string) event.Merged {
	var c map[string]json.RawMessage
	if err := json.Unmarshal([]byte(changes), &c); err != nil {
		panic(err)
	}
	return event.Merged{
		ID: uuid.NewString(), RecordType: rt, RecordID: rid, Source: source,
		Timestamp:   event.NewTime(time.Date(2026, 3, 13, 20, 0, 0, 123456000, time.UTC)),
		BaseVersion: version - 1, Version: version, Changes: c,
	}
}

// storeChain stores versions 1..n of a record, version v changing email to
// "v{v}@x" (and version 2 also setting phone), and returns them.
func storeChain(t *testing.T, st store.Store, rt, rid, source string, n uint64) []event.Merged {
	t.Helper()
	var out []event.Merged
	for v := uint64(1); v <= n; v++ {
		changes := fmt.Sprintf(`{"email":"v%d@x"}`, v)
		if v == 2 {
			changes = `{"email":"v2@x","phone":"2"}`
		}
		ev := mergedWith(rt, rid, source, v, changes)
		appendEvent(t, st, ev)
		out = append(out, ev)
	}
	return out
}

// sentJSON renders a delivery's changes as canonical JSON, for comparison.
func sentJSON(t *testing.T, d sink.Delivery) string {
	t.Helper()
	b, err := json.Marshal(d.Changes)
	if err != nil {
		t.Fatal(err)
	}
	c, err := event.Canonical(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(c)
}

func msg(t *testing.T, env config.Env, ev event.Merged) message.Message {
	t.Helper()
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return message.Message{
		Data: data, ID: uuid.NewString(), OrderingKey: ev.RecordType + ":" + ev.RecordID,
		Attributes: map[string]string{"env": string(env), event.AttrSource: ev.Source,
			event.AttrRecordType: ev.RecordType, event.AttrEventID: ev.ID},
		Subscription: "projects/p/subscriptions/" + env.Names().NetSuiteSub,
	}
}

// appendEvent stores ev as the merge engine would (the event, and its
// merge audit row with the source's report of its fields): the Runner reads
// the record's state and the target's known state from the store.
func appendEvent(t *testing.T, st store.Store, ev event.Merged) {
	t.Helper()
	targettest.StoreMerged(t, st, ev)
}

func trail(t *testing.T, st store.Store, rt, rid, stage string) []store.Audit {
	t.Helper()
	all, err := st.AuditTrail(context.Background(), rt, rid)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.Audit
	for _, a := range all {
		if a.Stage == stage {
			out = append(out, a)
		}
	}
	return out
}

func TestDeliveredAuditRowsAreWhatMergeAndKnownStateRead(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	st, _ := d.Worker(t) // the least-privilege user the functions run as
	ctx := context.Background()
	tgt := &recorder{name: store.StageNetSuite}
	r := sink.NewRunner(config.Sandbox, tgt, st, nil)

	ev := merged("customer", "C-1001", "suitex", 1)
	appendEvent(t, d.Store, ev)
	m := msg(t, config.Sandbox, ev)
	outcome, err := r.Deliver(ctx, m)
	if err != nil || outcome != store.OutcomeDelivered {
		t.Fatalf("Deliver: %q %v", outcome, err)
	}
	if tgt.called() != 1 {
		t.Fatalf("target got %+v", tgt.calls)
	}
	// The merged event of the newest version, with every field the target
	// lacks, since_version 0 and the key {event id}:{digest of the changes}.
	got := tgt.last()
	sum := sha256.Sum256([]byte(`{"email":"ada@example.com","phone":null}`))
	if got.ID != ev.ID || got.Version != 1 || got.Source != "suitex" || sentJSON(t, got) != `{"email":"ada@example.com","phone":null}` ||
		got.SinceVersion != 0 || got.IdempotencyKey != ev.ID+":"+hex.EncodeToString(sum[:8]) {
		t.Fatalf("target got %+v (key %s)", got, got.IdempotencyKey)
	}
	rows := trail(t, st, "customer", "C-1001", store.StageNetSuite)
	if len(rows) != 2 {
		t.Fatalf("audit rows %+v", rows)
	}
	fp, _ := sink.Fingerprint(ev)
	wantFields := map[string]string{"email": record.Digest(json.RawMessage(`"ada@example.com"`)), "phone": record.Digest(json.RawMessage(`null`))}
	sending, done := rows[0], rows[1]
	for i, a := range rows {
		if a.EventID != ev.ID || a.Version != 1 || a.RecordType != "customer" || a.RecordID != "C-1001" ||
			a.Fingerprint != fp || a.MessageID != m.ID || a.Fields == nil || !maps.Equal(a.Fields.Fields, wantFields) {
			t.Fatalf("audit row %d %+v (fields %+v)", i, a, a.Fields)
		}
	}
	// One row just before the request (the echo rule counts it from then),
	// one for the outcome, naming the attempt it concludes.
	if sending.Outcome != store.OutcomeSending || sending.Fields.Attempt != "" ||
		done.Outcome != store.OutcomeDelivered || done.Fields.Attempt != sending.ID {
		t.Fatalf("sending %+v / outcome %+v", sending, done)
	}
	// What the merge's echo rule and the next delivery read.
	hist, err := st.SystemHistory(ctx, "customer", "C-1001", store.StageNetSuite, 0)
	if err != nil || len(hist) != 2 || hist[0].ID != sending.ID || hist[1].ID != done.ID {
		t.Fatalf("NetSuite's history %+v, %v", hist, err)
	}
	if hist, _ := st.SystemHistory(ctx, "customer", "C-1001", store.StageSuiteX, 0); len(hist) != 1 ||
		hist[0].Stage != store.StageMerge || hist[0].Source != "suitex" {
		t.Fatalf("SuiteX's history (its own report) %+v", hist)
	}
	dl, last := targettest.Delivered(t, st, "customer", "C-1001", store.StageNetSuite)
	if last != 1 {
		t.Fatalf("last delivered = %d", last)
	}
	if len(dl) != 1 || dl[0] != ev.ID {
		t.Fatalf("delivered = %+v", dl)
	}
	if _, other := targettest.Delivered(t, st, "customer", "C-1001", store.StageSuiteX); other != 0 {
		t.Fatalf("delivery to netsuite counted for suitex: %d", other)
	}

	// The same message again: the target already holds every field.
	if outcome, err := r.Deliver(ctx, m); err != nil || outcome != store.OutcomeStale {
		t.Fatalf("redelivery: %q %v", outcome, err)
	}
	if tgt.called() != 1 {
		t.Fatalf("a redelivery sent %d requests", tgt.called()-1)
	}
	if rows := trail(t, st, "customer", "C-1001", store.StageNetSuite); len(rows) != 3 ||
		rows[2].Outcome != store.OutcomeStale || rows[2].Fields != nil || rows[2].EventID != ev.ID {
		t.Fatalf("redelivery audit %+v", rows)
	}
}

// TestOwnEventSendsOnlyWhatTheTargetLacks: an event from NetSuite is not
// sent back to NetSuite when NetSuite reported those values itself
// (skipped_echo), but a delivery it triggers does send the fields NetSuite
// lacks (another source's change whose own delivery has not run yet).
func TestOwnEventSendsOnlyWhatTheTargetLacks(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	ctx := context.Background()
	tgt := &recorder{name: store.StageNetSuite}
	r := sink.NewRunner(config.Sandbox, tgt, d.Store, nil)
	const rid = "C-echo"
	v1 := merged("customer", rid, "netsuite", 1)
	appendEvent(t, d.Store, v1)
	outcome, err := r.Deliver(ctx, msg(t, config.Sandbox, v1))
	if err != nil || outcome != store.OutcomeSkippedEcho {
		t.Fatalf("Deliver: %q %v", outcome, err)
	}
	if tgt.called() != 0 {
		t.Fatal("NetSuite's own values were sent to NetSuite")
	}
	rows := trail(t, d.Store, "customer", rid, store.StageNetSuite)
	if len(rows) != 1 || rows[0].Outcome != store.OutcomeSkippedEcho || rows[0].EventID != v1.ID || rows[0].Version != 1 {
		t.Fatalf("audit %+v", rows)
	}
	// An echo skip is not a delivery.
	if _, last := targettest.Delivered(t, d.Store, "customer", rid, store.StageNetSuite); last != 0 {
		t.Fatalf("skipped echo counted as delivered: %d", last)
	}

	// SuiteX changes nickname (v2, its delivery still queued), then NetSuite
	// changes email (v3). v3's message comes from NetSuite, yet NetSuite
	// lacks v2's nickname: that, and only that, is sent, as version 3.
	v2 := mergedWith("customer", rid, "suitex", 2, `{"nickname":"ada"}`)
	v3 := mergedWith("customer", rid, "netsuite", 3, `{"email":"new@x"}`)
	appendEvent(t, d.Store, v2)
	appendEvent(t, d.Store, v3)
	if outcome, err := r.Deliver(ctx, msg(t, config.Sandbox, v3)); err != nil || outcome != store.OutcomeDelivered {
		t.Fatalf("v3: %q %v", outcome, err)
	}
	if tgt.called() != 1 {
		t.Fatalf("%d requests", tgt.called())
	}
	if got := tgt.last(); got.ID != v3.ID || got.Version != 3 || sentJSON(t, got) != `{"nickname":"ada"}` {
		t.Fatalf("NetSuite got %+v, want v3 carrying only nickname", got)
	}
	// v2's own message, late: nothing is missing any more.
	if outcome, err := r.Deliver(ctx, msg(t, config.Sandbox, v2)); err != nil || outcome != store.OutcomeStale {
		t.Fatalf("v2 after v3: %q %v", outcome, err)
	}
	if tgt.called() != 1 {
		t.Fatalf("v2 sent again: %d requests", tgt.called())
	}
}

// TestOlderOrRepeatedMessagesNeverRegressTheTarget: a delivery always sends
// the values of the record's newest version N, whichever message triggers
// it, so an old version arriving late finds nothing missing (stale) and can
// never put an old value back; an old message arriving first brings the
// target straight to N.
func TestOlderOrRepeatedMessagesNeverRegressTheTarget(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	ctx := context.Background()
	tgt := &recorder{name: store.StageSuiteX}
	r := sink.NewRunner(config.Production, tgt, d.Store, nil)

	evs := storeChain(t, d.Store, "customer", "C-9", "netsuite", 5)
	v3, v5 := evs[2], evs[4]
	if out, err := r.Deliver(ctx, msg(t, config.Production, v5)); err != nil || out != store.OutcomeDelivered {
		t.Fatalf("v5: %q %v", out, err)
	}
	if got := tgt.last(); got.ID != v5.ID || got.Version != 5 || sentJSON(t, got) != `{"email":"v5@x","phone":"2"}` {
		t.Fatalf("v5 delivered %+v: want the state at v5 (v2's phone included)", got)
	}
	out, err := r.Deliver(ctx, msg(t, config.Production, v3))
	if err != nil || out != store.OutcomeStale {
		t.Fatalf("v3 after v5: %q %v", out, err)
	}
	// A redelivery of v5 finds nothing missing either.
	out, err = r.Deliver(ctx, msg(t, config.Production, v5))
	if err != nil || out != store.OutcomeStale {
		t.Fatalf("v5 again: %q %v", out, err)
	}
	if tgt.called() != 1 {
		t.Fatalf("target called %d times, want once (v5 only)", tgt.called())
	}
	rows := trail(t, d.Store, "customer", "C-9", store.StageSuiteX)
	if len(rows) != 4 || rows[0].Outcome != store.OutcomeSending || rows[1].Outcome != store.OutcomeDelivered {
		t.Fatalf("audit %+v", rows)
	}
	if a := rows[2]; a.Outcome != store.OutcomeStale || a.EventID != v3.ID || a.Version != 3 || !strings.Contains(a.Detail, "version 5") {
		t.Fatalf("stale row of v3 %+v", a)
	}
	if a := rows[3]; a.Outcome != store.OutcomeStale || a.EventID != v5.ID || a.Version != 5 {
		t.Fatalf("stale row of v5 again %+v", a)
	}
	// v6 still goes through, with only what changed and since_version 5.
	v6 := mergedWith("customer", "C-9", "netsuite", 6, `{"email":"v6@x"}`)
	appendEvent(t, d.Store, v6)
	if out, err := r.Deliver(ctx, msg(t, config.Production, v6)); err != nil || out != store.OutcomeDelivered {
		t.Fatalf("v6: %q %v", out, err)
	}
	if got := tgt.last(); got.Version != 6 || got.SinceVersion != 5 || sentJSON(t, got) != `{"email":"v6@x"}` {
		t.Fatalf("v6 delivered %+v", got)
	}

	// The other order: v2's message arrives while v4 is already stored. It
	// sends v4's values (as version 4), and v4's own message is then stale.
	old := storeChain(t, d.Store, "customer", "C-9b", "netsuite", 4)
	if out, err := r.Deliver(ctx, msg(t, config.Production, old[1])); err != nil || out != store.OutcomeDelivered {
		t.Fatalf("v2 of 4: %q %v", out, err)
	}
	if got := tgt.last(); got.ID != old[3].ID || got.Version != 4 || got.RecordID != "C-9b" || sentJSON(t, got) != `{"email":"v4@x","phone":"2"}` {
		t.Fatalf("v2's message delivered %+v, want version 4's values", got)
	}
	if out, err := r.Deliver(ctx, msg(t, config.Production, old[3])); err != nil || out != store.OutcomeStale {
		t.Fatalf("v4 after its values went out: %q %v", out, err)
	}
	if tgt.called() != 3 {
		t.Fatalf("%d requests, want 3", tgt.called())
	}
}

func TestForeignOrMissingEnvIsRejected(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	tgt := &recorder{name: store.StageNetSuite}
	r := sink.NewRunner(config.Sandbox, tgt, d.Store, nil)
	ev := merged("customer", "C-env", "suitex", 1)
	for _, env := range []string{"production", ""} {
		m := msg(t, config.Sandbox, ev)
		m.Attributes["env"] = env
		if env == "" {
			delete(m.Attributes, "env")
		}
		out, err := r.Deliver(context.Background(), m)
		f, ok := failure.As(err)
		if !ok || out != store.OutcomeRejected || f.Retryable || f.Reason != failure.ReasonWrongEnv || f.Stage != store.StageNetSuite {
			t.Fatalf("env %q: %q %v", env, out, err)
		}
	}
	if tgt.called() != 0 {
		t.Fatal("a message of another environment reached the target")
	}
	if rows := trail(t, d.Store, "customer", "C-env", store.StageNetSuite); len(rows) != 0 {
		t.Fatalf("foreign message audited in this environment: %+v", rows)
	}
}

func TestInvalidMergedMessagesArePermanentFailures(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	tgt := &recorder{name: store.StageSuiteX}
	r := sink.NewRunner(config.Sandbox, tgt, d.Store, nil)
	good := merged("customer", "C-bad", "netsuite", 2)
	noChanges := good
	noChanges.Changes = nil
	badVersion := good
	badVersion.Version = 7
	noID := good
	noID.ID = ""
	for name, data := range map[string][]byte{
		"not json":     []byte(`{"id":`),
		"empty":        nil,
		"no changes":   mustJSON(t, noChanges),
		"version skew": mustJSON(t, badVersion),
		"no id":        mustJSON(t, noID),
		"wrong type":   []byte(`{"id":"x","record_type":"customer","record_id":"C","source":"s","version":"2"}`),
	} {
		m := msg(t, config.Sandbox, good)
		m.Data = data
		out, err := r.Deliver(context.Background(), m)
		f, ok := failure.As(err)
		if !ok || out != store.OutcomeRejected || f.Retryable || f.Reason != sink.ReasonInvalidMessage {
			t.Errorf("%s: %q %v", name, out, err)
		}
	}
	// The event_id attribute must name the event in the data.
	m := msg(t, config.Sandbox, good)
	m.Attributes[event.AttrEventID] = uuid.NewString()
	if _, err := r.Deliver(context.Background(), m); err == nil {
		t.Error("event_id attribute mismatch accepted")
	}
	if tgt.called() != 0 {
		t.Fatal("an invalid message reached the target")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFailedDeliveryIsAuditedAndRedacted(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	var logs bytes.Buffer
	secret := "s3cr3t-Token-Value"
	tgt := &recorder{name: store.StageNetSuite, secrets: []string{secret},
		err: failure.Retryable("whatever", "http_503", "PUT /x: HTTP 503: upstream said Authorization: OAuth oauth_token="+secret)}
	r := sink.NewRunner(config.Sandbox, tgt, d.Store, logging.New(&logs, slog.LevelDebug))
	ev := merged("customer", "C-fail", "suitex", 1)
	appendEvent(t, d.Store, ev)
	m := msg(t, config.Sandbox, ev)
	out, err := r.Deliver(context.Background(), m)
	f, ok := failure.As(err)
	if !ok || out != store.OutcomeFailed || !f.Retryable || f.Reason != "http_503" {
		t.Fatalf("Deliver: %q %v", out, err)
	}
	if f.Stage != store.StageNetSuite || f.EventID != ev.ID || f.RecordType != "customer" || f.RecordID != "C-fail" {
		t.Fatalf("failure context %+v", f)
	}
	if strings.Contains(f.Detail, secret) || !strings.Contains(f.Detail, sink.Redacted) {
		t.Fatalf("detail not redacted: %s", f.Detail)
	}
	rows := trail(t, d.Store, "customer", "C-fail", store.StageNetSuite)
	if len(rows) != 2 || rows[0].Outcome != store.OutcomeSending || rows[1].Outcome != store.OutcomeFailed || rows[1].Version != 1 ||
		rows[1].Fields == nil || rows[1].Fields.Attempt != rows[0].ID ||
		!strings.HasPrefix(rows[1].Detail, "http_503: ") || strings.Contains(rows[1].Detail, secret) {
		t.Fatalf("audit %+v", rows)
	}
	if strings.Contains(logs.String(), secret) {
		t.Fatalf("secret in logs: %s", logs.String())
	}
	if !strings.Contains(logs.String(), "delivery failed") {
		t.Fatalf("failure not logged: %s", logs.String())
	}
	// A failure is not a delivery.
	if _, last := targettest.Delivered(t, d.Store, "customer", "C-fail", store.StageNetSuite); last != 0 {
		t.Fatalf("failed delivery counted: %d", last)
	}
	// A 503 may come after the target applied the change: what it carried is
	// unknown, so the next delivery sends every field again.
	tgt.fail(nil)
	if out, err := r.Deliver(context.Background(), m); err != nil || out != store.OutcomeDelivered {
		t.Fatalf("retry: %q %v", out, err)
	}
	if tgt.called() != 2 || sentJSON(t, tgt.last()) != `{"email":"ada@example.com","phone":null}` {
		t.Fatalf("retry sent %+v", tgt.calls)
	}
}

// TestRefusedDeliveryIsAuditedRefused: a clear refusal (a 4xx before the
// target acted) is audited `refused`, not `failed`, and the fields it
// carried are still missing: the next delivery sends them again.
func TestRefusedDeliveryIsAuditedRefused(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	refusal := failure.Permanent("whatever", "http_400", "unknown field phone")
	refusal.NotApplied = true
	tgt := &recorder{name: store.StageSuiteX, err: refusal}
	r := sink.NewRunner(config.Sandbox, tgt, d.Store, nil)
	ev := merged("customer", "C-refused", "netsuite", 1)
	appendEvent(t, d.Store, ev)
	m := msg(t, config.Sandbox, ev)
	out, err := r.Deliver(context.Background(), m)
	if f, ok := failure.As(err); !ok || out != store.OutcomeFailed || f.Retryable || f.Reason != "http_400" {
		t.Fatalf("Deliver: %q %v", out, err)
	}
	rows := trail(t, d.Store, "customer", "C-refused", store.StageSuiteX)
	if len(rows) != 2 || rows[0].Outcome != store.OutcomeSending || rows[1].Outcome != store.OutcomeRefused ||
		rows[1].Fields == nil || rows[1].Fields.Attempt != rows[0].ID {
		t.Fatalf("audit %+v", rows)
	}
	tgt.fail(nil)
	if out, err := r.Deliver(context.Background(), m); err != nil || out != store.OutcomeDelivered {
		t.Fatalf("after the fix: %q %v", out, err)
	}
	if tgt.called() != 2 || sentJSON(t, tgt.last()) != `{"email":"ada@example.com","phone":null}` {
		t.Fatalf("after the fix sent %+v", tgt.calls)
	}
}

func TestPlainTargetErrorBecomesRetryableFailure(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	tgt := &recorder{name: store.StageSuiteX, err: errors.New("boom")}
	r := sink.NewRunner(config.Sandbox, tgt, d.Store, nil)
	ev := merged("customer", "C-x", "netsuite", 1)
	appendEvent(t, d.Store, ev)
	_, err := r.Deliver(context.Background(), msg(t, config.Sandbox, ev))
	f, ok := failure.As(err)
	if !ok || !f.Retryable || f.Reason != failure.ReasonInternal || f.Stage != store.StageSuiteX {
		t.Fatalf("%v", err)
	}
	if tgt.called() != 1 {
		t.Fatalf("target called %d times", tgt.called())
	}
}

// TestMessageAheadOfTheStoreIsNotDelivered: a merged message naming a
// version the store does not hold (not this store's event) sends nothing:
// what to send comes from the store.
func TestMessageAheadOfTheStoreIsNotDelivered(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	tgt := &recorder{name: store.StageSuiteX}
	r := sink.NewRunner(config.Sandbox, tgt, d.Store, nil)
	out, err := r.Deliver(context.Background(), msg(t, config.Sandbox, merged("customer", "C-ahead", "netsuite", 3)))
	if f, ok := failure.As(err); !ok || out != store.OutcomeFailed || !f.Retryable || f.Reason != sink.ReasonAheadOfStore || !strings.Contains(f.Detail, "version 3") {
		t.Fatalf("%q %v", out, err)
	}
	if tgt.called() != 0 {
		t.Fatal("delivered a version the store does not hold")
	}
}

func TestStoreDownIsRetryable(t *testing.T) {
	t.Parallel()
	// A pool pointing at a closed port: every query fails to connect.
	db, closeFn, err := mysql.Open(context.Background(), config.DB{DSN: "root@tcp(127.0.0.1:1)/nope?timeout=1s"})
	if err != nil {
		t.Fatal(err)
	}
	st := mysql.New(db, closeFn)
	t.Cleanup(func() { _ = st.Close() })
	tgt := &recorder{name: store.StageNetSuite}
	r := sink.NewRunner(config.Sandbox, tgt, st, nil)
	out, err := r.Deliver(context.Background(), msg(t, config.Sandbox, merged("customer", "C-down", "suitex", 1)))
	f, ok := failure.As(err)
	if !ok || out != store.OutcomeFailed || !f.Retryable || f.Reason != failure.ReasonStoreUnavailable {
		t.Fatalf("%q %v", out, err)
	}
	// Without the record's state and the target's known state nothing is sent.
	if tgt.called() != 0 {
		t.Fatal("delivered without reading the store")
	}
}

func TestFingerprintIsJCSOfTheFiveFields(t *testing.T) {
	t.Parallel()
	ev := event.Merged{ID: "ignored", RecordType: "customer", RecordID: "C-1", Source: "suitex", BaseVersion: 4, Version: 5,
		Timestamp: event.NewTime(time.Now()),
		Changes:   map[string]json.RawMessage{"b": json.RawMessage(`1.0`), "a": json.RawMessage(`"x\u00e9"`), "n": json.RawMessage(`null`)}}
	canon := `{"base_version":4,"changes":{"a":"xé","b":1,"n":null},"record_id":"C-1","record_type":"customer","source":"suitex"}`
	sum := sha256.Sum256([]byte(canon))
	got, err := sink.Fingerprint(ev)
	if err != nil || got != hex.EncodeToString(sum[:]) {
		t.Fatalf("Fingerprint = %s, %v; want sha256(%s)", got, err, canon)
	}
	// id, timestamp, version and conflicts are not part of it.
	ev2 := ev
	ev2.ID, ev2.Timestamp, ev2.Conflicts = "other", event.NewTime(time.Now().Add(time.Hour)), []event.Conflict{{Field: "a"}}
	if g2, _ := sink.Fingerprint(ev2); g2 != got {
		t.Fatal("fingerprint depends on id, timestamp or conflicts")
	}
	ev2.Source = "netsuite"
	if g3, _ := sink.Fingerprint(ev2); g3 == got {
		t.Fatal("fingerprint ignores the source")
	}
}

func ExampleRedact() {
	fmt.Println(sink.Redact("token=abcd1234 key=abcd1234-long", "abcd1234", "abcd1234-long", "ab"))
	// Output: token=[REDACTED] key=[REDACTED]
}

type panicker struct{}

func (panicker) Name() string { return store.StageSuiteX }
func (panicker) Deliver(context.Context, sink.Delivery) error {
	var m map[string]int
	m["boom"]++ // a nil-map write: a bug in a target
	return nil
}

func TestTargetPanicBecomesRetryableFailure(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	r := sink.NewRunner(config.Sandbox, panicker{}, d.Store, nil)
	ev := merged("customer", "C-panic", "netsuite", 1)
	appendEvent(t, d.Store, ev)
	out, err := r.Deliver(context.Background(), msg(t, config.Sandbox, ev))
	f, ok := failure.As(err)
	if !ok || out != store.OutcomeFailed || !f.Retryable || f.Reason != failure.ReasonInternal || !strings.Contains(f.Detail, "panicked") {
		t.Fatalf("%q %v", out, err)
	}
}

// gate is a target whose delivery of one version blocks until released.
type gate struct {
	recorder
	block   uint64
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (g *gate) Deliver(ctx context.Context, d sink.Delivery) error {
	if d.Version == g.block {
		g.once.Do(func() { close(g.entered) })
		<-g.release
	}
	return g.recorder.Deliver(ctx, d)
}

// TestConcurrentDeliveriesNeverRegress: the live subscription delivers v5
// while Retry re-delivers v3 (two services, one database). Deliveries of
// one record to one target are serialised: v3's delivery waits for v5's,
// then finds the target holds every field at v5 (stale), and sends nothing.
func TestConcurrentDeliveriesNeverRegress(t *testing.T) {
	t.Parallel()
	db := mysqltest.New(t)
	g := &gate{recorder: recorder{name: store.StageSuiteX}, block: 5, entered: make(chan struct{}), release: make(chan struct{})}
	live := sink.NewRunner(config.Sandbox, g, db.Store, nil)
	retrying := sink.NewRunner(config.Sandbox, g, db.Store, nil)
	evs := storeChain(t, db.Store, "customer", "RACE-1", "netsuite", 5)
	v3, v5 := evs[2], evs[4]
	ctx := context.Background()
	done5 := make(chan error, 1)
	go func() {
		_, err := live.Deliver(ctx, msg(t, config.Sandbox, v5))
		done5 <- err
	}()
	<-g.entered // v5 is at the target, not yet audited
	done3 := make(chan string, 1)
	go func() {
		out, err := retrying.Deliver(ctx, msg(t, config.Sandbox, v3))
		if err != nil {
			t.Error(err)
		}
		done3 <- out
	}()
	select {
	case out := <-done3:
		t.Fatalf("v3 finished (%s) while v5 was being delivered: deliveries are not serialised", out)
	case <-time.After(300 * time.Millisecond):
	}
	close(g.release)
	if err := <-done5; err != nil {
		t.Fatal(err)
	}
	if out := <-done3; out != store.OutcomeStale {
		t.Errorf("v3 outcome %s, want stale", out)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.calls) != 1 || g.calls[0].Version != 5 || g.calls[0].ID != v5.ID {
		t.Fatalf("target received %d deliveries (%+v), want only v5", len(g.calls), g.calls)
	}
}

// TestDeliveriesDoNotExhaustTheirPool: each delivery holds the record's lock
// on a pooled connection; with more concurrent deliveries than connections,
// every one must still complete (the guard's reads and audits use the lock's
// own connection, not a second one).
func TestDeliveriesDoNotExhaustTheirPool(t *testing.T) {
	t.Parallel()
	db := mysqltest.New(t)
	cfg := db.Cfg
	cfg.MaxOpenConns = 2
	conn, closeFn, err := mysql.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	small := mysql.New(conn, closeFn)
	defer small.Close()
	rec := &recorder{name: store.StageSuiteX}
	r := sink.NewRunner(config.Sandbox, rec, small, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < 12; i++ {
		ev := merged("customer", fmt.Sprintf("POOL-%d", i), "netsuite", 1)
		appendEvent(t, db.Store, ev)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := r.Deliver(ctx, msg(t, config.Sandbox, ev)); err != nil || out != store.OutcomeDelivered {
				t.Errorf("delivery %s: %s, %v", ev.RecordID, out, err)
			}
		}()
	}
	wg.Wait()
	if rec.called() != 12 {
		t.Errorf("%d deliveries reached the target, want 12", rec.called())
	}
}

// twoWay drives a record to which SuiteX's changes (odd versions) are
// delivered to NetSuite, and NetSuite's own (even versions) are skipped as
// echoes, checking that each delivery sends exactly the new value.
type twoWay struct {
	t   *testing.T
	st  store.Store
	tgt *recorder
	r   *sink.Runner
	rid string
}

func (w twoWay) version(v uint64) {
	w.t.Helper()
	source, want := store.StageSuiteX, store.OutcomeDelivered
	if v%2 == 0 {
		source, want = store.StageNetSuite, store.OutcomeSkippedEcho
	}
	changes := fmt.Sprintf(`{"email":"v%d@x"}`, v)
	if v == 1 {
		changes = `{"email":"v1@x","phone":"1"}`
	}
	ev := mergedWith("customer", w.rid, source, v, changes)
	appendEvent(w.t, w.st, ev)
	calls := w.tgt.called()
	outcome, err := w.r.Deliver(context.Background(), msg(w.t, config.Sandbox, ev))
	if err != nil || outcome != want {
		w.t.Fatalf("version %d from %s: %q %v, want %s", v, source, outcome, err, want)
	}
	if want != store.OutcomeDelivered {
		return
	}
	// Only the new value: phone went with version 1, and the target's own
	// emails are not sent back.
	if w.tgt.called() != calls+1 || sentJSON(w.t, w.tgt.last()) != changes {
		w.t.Fatalf("version %d: sent %s in %d requests, want %s in one", v, sentJSON(w.t, w.tgt.last()), w.tgt.called()-calls, changes)
	}
}

// checkpoints counts the checkpoints of target's rows of the record.
func checkpoints(t *testing.T, st store.Store, rid, target string) int {
	t.Helper()
	n := 0
	for _, a := range trail(t, st, "customer", rid, target) {
		if a.State != nil {
			n++
		}
	}
	return n
}

// TestLongHistoryReadsSinceTheCheckpoint: on a record with a long history,
// deliveries write known-state checkpoints, read only the rows since the
// newest one, and still send exactly what the target lacks; a checkpoint
// the sink cannot read makes it read the whole history once, not send a
// wrong delta.
func TestLongHistoryReadsSinceTheCheckpoint(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	ctx := context.Background()
	const (
		rid   = "C-long"
		every = 8
		n     = 120
	)
	tgt := &recorder{name: store.StageNetSuite}
	w := twoWay{t: t, st: d.Store, tgt: tgt, r: sink.NewRunner(config.Sandbox, tgt, d.Store, nil).CheckpointEvery(every), rid: rid}
	for v := uint64(1); v <= n; v++ {
		w.version(v)
	}
	since, err := d.Store.Checkpoint(ctx, "customer", rid, store.StageNetSuite)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := d.Store.KnownHistory(ctx, "customer", rid, store.StageNetSuite, since)
	if err != nil {
		t.Fatal(err)
	}
	all, err := d.Store.KnownHistory(ctx, "customer", rid, store.StageNetSuite, 0)
	if err != nil {
		t.Fatal(err)
	}
	// 60 own reports, 60 attempts of two rows and 60 skip rows (some with a
	// checkpoint).
	ck := checkpoints(t, d.Store, rid, store.StageNetSuite)
	if len(all) < 180 || ck < 180/(3*every) || len(rows) > 3*every {
		t.Fatalf("history of %d rows with %d checkpoints; a delivery reads %d rows (want at most %d)", len(all), ck, len(rows), 3*every)
	}
	if missing, err := sink.Missing(ctx, d.Store, "customer", rid, store.StageNetSuite); err != nil || len(missing) != 0 {
		t.Fatalf("Missing = %v, %v", missing, err)
	}

	// A checkpoint in a format this sink does not read, newest of all.
	head, err := d.Store.Head(ctx, "customer", rid)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Store.AppendAudit(ctx, store.Audit{Fingerprint: strings.Repeat("0", 64), RecordType: "customer", RecordID: rid,
		Outcome: store.OutcomeStale, Stage: store.StageNetSuite, Version: head.Version, State: json.RawMessage(`{"format":99}`)}); err != nil {
		t.Fatal(err)
	}
	for v := uint64(n + 1); v <= n+3; v++ {
		w.version(v)
	}
}

// TestYoungRecordCheckpointsOnce: a record younger than the checkpoint
// interval is read whole; once its rows reach the interval one checkpoint
// is written, not one per delivery from then on.
func TestYoungRecordCheckpointsOnce(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	tgt := &recorder{name: store.StageNetSuite}
	w := twoWay{t: t, st: d.Store, tgt: tgt, r: sink.NewRunner(config.Sandbox, tgt, d.Store, nil), rid: "C-young"}
	for v := uint64(1); v <= 62; v++ {
		w.version(v)
	}
	// 93 rows below version 62: the first checkpoint comes once 64 rows
	// would be summarised, the next only after 64 more.
	if n := checkpoints(t, d.Store, "C-young", store.StageNetSuite); n != 1 {
		t.Fatalf("%d checkpoints on a record of 62 versions, want 1", n)
	}
}
