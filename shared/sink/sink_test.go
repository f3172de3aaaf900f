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
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql"
	"github.com/backbone-sync/backbone/shared/testdb"
)

// recorder is a target that records what it is given and answers with err.
type recorder struct {
	name    string
	secrets []string

	mu    sync.Mutex
	calls []event.Merged
	err   error
}

func (r *recorder) Name() string { return r.name }
func (r *recorder) Deliver(_ context.Context, ev event.Merged) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, ev)
	return r.err
}
func (r *recorder) Secrets() []string { return r.secrets }
func (r *recorder) called() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

func merged(rt, rid, source string, version uint64) event.Merged {
	return event.Merged{
		ID: uuid.NewString(), RecordType: rt, RecordID: rid, Source: source,
		Timestamp:   event.NewTime(time.Date(2026, 3, 13, 20, 0, 0, 123456000, time.UTC)),
		BaseVersion: version - 1, Version: version,
		Changes: map[string]json.RawMessage{"email": json.RawMessage(`"ada@example.com"`), "phone": json.RawMessage(`null`)},
	}
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

// appendEvent stores ev as the merge engine would, so DeliveredTo (which
// joins events) sees deliveries of it.
func appendEvent(t *testing.T, st store.Store, ev event.Merged) {
	t.Helper()
	changes, _ := json.Marshal(ev.Changes)
	fp, err := sink.Fingerprint(ev)
	if err != nil {
		t.Fatal(err)
	}
	err = st.AppendEvent(context.Background(), store.Event{ID: ev.ID, RecordType: ev.RecordType, RecordID: ev.RecordID,
		Source: ev.Source, Timestamp: ev.Timestamp.Time, BaseVersion: ev.BaseVersion, Changes: changes},
		store.Audit{Fingerprint: fp, RecordType: ev.RecordType, RecordID: ev.RecordID, Outcome: store.OutcomeAccepted, Stage: store.StageMerge})
	if err != nil {
		t.Fatal(err)
	}
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

func TestDeliveredAuditRowIsWhatMergeAndGuardRead(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
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
	if tgt.called() != 1 || tgt.calls[0].ID != ev.ID || string(tgt.calls[0].Changes["email"]) != `"ada@example.com"` {
		t.Fatalf("target got %+v", tgt.calls)
	}
	rows := trail(t, st, "customer", "C-1001", store.StageNetSuite)
	if len(rows) != 1 {
		t.Fatalf("audit rows %+v", rows)
	}
	fp, _ := sink.Fingerprint(ev)
	a := rows[0]
	if a.Outcome != store.OutcomeDelivered || a.EventID != ev.ID || a.Version != 1 || a.RecordType != "customer" ||
		a.RecordID != "C-1001" || a.Fingerprint != fp || a.MessageID != m.ID {
		t.Fatalf("audit row %+v", a)
	}
	last, err := st.LastDelivered(ctx, "customer", "C-1001", store.StageNetSuite)
	if err != nil || last != 1 {
		t.Fatalf("LastDelivered = %d, %v", last, err)
	}
	got, err := st.DeliveredTo(ctx, "customer", "C-1001", store.StageNetSuite, 5, 10)
	if err != nil || len(got) != 1 || got[0].ID != ev.ID {
		t.Fatalf("DeliveredTo = %+v, %v", got, err)
	}
	if other, _ := st.LastDelivered(ctx, "customer", "C-1001", store.StageSuiteX); other != 0 {
		t.Fatalf("delivery to netsuite counted for suitex: %d", other)
	}
}

func TestEchoIsNeverSentBack(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ctx := context.Background()
	tgt := &recorder{name: store.StageNetSuite}
	r := sink.NewRunner(config.Sandbox, tgt, d.Store, nil)
	ev := merged("customer", "C-echo", "netsuite", 3)
	outcome, err := r.Deliver(ctx, msg(t, config.Sandbox, ev))
	if err != nil || outcome != store.OutcomeSkippedEcho {
		t.Fatalf("Deliver: %q %v", outcome, err)
	}
	if tgt.called() != 0 {
		t.Fatal("an event from netsuite was sent to netsuite")
	}
	rows := trail(t, d.Store, "customer", "C-echo", store.StageNetSuite)
	if len(rows) != 1 || rows[0].Outcome != store.OutcomeSkippedEcho || rows[0].EventID != ev.ID || rows[0].Version != 3 {
		t.Fatalf("audit %+v", rows)
	}
	// An echo skip is not a delivery: the merge engine must not count it.
	if last, _ := d.Store.LastDelivered(ctx, "customer", "C-echo", store.StageNetSuite); last != 0 {
		t.Fatalf("skipped echo counted as delivered: %d", last)
	}
}

func TestRegressionGuardSkipsOlderAndEqualVersions(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	ctx := context.Background()
	tgt := &recorder{name: store.StageSuiteX}
	r := sink.NewRunner(config.Production, tgt, d.Store, nil)

	v5 := merged("customer", "C-9", "netsuite", 5)
	if out, err := r.Deliver(ctx, msg(t, config.Production, v5)); err != nil || out != store.OutcomeDelivered {
		t.Fatalf("v5: %q %v", out, err)
	}
	v3 := merged("customer", "C-9", "netsuite", 3)
	out, err := r.Deliver(ctx, msg(t, config.Production, v3))
	if err != nil || out != store.OutcomeStale {
		t.Fatalf("v3 after v5: %q %v", out, err)
	}
	// A redelivery of v5 (same version) is skipped as a duplicate.
	out, err = r.Deliver(ctx, msg(t, config.Production, v5))
	if err != nil || out != store.OutcomeDuplicate {
		t.Fatalf("v5 again: %q %v", out, err)
	}
	if tgt.called() != 1 {
		t.Fatalf("target called %d times, want once (v5 only)", tgt.called())
	}
	rows := trail(t, d.Store, "customer", "C-9", store.StageSuiteX)
	if len(rows) != 3 {
		t.Fatalf("audit %+v", rows)
	}
	byOutcome := map[string]store.Audit{}
	for _, a := range rows {
		byOutcome[a.Outcome] = a
	}
	if a := byOutcome[store.OutcomeStale]; a.EventID != v3.ID || a.Version != 3 || !strings.Contains(a.Detail, "5") {
		t.Fatalf("stale row %+v", a)
	}
	if a := byOutcome[store.OutcomeDuplicate]; a.EventID != v5.ID || a.Version != 5 {
		t.Fatalf("duplicate row %+v", a)
	}
	// v6 still goes through.
	if out, err := r.Deliver(ctx, msg(t, config.Production, merged("customer", "C-9", "netsuite", 6))); err != nil || out != store.OutcomeDelivered {
		t.Fatalf("v6: %q %v", out, err)
	}
}

func TestForeignOrMissingEnvIsRejected(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
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
		if !ok || out != store.OutcomeRejected || f.Retryable || f.Reason != sink.ReasonWrongEnv || f.Stage != store.StageNetSuite {
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
	d := testdb.New(t)
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
	d := testdb.New(t)
	var logs bytes.Buffer
	secret := "s3cr3t-Token-Value"
	tgt := &recorder{name: store.StageNetSuite, secrets: []string{secret},
		err: failure.Retryable("whatever", "http_503", "PUT /x: HTTP 503: upstream said Authorization: OAuth oauth_token="+secret)}
	r := sink.NewRunner(config.Sandbox, tgt, d.Store, logging.New(&logs, slog.LevelDebug))
	ev := merged("customer", "C-fail", "suitex", 1)
	out, err := r.Deliver(context.Background(), msg(t, config.Sandbox, ev))
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
	if len(rows) != 1 || rows[0].Outcome != store.OutcomeFailed || rows[0].Version != 1 ||
		!strings.HasPrefix(rows[0].Detail, "http_503: ") || strings.Contains(rows[0].Detail, secret) {
		t.Fatalf("audit %+v", rows)
	}
	if strings.Contains(logs.String(), secret) {
		t.Fatalf("secret in logs: %s", logs.String())
	}
	if !strings.Contains(logs.String(), "delivery failed") {
		t.Fatalf("failure not logged: %s", logs.String())
	}
	// A failure is not a delivery.
	if last, _ := d.Store.LastDelivered(context.Background(), "customer", "C-fail", store.StageNetSuite); last != 0 {
		t.Fatalf("failed delivery counted: %d", last)
	}
}

func TestPlainTargetErrorBecomesRetryableFailure(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	tgt := &recorder{name: store.StageSuiteX, err: errors.New("boom")}
	r := sink.NewRunner(config.Sandbox, tgt, d.Store, nil)
	_, err := r.Deliver(context.Background(), msg(t, config.Sandbox, merged("customer", "C-x", "netsuite", 1)))
	f, ok := failure.As(err)
	if !ok || !f.Retryable || f.Reason != sink.ReasonInternal || f.Stage != store.StageSuiteX {
		t.Fatalf("%v", err)
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
	if !ok || out != store.OutcomeFailed || !f.Retryable || f.Reason != sink.ReasonStoreUnavailable {
		t.Fatalf("%q %v", out, err)
	}
	// Without the regression guard's answer nothing is sent.
	if tgt.called() != 0 {
		t.Fatal("delivered without knowing the last delivered version")
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
func (panicker) Deliver(context.Context, event.Merged) error {
	var m map[string]int
	m["boom"]++ // a nil-map write: a bug in a target
	return nil
}

func TestTargetPanicBecomesRetryableFailure(t *testing.T) {
	t.Parallel()
	d := testdb.New(t)
	r := sink.NewRunner(config.Sandbox, panicker{}, d.Store, nil)
	out, err := r.Deliver(context.Background(), msg(t, config.Sandbox, merged("customer", "C-panic", "netsuite", 1)))
	f, ok := failure.As(err)
	if !ok || out != store.OutcomeFailed || !f.Retryable || f.Reason != sink.ReasonInternal || !strings.Contains(f.Detail, "panicked") {
		t.Fatalf("%q %v", out, err)
	}
}

// gate is a target whose delivery of one version blocks until released.
type gate struct {
	recorder
	block   uint64
	entered chan struct{}
	release chan struct{}
}

func (g *gate) Deliver(ctx context.Context, ev event.Merged) error {
	if ev.Version == g.block {
		close(g.entered)
		<-g.release
	}
	return g.recorder.Deliver(ctx, ev)
}

// TestConcurrentDeliveriesNeverRegress: the live subscription delivers v5
// while Retry re-delivers v3 (two services, one database). v3 must not land
// after v5: the guard's read and the delivery are serialised per record.
func TestConcurrentDeliveriesNeverRegress(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	g := &gate{recorder: recorder{name: store.StageSuiteX}, block: 5, entered: make(chan struct{}), release: make(chan struct{})}
	live := sink.NewRunner(config.Sandbox, g, db.Store, nil)
	retrying := sink.NewRunner(config.Sandbox, g, db.Store, nil)
	v3, v5 := merged("customer", "RACE-1", "netsuite", 3), merged("customer", "RACE-1", "netsuite", 5)
	appendEvent(t, db.Store, v3)
	appendEvent(t, db.Store, v5)
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
		t.Fatalf("v3 finished (%s) while v5 was being delivered: the guard is not serialised", out)
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
	if len(g.calls) != 1 || g.calls[0].Version != 5 {
		t.Errorf("target received %d deliveries (first v%d), want only v5", len(g.calls), g.calls[0].Version)
	}
}

// TestDeliveriesDoNotExhaustTheirPool: each delivery holds the record's lock
// on a pooled connection; with more concurrent deliveries than connections,
// every one must still complete (the guard's reads and audits use the lock's
// own connection, not a second one).
func TestDeliveriesDoNotExhaustTheirPool(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
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
