package dlqarchivefunc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/functions/dlqarchive"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/deadletter"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/logging"
	"github.com/backbone-sync/backbone/shared/logging/logtest"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// secret stands for customer data inside a dead letter: it must reach the
// archive and never the log.
const secret = "ada-secret@example.com"

const eventID = "7d0c6b8e-3f5a-4c1e-9b7a-1e2d3c4b5a69"

func errorLines(t *testing.T, logs *logtest.Buffer) []map[string]any {
	var out []map[string]any
	for _, l := range logs.Lines(t) {
		if l["severity"] == "ERROR" {
			out = append(out, l)
		}
	}
	return out
}

// serve runs DLQArchive over s behind the real push adapter.
func serve(t *testing.T, d dlqarchivefunc.Deps) (string, *logtest.Buffer) {
	t.Helper()
	logs := &logtest.Buffer{}
	log := logging.New(logs, slog.LevelDebug)
	d.Log = log
	h, err := dlqarchivefunc.New(d)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(message.HTTP(log, pubsubtest.Project, h))
	t.Cleanup(srv.Close)
	return srv.URL, logs
}

func push(t *testing.T, url string, m message.Message) int {
	t.Helper()
	code, err := pushStatus(url, m)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// pushStatus is push for goroutines (which must not call t.Fatal).
func pushStatus(url string, m message.Message) (int, error) {
	resp, err := http.Post(url, "application/json", bytes.NewReader(message.PushBody(m)))
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// errorData is an error message as the SuiteX sink reports a 503.
func errorData(t *testing.T) []byte {
	t.Helper()
	f := failure.Retryable(store.StageSuiteX, "http_503", "SuiteX answered 503")
	f.EventID, f.RecordType, f.RecordID = eventID, "customer", "C-1001"
	orig := message.Message{
		Data:            []byte(`{"id":"` + eventID + `","record_type":"customer","record_id":"C-1001","changes":{"email":"` + secret + `"}}`),
		Attributes:      map[string]string{"env": "sandbox", "event_id": eventID},
		ID:              "orig-1",
		OrderingKey:     "customer:C-1001",
		DeliveryAttempt: 1,
		Subscription:    "projects/" + pubsubtest.Project + "/subscriptions/events.merged.sandbox-suitex-sub",
	}
	b, err := json.Marshal(failure.Message(f, orig))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// deadLetterAttrs are what Pub/Sub adds when it forwards a message to the
// dead-letter topic (pstest does not add them, so the test does).
var deadLetterAttrs = map[string]string{
	deadletter.AttrSourceDeliveryCount:       "5",
	deadletter.AttrSourceSubscription:        "events.error.sandbox-retry-sub",
	deadletter.AttrSourceSubscriptionProject: pubsubtest.Project,
	deadletter.AttrSourceTopicPublishTime:    "2026-03-13T20:00:05.5Z",
}

func fromPulled(r pubsubtest.Received, sub string) message.Message {
	return message.Message{Data: r.Data, Attributes: r.Attributes, ID: r.ID, PublishTime: r.PublishTime,
		OrderingKey: r.OrderingKey, DeliveryAttempt: r.DeliveryAttempt, Subscription: pubsubtest.SubPath(sub)}
}

// downStore is a store whose server is not there: a port nothing listens on.
func downStore(t *testing.T) store.Store {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	db, closeFn, err := mysql.Open(context.Background(), config.DB{DSN: "root@tcp(" + addr + ")/backbone?timeout=2s"})
	if err != nil {
		t.Fatal(err)
	}
	s := mysql.New(db, closeFn)
	t.Cleanup(func() { s.Close() })
	return s
}

func countRows(t *testing.T, d *mysqltest.DB, id string) int {
	t.Helper()
	var n int
	if err := d.Root.QueryRow("SELECT COUNT(*) FROM dead_letters WHERE message_id = ?", id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRedeliveredDeadLetterIsOneRow(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	url, logs := serve(t, dlqarchivefunc.Deps{Store: d.Store})
	m := message.Message{ID: "dl-1", Data: errorData(t), Attributes: map[string]string{"env": "sandbox"},
		Subscription: pubsubtest.SubPath("events.dlq.sandbox-sub")}
	for i := range 3 {
		if code := push(t, url, m); code != http.StatusNoContent {
			t.Fatalf("delivery %d: status %d, want 204", i, code)
		}
	}
	if n := countRows(t, d, "dl-1"); n != 1 {
		t.Errorf("%d rows, want 1", n)
	}
	trail, err := d.Store.AuditTrail(context.Background(), "customer", "C-1001")
	if err != nil || len(trail) != 1 {
		t.Errorf("audit rows: %d, %v; want 1", len(trail), err)
	}
	if n := len(errorLines(t, logs)); n != 1 {
		t.Errorf("%d ERROR lines for one dead letter delivered three times, want 1", n)
	}
}

// A dead letter on the real DLQ subscription while the database is down:
// nacked, kept by the subscription, archived once the database is back, and
// a later redelivery adds nothing. Also checks every recorded field, the
// audit row and the alerting log line.
func TestArchiveWhileDatabaseDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ps := pubsubtest.New(t, config.Sandbox, true)
	d := mysqltest.New(t)
	worker, _ := d.Worker(t) // the function runs as sync_worker
	badURL, _ := serve(t, dlqarchivefunc.Deps{Store: downStore(t)})
	goodURL, logs := serve(t, dlqarchivefunc.Deps{Store: worker})
	sub := ps.Names.DLQSub

	data := errorData(t)
	attrs := map[string]string{failure.AttrStage: "suitex", failure.AttrReason: "http_503", failure.AttrRetryable: "true", event.AttrEventID: eventID}
	maps.Copy(attrs, deadLetterAttrs)
	if _, err := ps.Publisher(t).Publish(ctx, ps.Names.DLQTopic, publish.Message{Data: data, Attributes: attrs, OrderingKey: "customer:C-1001"}); err != nil {
		t.Fatal(err)
	}

	// Database down: nack, twice; the subscription keeps the message.
	var pulled pubsubtest.Received
	for i := range 2 {
		got := ps.Pull(t, sub, 10, false)
		if len(got) != 1 {
			t.Fatalf("pull %d: %d messages, want the dead letter again", i, len(got))
		}
		pulled = got[0]
		if code := push(t, badURL, fromPulled(pulled, sub)); message.Acked(code) {
			t.Fatalf("database down: status %d acks the message", code)
		}
		ps.Nack(t, sub, pulled.AckID)
	}
	if n := countRows(t, d, pulled.ID); n != 0 {
		t.Fatalf("%d rows while down", n)
	}

	// Back up: archived, acked.
	got := ps.Pull(t, sub, 10, false)
	if len(got) != 1 {
		t.Fatalf("after recovery: %d messages", len(got))
	}
	if code := push(t, goodURL, fromPulled(got[0], sub)); code != http.StatusNoContent {
		t.Fatalf("database up: status %d, want 204", code)
	}
	// A redelivery (ack lost) adds nothing.
	ps.Nack(t, sub, got[0].AckID)
	got = ps.Pull(t, sub, 10, true)
	if len(got) != 1 {
		t.Fatalf("redelivery: %d messages", len(got))
	}
	if code := push(t, goodURL, fromPulled(got[0], sub)); code != http.StatusNoContent {
		t.Fatalf("redelivery: status %d", code)
	}
	if n := countRows(t, d, pulled.ID); n != 1 {
		t.Fatalf("%d rows for %s, want exactly 1", n, pulled.ID)
	}

	// Every field.
	dl, err := d.Store.DeadLetter(ctx, pulled.ID)
	if err != nil {
		t.Fatal(err)
	}
	if dl.DeliveryAttempts != 5 || dl.Subscription != "events.error.sandbox-retry-sub" || dl.Stage != "suitex" ||
		dl.Reason != "http_503" || dl.Detail != "SuiteX answered 503" || dl.EventID != eventID ||
		dl.RecordType != "customer" || dl.RecordID != "C-1001" {
		t.Errorf("dead letter row %+v", dl)
	}
	if !bytes.Equal(dl.Data, data) {
		t.Errorf("data not byte for byte:\n got %s\nwant %s", dl.Data, data)
	}
	wantAttrs := maps.Clone(attrs)
	wantAttrs["env"] = "sandbox"
	if !maps.Equal(dl.Attributes, wantAttrs) || !maps.Equal(dl.Attributes, pulled.Attributes) {
		t.Errorf("attributes %v, want %v", dl.Attributes, wantAttrs)
	}
	if !dl.PublishTime.Equal(pulled.PublishTime.Truncate(time.Microsecond)) {
		t.Errorf("publish time %v, want %v", dl.PublishTime, pulled.PublishTime)
	}

	// One audit row.
	trail, err := d.Store.AuditTrail(ctx, "customer", "C-1001")
	if err != nil || len(trail) != 1 {
		t.Fatalf("audit: %+v, %v", trail, err)
	}
	a := trail[0]
	if a.Outcome != store.OutcomeDeadLetter || a.Stage != store.StageDLQ || a.EventID != eventID ||
		a.MessageID != pulled.ID || a.Fingerprint != deadletter.Fingerprint(data) {
		t.Errorf("audit row %+v", a)
	}

	// One ERROR line, naming the failure, without the data.
	lines := errorLines(t, logs)
	if len(lines) != 1 {
		t.Fatalf("%d ERROR lines, want 1:\n%s", len(lines), logs)
	}
	l := lines[0]
	want := map[string]any{"message_id": pulled.ID, "stage": "suitex", "reason": "http_503", "record": "customer:C-1001", "event_id": eventID}
	for k, v := range want {
		if l[k] != v {
			t.Errorf("ERROR line %s = %v, want %v (%v)", k, l[k], v, l)
		}
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("the log carries message data:\n%s", logs)
	}
}

// The whole way through pstest: Retry nacks an error message five times,
// Pub/Sub dead-letters it, DLQArchive stores it. pstest adds no dead-letter
// attributes, so attempts and subscription come from the error message.
func TestArchiveFromRealDeadLettering(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ps := pubsubtest.New(t, config.Sandbox, true)
	d := mysqltest.New(t)
	url, _ := serve(t, dlqarchivefunc.Deps{Store: d.Store})
	f := failure.Retryable(store.StageMerge, "db_unavailable", "event store down")
	orig := message.Message{Data: []byte(`{"record_type":"customer"}`), ID: "raw-1", DeliveryAttempt: 2,
		Subscription: pubsubtest.SubPath(ps.Names.MergeSub), Attributes: map[string]string{"env": "sandbox"}}
	if _, err := failure.NewReporter(config.Sandbox, ps.Publisher(t)).Report(ctx, failure.Message(f, orig)); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		got := ps.Pull(t, ps.Names.RetrySub, 10, false)
		if len(got) != 1 || got[0].DeliveryAttempt != i {
			t.Fatalf("retry delivery %d: %+v", i, got)
		}
		ps.Nack(t, ps.Names.RetrySub, got[0].AckID)
	}
	if got := ps.Pull(t, ps.Names.RetrySub, 10, false); len(got) != 0 {
		t.Fatalf("still on the retry subscription after 5 attempts: %+v", got)
	}
	got := ps.Pull(t, ps.Names.DLQSub, 10, true)
	if len(got) != 1 {
		t.Fatalf("%d dead letters, want 1", len(got))
	}
	if code := push(t, url, fromPulled(got[0], ps.Names.DLQSub)); code != http.StatusNoContent {
		t.Fatalf("status %d", code)
	}
	dl, err := d.Store.DeadLetter(ctx, got[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if dl.Stage != "merge" || dl.Reason != "db_unavailable" || dl.DeliveryAttempts != 2 || dl.Subscription != ps.Names.MergeSub || !bytes.Equal(dl.Data, got[0].Data) {
		t.Errorf("dead letter %+v", dl)
	}
}

func TestUndecodableIsArchived(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	url, logs := serve(t, dlqarchivefunc.Deps{Store: d.Store})
	data := []byte("\x00\xffnot an error message " + secret)
	m := message.Message{ID: "junk-1", Data: data, Attributes: map[string]string{"k": "v"}, Subscription: pubsubtest.SubPath("events.dlq.sandbox-sub")}
	if code := push(t, url, m); code != http.StatusNoContent {
		t.Fatalf("status %d", code)
	}
	dl, err := d.Store.DeadLetter(context.Background(), "junk-1")
	if err != nil {
		t.Fatal(err)
	}
	if dl.Stage != deadletter.StageUnknown || dl.Reason != deadletter.ReasonUndecodable || !bytes.Equal(dl.Data, data) || dl.Attributes["k"] != "v" {
		t.Errorf("dead letter %+v", dl)
	}
	lines := errorLines(t, logs)
	if len(lines) != 1 || lines[0]["reason"] != "undecodable" || lines[0]["undecodable"] == nil {
		t.Errorf("ERROR lines %v", lines)
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("the log carries message data:\n%s", logs)
	}
}

func TestWrongEnvIsArchivedAndLogged(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	data := errorData(t)
	for _, c := range []struct {
		name string
		env  config.Env
		sub  string
	}{
		{"env from option", config.Sandbox, "somewhere-else"},
		{"env from subscription", "", pubsubtest.SubPath("events.dlq.sandbox-sub")},
	} {
		url, logs := serve(t, dlqarchivefunc.Deps{Store: d.Store, Env: c.env})
		id := "prod-" + strings.ReplaceAll(c.name, " ", "-")
		m := message.Message{ID: id, Data: data, Attributes: map[string]string{"env": "production"}, Subscription: c.sub}
		if code := push(t, url, m); code != http.StatusNoContent {
			t.Fatalf("%s: status %d", c.name, code)
		}
		if n := countRows(t, d, id); n != 1 {
			t.Errorf("%s: %d rows, want 1", c.name, n)
		}
		lines := errorLines(t, logs)
		if len(lines) != 1 || lines[0]["wrong_env"] != true || lines[0]["env"] != "production" || lines[0]["dlq_env"] != "sandbox" {
			t.Errorf("%s: ERROR lines %v", c.name, lines)
		}
	}
	// Its own environment raises no wrong_env.
	url, logs := serve(t, dlqarchivefunc.Deps{Store: d.Store, Env: config.Production})
	if code := push(t, url, message.Message{ID: "prod-ok", Data: data, Attributes: map[string]string{"env": "production"}}); code != http.StatusNoContent {
		t.Fatalf("status %d", code)
	}
	if lines := errorLines(t, logs); len(lines) != 1 || lines[0]["wrong_env"] != nil {
		t.Errorf("own env: %v", lines)
	}
}

func TestName(t *testing.T) {
	t.Parallel()
	if dlqarchivefunc.Name != "DLQArchive" {
		t.Errorf("Name = %q", dlqarchivefunc.Name)
	}
}

// Pub/Sub may deliver one message to several instances at once. Whatever
// the interleaving, once every delivery is acked (nacked ones are
// redelivered, as Pub/Sub would) there is one row, one audit row and one
// alert.
func TestConcurrentDeliveriesArchiveOnce(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	url, logs := serve(t, dlqarchivefunc.Deps{Store: d.Store})
	m := message.Message{ID: "race-1", Data: errorData(t), Attributes: map[string]string{"env": "sandbox"},
		Subscription: pubsubtest.SubPath("events.dlq.sandbox-sub")}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for attempt := 0; attempt < 5; attempt++ {
				code, err := pushStatus(url, m)
				if err != nil {
					t.Error(err)
					return
				}
				if message.Acked(code) {
					return
				}
			}
			t.Error("never acked after 5 deliveries")
		})
	}
	wg.Wait()
	if n := countRows(t, d, "race-1"); n != 1 {
		t.Errorf("%d rows, want 1", n)
	}
	trail, err := d.Store.AuditTrail(context.Background(), "customer", "C-1001")
	if err != nil || len(trail) != 1 {
		t.Errorf("%d audit rows (%v), want 1", len(trail), err)
	}
	if n := len(errorLines(t, logs)); n != 1 {
		t.Errorf("%d ERROR lines, want 1", n)
	}
}

// poisonErrorMessages publishes each line of examples/poison.jsonl to the
// raw topic of ps, pulls them back (so each has the id and publish time
// that server gave it) and turns each into the error message the merge
// parks it with, published to the DLQ topic as Retry would. It returns the
// DLQ messages as DLQArchive receives them.
func poisonDeadLetters(t *testing.T, ps *pubsubtest.Server) []message.Message {
	t.Helper()
	ctx := context.Background()
	raw, err := os.ReadFile("../../examples/poison.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	pub := ps.Publisher(t)
	for _, l := range lines {
		if _, err := pub.Publish(ctx, ps.Names.RawTopic, publish.Message{Data: []byte(l)}); err != nil {
			t.Fatal(err)
		}
	}
	pulled := ps.Drain(t, ps.Names.MergeSub)
	if len(pulled) != len(lines) {
		t.Fatalf("pulled %d raw messages, want %d", len(pulled), len(lines))
	}
	for _, r := range pulled {
		reason := "invalid_json"
		if _, err := event.DecodeRaw(r.Data, config.DefaultSources); err != nil {
			if v, ok := event.AsValidation(err); ok {
				reason = v.Reason
			}
		}
		f := failure.Permanent(store.StageMerge, reason, "rejected by the merge")
		data, err := json.Marshal(failure.Message(f, fromPulled(r, ps.Names.MergeSub)))
		if err != nil {
			t.Fatal(err)
		}
		attrs := map[string]string{deadletter.AttrDeadLetterReason: "not_retryable", failure.AttrReason: reason}
		if _, err := pub.Publish(ctx, ps.Names.DLQTopic, publish.Message{Data: data, Attributes: attrs}); err != nil {
			t.Fatal(err)
		}
	}
	var out []message.Message
	for _, r := range ps.Drain(t, ps.Names.DLQSub) {
		out = append(out, fromPulled(r, ps.Names.DLQSub))
	}
	if len(out) != len(lines) {
		t.Fatalf("%d dead letters, want %d", len(out), len(lines))
	}
	return out
}

// The development stack restarted: its new pstest numbers messages from m0
// again, so the walkthrough's poison examples come back as dead letters
// whose ids the archive already holds. Each is a new dead letter, stored
// and audited once, on its first delivery (no loop, nothing dropped); a
// redelivery of either round adds nothing.
func TestDevRestartArchivesEveryDeadLetterAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := mysqltest.New(t)
	worker, _ := d.Worker(t)
	url, logs := serve(t, dlqarchivefunc.Deps{Store: worker})

	first := poisonDeadLetters(t, pubsubtest.New(t, config.Sandbox, true))
	second := poisonDeadLetters(t, pubsubtest.New(t, config.Sandbox, true)) // the restart
	reused := 0
	ids := map[string]bool{}
	for _, m := range first {
		ids[m.ID] = true
	}
	for _, m := range second {
		if ids[m.ID] {
			reused++
		}
	}
	if reused != len(second) {
		t.Fatalf("only %d of %d ids repeat across the restart: the test no longer shows the collision", reused, len(second))
	}
	for round, msgs := range [][]message.Message{first, second, first, second} {
		for _, m := range msgs {
			if code := push(t, url, m); code != http.StatusNoContent {
				t.Fatalf("round %d, %s: status %d, want 204 (archived, acked)", round, m.ID, code)
			}
		}
	}
	var rows, audits int
	if err := d.Root.QueryRow("SELECT COUNT(*) FROM dead_letters").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if err := d.Root.QueryRow("SELECT COUNT(*) FROM event_audit_log WHERE processing_outcome = ?", store.OutcomeDeadLetter).Scan(&audits); err != nil {
		t.Fatal(err)
	}
	want := len(first) + len(second)
	if rows != want || audits != want {
		t.Errorf("%d dead letters and %d dead_lettered audit rows, want %d of each (both runs, once each)", rows, audits, want)
	}
	if n := len(errorLines(t, logs)); n != want {
		t.Errorf("%d alert lines, want %d (one per new dead letter)", n, want)
	}
	// dlq show by id still works: the newest, with the other listed.
	var earlier message.Message
	for _, m := range first {
		if m.ID == second[0].ID {
			earlier = m
		}
	}
	v, err := deadletter.Show(ctx, worker, second[0].ID)
	if err != nil || v.ContentDigest != store.DigestOf(second[0].Data) || len(v.Others) != 1 || v.Others[0].ContentDigest != store.DigestOf(earlier.Data) {
		t.Errorf("show %s = %+v others %+v, %v; want the second run (%s), listing the first (%s)", second[0].ID, v.Summary, v.Others, err, store.DigestOf(second[0].Data), store.DigestOf(earlier.Data))
	}
}

// Same id, other content: a new dead letter with its own audit row; same id,
// same content: nothing new.
func TestSameIDOtherContentIsANewDeadLetter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := mysqltest.New(t)
	url, _ := serve(t, dlqarchivefunc.Deps{Store: d.Store})
	sub := pubsubtest.SubPath("events.dlq.sandbox-sub")
	a := message.Message{ID: "m7", Data: errorData(t), Attributes: map[string]string{"env": "sandbox"}, Subscription: sub}
	b := a
	b.Data = bytes.Replace(a.Data, []byte("SuiteX answered 503"), []byte("SuiteX answered 502"), 1)
	if bytes.Equal(a.Data, b.Data) {
		t.Fatal("test data did not change")
	}
	for i, m := range []message.Message{a, b, a, b, b} {
		if code := push(t, url, m); code != http.StatusNoContent {
			t.Fatalf("delivery %d: status %d", i, code)
		}
	}
	all, err := d.Store.DeadLettersByID(ctx, "m7")
	if err != nil || len(all) != 2 || !bytes.Equal(all[0].Data, a.Data) || !bytes.Equal(all[1].Data, b.Data) {
		t.Fatalf("dead letters m7 = %d, %v; want both contents, oldest first", len(all), err)
	}
	trail, err := d.Store.AuditTrail(ctx, "customer", "C-1001")
	if err != nil || len(trail) != 2 || trail[0].ID == trail[1].ID ||
		trail[0].Fingerprint != store.DigestOf(a.Data) || trail[1].Fingerprint != store.DigestOf(b.Data) {
		t.Errorf("audit rows %+v, %v; want one per content, distinct ids", trail, err)
	}
}
