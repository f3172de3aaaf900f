package netsuitefunc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/functions/netsuite"
	"github.com/backbone-sync/backbone/internal/fake/netsuitefake"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/logging"
	"github.com/backbone-sync/backbone/shared/logging/logtest"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/sink/netsuite"
	"github.com/backbone-sync/backbone/shared/sink/targettest"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

const (
	account        = "7654321"
	consumerKey    = "ck-9a8b7c6d5e4f30211203f4e5d6c7b8a9"
	consumerSecret = "cs-SECRET-11223344556677889900aabbccddeeff"
	tokenID        = "tk-ffeeddccbbaa00998877665544332211"
	tokenSecret    = "ts-SECRET-0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d"
)

var secrets = []string{consumerKey, consumerSecret, tokenID, tokenSecret}

type harness struct {
	ps   *pubsubtest.Server
	db   *mysqltest.DB
	fake *netsuitefake.Server
	fn   *httptest.Server
	logs *logtest.Buffer
}

func setup(t *testing.T) *harness {
	t.Helper()
	h := &harness{ps: pubsubtest.New(t, config.Sandbox, true), db: mysqltest.New(t), logs: &logtest.Buffer{}}
	h.fake = &netsuitefake.Server{Account: account, ConsumerKey: consumerKey, ConsumerSecret: consumerSecret,
		TokenID: tokenID, TokenSecret: tokenSecret}
	h.fake.Respond = func(r *http.Request, _ []byte) (int, string) {
		switch {
		case strings.HasSuffix(r.URL.Path, "eid:C-503"):
			return 503, "Service Unavailable"
		case strings.HasSuffix(r.URL.Path, "eid:C-echo-auth"):
			// A misbehaving target quoting the request's credentials back.
			return 400, netsuitefake.Error(400, "USER_ERROR", "bad request with "+r.Header.Get("Authorization"))
		}
		return 0, ""
	}
	srv := h.fake.Start(t)
	cfg := config.Config{Env: config.Sandbox, NetSuite: config.NetSuite{AccountID: account, BaseURL: srv.URL, Auth: "tba",
		ConsumerKey: consumerKey, ConsumerSecret: consumerSecret, TokenID: tokenID, TokenSecret: tokenSecret, Timeout: 5 * time.Second}}
	log := logging.New(h.logs, slog.LevelDebug)
	worker, _ := h.db.Worker(t)
	runner, err := netsuitefunc.Runner(cfg, worker, log)
	if err != nil {
		t.Fatal(err)
	}
	handler, err := netsuitefunc.New(netsuitefunc.Deps{Runner: runner, Reporter: failure.NewReporter(cfg.Env, h.ps.Publisher(t)), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	h.fn = httptest.NewServer(message.HTTP(log, pubsubtest.Project, handler))
	t.Cleanup(h.fn.Close)
	return h
}

func mergedMsg(t *testing.T, env, rid, source string, version uint64) (message.Message, event.Merged) {
	t.Helper()
	return mergedMsgWith(t, env, rid, source, version, `{"email":"ada@example.com","phone":null}`)
}

// mergedMsgWith is a merged message of version with changes given as JSON.
func mergedMsgWith(t *testing.T, env, rid, source string, version uint64, changes string) (message.Message, event.Merged) {
	t.Helper()
	var c map[string]json.RawMessage
	if err := json.Unmarshal([]byte(changes), &c); err != nil {
		t.Fatal(err)
	}
	ev := event.Merged{ID: uuid.NewString(), RecordType: "customer", RecordID: rid, Source: source,
		Timestamp: event.NewTime(time.Now()), BaseVersion: version - 1, Version: version, Changes: c}
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return message.Message{Data: data, ID: uuid.NewString(), OrderingKey: "customer:" + rid, PublishTime: time.Now(),
		Attributes:   map[string]string{"env": env, "source": source, "record_type": "customer", "event_id": ev.ID},
		Subscription: pubsubtest.SubPath(config.Sandbox.Names().NetSuiteSub)}, ev
}

func push(t *testing.T, url string, m message.Message) int {
	t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewReader(message.PushBody(m)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// stageRows returns the audit rows of one event at one stage.
func stageRows(t *testing.T, h *harness, eventID, stage string) []store.Audit {
	t.Helper()
	all, err := h.db.Store.AuditForEvent(context.Background(), eventID)
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

func errorMessages(t *testing.T, h *harness) []event.Error {
	t.Helper()
	var out []event.Error
	for _, r := range h.ps.Drain(t, h.ps.Names.RetrySub) {
		e, err := failure.Decode(r.Data)
		if err != nil {
			t.Fatal(err)
		}
		if r.Attributes["env"] != "sandbox" || r.OrderingKey != e.RecordType+":"+e.RecordID && e.RecordID != "" {
			t.Fatalf("error message attributes %v key %q", r.Attributes, r.OrderingKey)
		}
		out = append(out, e)
	}
	return out
}

func TestNetSuiteSinkEndToEnd(t *testing.T) {
	t.Parallel()
	h := setup(t)
	ctx := context.Background()

	// Delivered: the fake verified the TBA signature and holds the record.
	// The sink reads the record from the store: the merge stored it first.
	m, ev := mergedMsg(t, "sandbox", "C-1001", "suitex", 1)
	targettest.StoreMerged(t, h.db.Store, ev)
	if code := push(t, h.fn.URL, m); code != http.StatusNoContent {
		t.Fatalf("delivery answered %d", code)
	}
	if rec := h.fake.Record("customer", "C-1001"); string(rec["email"]) != `"ada@example.com"` {
		t.Fatalf("record %v (fake refused %v)", rec, h.fake.AuthFailures())
	}
	if _, last := targettest.Delivered(t, h.db.Store, "customer", "C-1001", store.StageNetSuite); last != 1 {
		t.Fatalf("LastDelivered %d", last)
	}
	if rows := stageRows(t, h, ev.ID, store.StageNetSuite); len(rows) != 2 || rows[0].Outcome != store.OutcomeSending ||
		rows[1].Outcome != store.OutcomeDelivered || rows[1].MessageID != m.ID {
		t.Fatalf("delivery audit %+v", rows)
	}

	// Echo: NetSuite's own change, which NetSuite reported, is not sent back.
	echo, echoEv := mergedMsg(t, "sandbox", "C-echo", "netsuite", 1)
	targettest.StoreMerged(t, h.db.Store, echoEv)
	if code := push(t, h.fn.URL, echo); code != http.StatusNoContent {
		t.Fatalf("echo answered %d", code)
	}
	for _, r := range h.fake.Requests() {
		if r.ExternalID == "C-echo" {
			t.Fatal("NetSuite's own values were sent to netsuite")
		}
	}
	if rows := stageRows(t, h, echoEv.ID, store.StageNetSuite); len(rows) != 1 || rows[0].Outcome != store.OutcomeSkippedEcho {
		t.Fatalf("echo audit %+v", rows)
	}

	// No regression: v3's message after v5's finds NetSuite holding the
	// values of v5 (stale), sends nothing, and NetSuite keeps v5's email.
	var reg []event.Merged
	var regMsgs []message.Message
	for v := uint64(1); v <= 5; v++ {
		m, ev := mergedMsgWith(t, "sandbox", "C-reg", "suitex", v, fmt.Sprintf(`{"email":"v%d@x"}`, v))
		targettest.StoreMerged(t, h.db.Store, ev)
		reg, regMsgs = append(reg, ev), append(regMsgs, m)
	}
	if push(t, h.fn.URL, regMsgs[4]) != 204 || push(t, h.fn.URL, regMsgs[2]) != 204 {
		t.Fatal("regression pushes not acked")
	}
	if rows := stageRows(t, h, reg[2].ID, store.StageNetSuite); len(rows) != 1 || rows[0].Outcome != store.OutcomeStale {
		t.Fatalf("v3 audit %+v", rows)
	}
	n := 0
	for _, r := range h.fake.Requests() {
		if r.ExternalID == "C-reg" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("C-reg sent %d times, want once (v5)", n)
	}
	if rec := h.fake.Record("customer", "C-reg"); string(rec["email"]) != `"v5@x"` {
		t.Fatalf("NetSuite holds %v, want v5's email", rec)
	}

	// A retryable failure is parked on the error topic and acked.
	fail, failEv := mergedMsg(t, "sandbox", "C-503", "suitex", 1)
	targettest.StoreMerged(t, h.db.Store, failEv)
	if code := push(t, h.fn.URL, fail); code != http.StatusNoContent {
		t.Fatalf("reported failure answered %d", code)
	}
	// A message of another environment: permanent, reported, acked.
	foreign, _ := mergedMsg(t, "production", "C-prod", "suitex", 1)
	if code := push(t, h.fn.URL, foreign); code != http.StatusNoContent {
		t.Fatalf("foreign message answered %d", code)
	}
	// A target quoting credentials back: permanent, reason from its body.
	leaky, leakyEv := mergedMsg(t, "sandbox", "C-echo-auth", "suitex", 1)
	targettest.StoreMerged(t, h.db.Store, leakyEv)
	if code := push(t, h.fn.URL, leaky); code != http.StatusNoContent {
		t.Fatalf("leaky failure answered %d", code)
	}

	errs := errorMessages(t, h)
	byReason := map[string]event.Error{}
	for _, e := range errs {
		byReason[e.Reason] = e
	}
	if len(errs) != 3 {
		t.Fatalf("error messages %+v", errs)
	}
	e503 := byReason["http_503"]
	if e503.Stage != "netsuite" || !e503.Retryable || e503.EventID != failEv.ID || e503.RecordID != "C-503" ||
		!bytes.Equal(e503.Original.Data, fail.Data) || e503.Original.MessageID != fail.ID ||
		e503.Original.Attributes["event_id"] != failEv.ID || e503.Original.Subscription != fail.Subscription {
		t.Fatalf("503 error message %+v", e503)
	}
	if e := byReason["wrong_env"]; e.Stage != "netsuite" || e.Retryable {
		t.Fatalf("wrong_env error message %+v", e)
	}
	eLeak := byReason["USER_ERROR"]
	if eLeak.Retryable || !strings.Contains(eLeak.Detail, sink.Redacted) {
		t.Fatalf("USER_ERROR error message %+v", eLeak)
	}
	// A 503 may come after NetSuite applied it: failed (in doubt); a 400
	// is a clear refusal: refused.
	if rows := stageRows(t, h, failEv.ID, store.StageNetSuite); len(rows) != 2 || rows[1].Outcome != store.OutcomeFailed {
		t.Fatalf("503 audit %+v", rows)
	}
	if rows := stageRows(t, h, leakyEv.ID, store.StageNetSuite); len(rows) != 2 || rows[1].Outcome != store.OutcomeRefused {
		t.Fatalf("400 audit %+v", rows)
	}

	// No secret anywhere: logs, error messages, audit rows.
	var everything strings.Builder
	everything.WriteString(h.logs.String())
	for _, e := range errs {
		b, _ := json.Marshal(e)
		everything.Write(b)
	}
	for _, rid := range []string{"C-1001", "C-echo", "C-reg", "C-503", "C-echo-auth"} {
		rows, err := h.db.Store.AuditTrail(ctx, "customer", rid)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range rows {
			everything.WriteString(a.Detail)
		}
	}
	for _, s := range secrets {
		if strings.Contains(everything.String(), s) {
			t.Errorf("secret %s… leaked", s[:6])
		}
	}
	if !strings.Contains(h.logs.String(), "failure reported") {
		t.Fatal("logs captured nothing of the failures: the leak check is empty")
	}
}

func TestNackWhenTheErrorTopicIsUnreachable(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	var healthy atomic.Bool
	fake := &netsuitefake.Server{Account: account, ConsumerKey: consumerKey, ConsumerSecret: consumerSecret,
		TokenID: tokenID, TokenSecret: tokenSecret,
		Respond: func(*http.Request, []byte) (int, string) {
			if healthy.Load() {
				return 0, ""
			}
			return 503, ""
		}}
	srv := fake.Start(t)
	tgt, err := netsuite.New(config.NetSuite{AccountID: account, BaseURL: srv.URL, ConsumerKey: consumerKey,
		ConsumerSecret: consumerSecret, TokenID: tokenID, TokenSecret: tokenSecret})
	if err != nil {
		t.Fatal(err)
	}
	down := publish.Func(func(context.Context, string, publish.Message) (string, error) {
		return "", errors.New("pubsub unavailable")
	})
	handler, err := netsuitefunc.New(netsuitefunc.Deps{Runner: sink.NewRunner(config.Sandbox, tgt, d.Store, nil),
		Reporter: failure.NewReporter(config.Sandbox, publish.Guard(config.Sandbox, down))})
	if err != nil {
		t.Fatal(err)
	}
	fn := httptest.NewServer(message.HTTP(slog.New(slog.DiscardHandler), pubsubtest.Project, handler))
	t.Cleanup(fn.Close)
	m, ev := mergedMsg(t, "sandbox", "C-1", "suitex", 1)
	targettest.StoreMerged(t, d.Store, ev)
	if code := push(t, fn.URL, m); code != http.StatusInternalServerError {
		t.Fatalf("unreported failure answered %d, want a nack", code)
	}
	// A success needs no report: acked even with the error topic down.
	healthy.Store(true)
	m2, ev2 := mergedMsg(t, "sandbox", "C-2", "suitex", 1)
	targettest.StoreMerged(t, d.Store, ev2)
	if code := push(t, fn.URL, m2); code != http.StatusNoContent {
		t.Fatalf("delivery answered %d", code)
	}
	if rec := fake.Record("customer", "C-2"); string(rec["email"]) != `"ada@example.com"` {
		t.Fatalf("NetSuite holds %v", rec)
	}
}

func TestFromConfigNamesMissingSettings(t *testing.T) {
	t.Parallel()
	_, err := netsuitefunc.Runner(config.Config{Env: config.Sandbox, NetSuite: config.NetSuite{Auth: "tba"}}, nil, nil)
	if err == nil {
		t.Fatal("empty configuration accepted")
	}
	for _, v := range []string{"NETSUITE_ACCOUNT_ID", "NETSUITE_BASE_URL", "NETSUITE_CONSUMER_KEY", "NETSUITE_TOKEN_SECRET"} {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("error %q does not name %s", err, v)
		}
	}
	if netsuitefunc.Name != "NetSuiteSink" {
		t.Fatalf("Name %q", netsuitefunc.Name)
	}
}
