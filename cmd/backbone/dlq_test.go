package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/deadletter"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// dlqRun runs `backbone ARGS` with env as the whole environment.
func dlqRun(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	c := &cli{stdout: &out, stderr: &errOut, getenv: func(k string) string { return env[k] }}
	code = run(context.Background(), c, args)
	return code, out.String(), errOut.String()
}

const dlqRawEvent = `{"record_type":"customer","record_id":"C-1","source":"netsuite","changes":{"email":"ada@example.com"}}`

// dlqErrorData is an error message about record rt:rid at stage.
func dlqErrorData(t *testing.T, stage, reason, rt, rid string) []byte {
	t.Helper()
	f := failure.Retryable(stage, reason, "detail of "+reason)
	f.RecordType, f.RecordID, f.EventID = rt, rid, dlqEventID(rt, rid)
	orig := message.Message{Data: []byte(dlqRawEvent), Attributes: map[string]string{"env": "sandbox"}, ID: "orig",
		Subscription: "projects/p/subscriptions/events.raw.sandbox-merge-sub", OrderingKey: "customer:C-1", DeliveryAttempt: 1}
	b, err := json.Marshal(failure.Message(f, orig))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dlqEventID is the event id the test's error messages carry for rt:rid.
func dlqEventID(rt, rid string) string {
	if rt == "" {
		return ""
	}
	return fmt.Sprintf("11111111-2222-3333-4444-%012d", len(rt+rid))
}

// dlqSeed inserts a dead letter archived at `at` (the archive sets
// created_at itself; a test of time windows needs to choose it).
func dlqSeed(t *testing.T, db *sql.DB, id, stage, reason, rt, rid string, at time.Time) []byte {
	t.Helper()
	data := dlqErrorData(t, stage, reason, rt, rid)
	var rtype, recid, eid any
	if rt != "" {
		rtype, recid, eid = rt, rid, dlqEventID(rt, rid)
	}
	_, err := db.Exec("INSERT INTO dead_letters (message_id, content_digest, subscription, delivery_attempts, stage, reason, detail, event_id, record_type, record_id, data, attributes, created_at) VALUES (?, SHA2(?, 256), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		id, data, "events.error.sandbox-retry-sub", 5, stage, reason, "detail of "+reason, eid, rtype, recid, data, `{"env":"sandbox","CloudPubSubDeadLetterSourceDeliveryCount":"5"}`, at.UTC())
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func dlqListIDs(t *testing.T, env map[string]string, args ...string) []string {
	t.Helper()
	code, out, errOut := dlqRun(t, env, append([]string{"dlq", "list", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("dlq list %v: exit %d: %s", args, code, errOut)
	}
	var rows []deadletter.Summary
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("dlq list --json output is not a JSON array: %v\n%s", err, out)
	}
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.MessageID
	}
	return ids
}

func TestDLQList(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	env := map[string]string{"EVENT_STORE_DSN": d.DSN} // list needs no BACKBONE_ENV
	now := time.Now().UTC()
	dlqSeed(t, d.Root, "old", "merge", "invalid_json", "", "", now.Add(-72*time.Hour))
	dlqSeed(t, d.Root, "mid", "suitex", "http_503", "customer", "C-1", now.Add(-30*time.Hour))
	dlqSeed(t, d.Root, "new", "netsuite", "http_503", "customer", "C-2", now.Add(-1*time.Hour))
	dlqSeed(t, d.Root, "newest", "suitex", "http_429", "order", "C-1", now.Add(-10*time.Minute))

	for _, c := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"newest", "new", "mid", "old"}},
		{[]string{"--stage", "suitex"}, []string{"newest", "mid"}},
		{[]string{"--reason", "http_503"}, []string{"new", "mid"}},
		{[]string{"--stage", "suitex", "--reason", "http_503"}, []string{"mid"}},
		{[]string{"--record", "customer:C-1"}, []string{"mid"}},
		{[]string{"--record", "order:C-1"}, []string{"newest"}},
		{[]string{"--since", "24h"}, []string{"newest", "new"}},
		{[]string{"--since", "2d"}, []string{"newest", "new", "mid"}},
		{[]string{"--until", "24h"}, []string{"mid", "old"}},
		{[]string{"--since", now.Add(-48 * time.Hour).Format(time.RFC3339), "--until", now.Add(-30 * time.Minute).Format(time.RFC3339Nano)}, []string{"new", "mid"}},
		{[]string{"--limit", "2"}, []string{"newest", "new"}},
	} {
		if got := dlqListIDs(t, env, c.args...); !slices.Equal(got, c.want) {
			t.Errorf("dlq list %v = %v, want %v", c.args, got, c.want)
		}
	}

	// JSON carries the row's fields.
	_, out, _ := dlqRun(t, env, "dlq", "list", "--json", "--record", "customer:C-1")
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 1 {
		t.Fatalf("json: %v %s", err, out)
	}
	r := rows[0]
	if r["message_id"] != "mid" || r["stage"] != "suitex" || r["reason"] != "http_503" || r["record_type"] != "customer" ||
		r["record_id"] != "C-1" || r["delivery_attempts"] != float64(5) || r["subscription"] != "events.error.sandbox-retry-sub" {
		t.Errorf("json row %v", r)
	}
	if _, err := time.Parse(event.TimeLayout, r["archived_at"].(string)); err != nil {
		t.Errorf("archived_at %v: %v", r["archived_at"], err)
	}

	// The table: a header and one line per dead letter, with its columns.
	code, out, _ := dlqRun(t, env, "dlq", "list", "--stage", "suitex")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "MESSAGE ID") {
		t.Fatalf("table (exit %d):\n%s", code, out)
	}
	for _, col := range []string{"mid", "suitex", "http_503", "customer:C-1", " 5 ", dlqEventID("customer", "C-1")} {
		if !strings.Contains(lines[2], col) {
			t.Errorf("table row %q lacks %q", lines[2], col)
		}
	}
	if code, out, _ := dlqRun(t, env, "dlq", "list", "--reason", "nope"); code != 0 || !strings.Contains(out, "no dead letters match") {
		t.Errorf("empty table: exit %d %q", code, out)
	}
	// An unknown stage is a usage error, not an empty answer.
	if code, _, errOut := dlqRun(t, env, "dlq", "list", "--stage", "nope"); code != 2 || !strings.Contains(errOut, "merge, netsuite, suitex, unknown") {
		t.Errorf("--stage nope: exit %d %q", code, errOut)
	}
}

func TestDLQShow(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	env := map[string]string{"EVENT_STORE_DSN": d.DSN}
	dlqSeed(t, d.Root, "dl-1", "suitex", "http_503", "customer", "C-1", time.Now())
	if _, err := d.Root.Exec("INSERT INTO dead_letters (message_id, content_digest, subscription, stage, reason, data, attributes) VALUES ('junk', SHA2('plain text', 256), '', 'unknown', 'undecodable', 'plain text', '{}')"); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := dlqRun(t, env, "dlq", "show", "dl-1", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var v struct {
		MessageID    string            `json:"message_id"`
		Attributes   map[string]string `json:"attributes"`
		ErrorMessage struct {
			Stage    string `json:"stage"`
			Reason   string `json:"reason"`
			Original struct {
				Data         json.RawMessage `json:"data"`
				Subscription string          `json:"subscription"`
			} `json:"original"`
		} `json:"error_message"`
		Redrives []any `json:"redrives"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var orig, want any
	_ = json.Unmarshal(v.ErrorMessage.Original.Data, &orig)
	_ = json.Unmarshal([]byte(dlqRawEvent), &want)
	if v.MessageID != "dl-1" || v.ErrorMessage.Stage != "suitex" || v.ErrorMessage.Reason != "http_503" ||
		fmt.Sprint(orig) != fmt.Sprint(want) || v.Attributes["env"] != "sandbox" || v.Redrives == nil {
		t.Errorf("show --json: %+v\n%s", v, out)
	}

	// Human form: the original data decoded and pretty-printed.
	code, out, _ = dlqRun(t, env, "dlq", "show", "dl-1")
	for _, s := range []string{"dead letter dl-1", "reason:", "http_503", "customer:C-1", "CloudPubSubDeadLetterSourceDeliveryCount = 5",
		"error message:", `"email": "ada@example.com"`, "redrives: none"} {
		if !strings.Contains(out, s) {
			t.Errorf("show lacks %q:\n%s", s, out)
		}
	}
	if code != 0 {
		t.Errorf("exit %d", code)
	}
	code, out, _ = dlqRun(t, env, "dlq", "show", "junk")
	if code != 0 || !strings.Contains(out, "not an error message") || !strings.Contains(out, `"data_text": "plain text"`) {
		t.Errorf("show of undecodable (exit %d):\n%s", code, out)
	}
	if code, _, errOut := dlqRun(t, env, "dlq", "show", "missing"); code != 1 || !strings.Contains(errOut, "no dead letter missing") {
		t.Errorf("show missing: exit %d %s", code, errOut)
	}
}

func TestDLQRedrive(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	_, worker := d.Worker(t)
	ps := pubsubtest.New(t, config.Sandbox, true)
	env := map[string]string{"EVENT_STORE_DSN": worker.DSN, "BACKBONE_ENV": "sandbox",
		"GCP_PROJECT": pubsubtest.Project, "PUBSUB_EMULATOR_HOST": ps.Addr()}
	now := time.Now()
	data := dlqSeed(t, d.Root, "dl-a", "suitex", "http_503", "customer", "C-1", now.Add(-time.Hour))
	dlqSeed(t, d.Root, "dl-b", "netsuite", "http_503", "order", "O-1", now.Add(-time.Hour))
	dlqSeed(t, d.Root, "dl-c", "merge", "invalid_json", "", "", now.Add(-time.Hour))
	before := dlqRows(t, d.Root)

	// Dry run: says what it would do, publishes and audits nothing.
	code, out, errOut := dlqRun(t, env, "dlq", "redrive", "--dry-run", "--reason", "http_503")
	if code != 0 || strings.Count(out, "would redrive") != 2 || !strings.Contains(out, "never redriven before") || !strings.Contains(errOut, "nothing published") {
		t.Fatalf("dry run (exit %d):\n%s%s", code, out, errOut)
	}
	if got := ps.Pull(t, ps.Names.RetrySub, 10, false); len(got) != 0 {
		t.Fatalf("dry run published %d messages", len(got))
	}

	// By id.
	code, out, errOut = dlqRun(t, env, "dlq", "redrive", "dl-a", "--rate", "50")
	if code != 0 || !strings.Contains(out, "redriven dl-a") {
		t.Fatalf("redrive (exit %d):\n%s%s", code, out, errOut)
	}
	got := ps.Drain(t, ps.Names.RetrySub)
	if len(got) != 1 {
		t.Fatalf("%d messages on the retry subscription, want 1", len(got))
	}
	m := got[0]
	e, err := failure.Decode(m.Data)
	if err != nil || e.Redrive != 1 || !e.Retryable || e.Stage != "suitex" || string(e.Original.Data) != dlqRawEvent {
		t.Errorf("published error message %+v, %v", e, err)
	}
	if m.OrderingKey != "customer:C-1" || m.Attributes["redrive_of"] != "dl-a" || m.Attributes["env"] != "sandbox" ||
		m.Attributes["CloudPubSubDeadLetterSourceDeliveryCount"] != "" {
		t.Errorf("published message %+v", m)
	}
	trail, err := d.Store.AuditTrail(context.Background(), "customer", "C-1")
	if err != nil || len(trail) != 1 || trail[0].Outcome != store.OutcomeRedriven || trail[0].Stage != store.StageRedrive ||
		trail[0].MessageID != "dl-a" || trail[0].Fingerprint != deadletter.Fingerprint(data) {
		t.Errorf("audit %+v, %v", trail, err)
	}

	// A second dry run shows the earlier redrive.
	_, out, _ = dlqRun(t, env, "dlq", "redrive", "--dry-run", "dl-a")
	if !strings.Contains(out, "redriven 1 time(s) before") {
		t.Errorf("dry run after a redrive:\n%s", out)
	}
	// By filter, JSON; the undecodable-free filter redrives both.
	code, out, errOut = dlqRun(t, env, "dlq", "redrive", "--reason", "http_503", "--json")
	if code != 0 {
		t.Fatalf("redrive by filter (exit %d): %s%s", code, out, errOut)
	}
	dec := json.NewDecoder(strings.NewReader(out))
	n := 0
	for dec.More() {
		var o deadletter.Outcome
		if err := dec.Decode(&o); err != nil {
			t.Fatal(err)
		}
		if o.Action != deadletter.ActionRedriven || o.PublishedID == "" || o.Topic != "events.error.sandbox" {
			t.Errorf("outcome %+v", o)
		}
		n++
	}
	if n != 2 || len(ps.Drain(t, ps.Names.RetrySub)) != 2 {
		t.Errorf("%d outcomes; want 2 redriven and published", n)
	}
	if after := dlqRows(t, d.Root); after != before {
		t.Errorf("dead_letters changed:\nbefore %s\nafter  %s", before, after)
	}
}

// dlqRows dumps dead_letters so a test can prove redrive changed nothing.
func dlqRows(t *testing.T, db *sql.DB) string {
	t.Helper()
	rows, err := db.Query("SELECT message_id, subscription, delivery_attempts, stage, reason, HEX(data), attributes, created_at FROM dead_letters ORDER BY message_id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var id, sub, stage, reason, data, attrs, created string
		var n int
		if err := rows.Scan(&id, &sub, &n, &stage, &reason, &data, &attrs, &created); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(&b, id, sub, n, stage, reason, data, attrs, created)
	}
	return b.String()
}

func TestDLQUsage(t *testing.T) {
	t.Parallel()
	env := map[string]string{"EVENT_STORE_DSN": "root@tcp(127.0.0.1:1)/none", "BACKBONE_ENV": "sandbox"}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"dlq"}, 2, "missing command"},
		{[]string{"dlq", "--help"}, 0, "usage: backbone dlq"},
		{[]string{"dlq", "purge"}, 2, `unknown dlq command "purge"`},
		{[]string{"dlq", "list", "--help"}, 0, "--stage"},
		{[]string{"dlq", "list", "--since", "yesterday"}, 2, "--since"},
		{[]string{"dlq", "list", "--record", "customer"}, 2, "TYPE:ID"},
		{[]string{"dlq", "list", "--limit", "0"}, 2, "--limit"},
		{[]string{"dlq", "list", "--since", "1h", "--until", "2h"}, 2, "not before"},
		{[]string{"dlq", "list", "extra"}, 2, "unexpected arguments"},
		{[]string{"dlq", "show"}, 2, "exactly one message id"},
		{[]string{"dlq", "redrive"}, 2, "say what to redrive"},
		{[]string{"dlq", "redrive", "id1", "--stage", "merge"}, 2, "not both"},
		{[]string{"dlq", "redrive", "id1", "--rate", "0"}, 2, "--rate"},
	} {
		code, out, errOut := dlqRun(t, env, c.args...)
		if code != c.code || !strings.Contains(out+errOut, c.want) {
			t.Errorf("%v: exit %d, output %q; want exit %d mentioning %q", c.args, code, out+errOut, c.code, c.want)
		}
	}
	// Redrive names the missing variable.
	code, _, errOut := dlqRun(t, map[string]string{"EVENT_STORE_DSN": "x"}, "dlq", "redrive", "--all")
	if code != 2 || !strings.Contains(errOut, "BACKBONE_ENV") {
		t.Errorf("redrive without BACKBONE_ENV: exit %d, want 2 (a missing setting), %s", code, errOut)
	}
}
