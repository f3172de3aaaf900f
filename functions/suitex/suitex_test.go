package suitexfunc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/functions/suitex"
	"github.com/backbone-sync/backbone/internal/fake/suitexfake"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/logging"
	"github.com/backbone-sync/backbone/shared/logging/logtest"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
	"github.com/backbone-sync/backbone/shared/sink/targettest"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

const secret = "sx-SECRET-f0e1d2c3b4a5968778695a4b3c2d1e0f"

func mergedMsg(t *testing.T, rid, source string, version uint64) (message.Message, event.Merged) {
	t.Helper()
	ev := event.Merged{ID: uuid.NewString(), RecordType: "customer", RecordID: rid, Source: source,
		Timestamp: event.NewTime(time.Now()), BaseVersion: version - 1, Version: version,
		Changes: map[string]json.RawMessage{"email": json.RawMessage(`"ada@example.com"`)}}
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return message.Message{Data: data, ID: uuid.NewString(), OrderingKey: "customer:" + rid,
		Attributes:   map[string]string{"env": "sandbox", "source": source, "record_type": "customer", "event_id": ev.ID},
		Subscription: pubsubtest.SubPath(config.Sandbox.Names().SuiteXSub)}, ev
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

func TestSuiteXSinkEndToEnd(t *testing.T) {
	t.Parallel()
	ps := pubsubtest.New(t, config.Sandbox, true)
	d := mysqltest.New(t)
	logs := &logtest.Buffer{}
	log := logging.New(logs, slog.LevelDebug)
	fake := &suitexfake.Server{Secret: secret, Respond: func(r *http.Request, body []byte) (int, string) {
		if strings.Contains(string(body), `"record_id":"C-422"`) {
			return 422, `{"error":"rejected","signature":"` + r.Header.Get("X-Backbone-Signature") + `","secret":"` + secret + `"}`
		}
		return 0, ""
	}}
	srv := fake.Start(t)
	cfg := config.Config{Env: config.Sandbox, SuiteX: config.SuiteX{BaseURL: srv.URL, SigningSecret: secret, Timeout: 5 * time.Second}}
	worker, _ := d.Worker(t)
	runner, err := suitexfunc.Runner(cfg, worker, log)
	if err != nil {
		t.Fatal(err)
	}
	handler, err := suitexfunc.New(suitexfunc.Deps{Runner: runner, Reporter: failure.NewReporter(cfg.Env, ps.Publisher(t)), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	fn := httptest.NewServer(message.HTTP(log, pubsubtest.Project, handler))
	t.Cleanup(fn.Close)
	ctx := context.Background()

	// The sink reads the record from the store: the merge stored it first.
	m, ev := mergedMsg(t, "C-1", "netsuite", 1)
	targettest.StoreMerged(t, d.Store, ev)
	if code := push(t, fn.URL, m); code != http.StatusNoContent {
		t.Fatalf("delivery answered %d", code)
	}
	// The fake checked the signature and the idempotency key
	// ({event id}:{digest of the changes}) and applied the event.
	reqs := fake.Requests()
	if len(reqs) != 1 || !strings.HasPrefix(reqs[0].IdempotencyKey, ev.ID+":") {
		t.Fatalf("requests %+v (refused: %v)", reqs, fake.Refused())
	}
	var body struct {
		event.Merged
		SinceVersion *uint64 `json:"since_version"`
	}
	if err := json.Unmarshal(fake.Event(reqs[0].IdempotencyKey), &body); err != nil || body.ID != ev.ID || body.Version != 1 ||
		len(body.Changes) != 1 || string(body.Changes["email"]) != `"ada@example.com"` || body.SinceVersion == nil || *body.SinceVersion != 0 {
		t.Fatalf("SuiteX got %s, want the merged event of v1 with since_version 0 (%v)", reqs[0].Body, err)
	}
	if rec := fake.Record("customer", "C-1"); string(rec["email"]) != `"ada@example.com"` {
		t.Fatalf("SuiteX's record %v", rec)
	}
	if _, last := targettest.Delivered(t, d.Store, "customer", "C-1", store.StageSuiteX); last != 1 {
		t.Fatalf("LastDelivered %d", last)
	}

	// Echo: SuiteX's own change, which it reported, is not sent back.
	echo, echoEv := mergedMsg(t, "C-2", "suitex", 1)
	targettest.StoreMerged(t, d.Store, echoEv)
	if code := push(t, fn.URL, echo); code != http.StatusNoContent || len(fake.Requests()) != 1 {
		t.Fatalf("echo answered %d, %d requests", code, len(fake.Requests()))
	}

	// Permanent failure: reported and acked, secrets redacted.
	bad, badEv := mergedMsg(t, "C-422", "netsuite", 1)
	targettest.StoreMerged(t, d.Store, badEv)
	if code := push(t, fn.URL, bad); code != http.StatusNoContent {
		t.Fatalf("failure answered %d", code)
	}
	got := ps.Drain(t, ps.Names.RetrySub)
	if len(got) != 1 {
		t.Fatalf("%d error messages", len(got))
	}
	e, err := failure.Decode(got[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	if e.Stage != "suitex" || e.Retryable || e.Reason != "http_422" || e.EventID != badEv.ID || !bytes.Equal(e.Original.Data, bad.Data) ||
		got[0].OrderingKey != "customer:C-422" || got[0].Attributes["env"] != "sandbox" {
		t.Fatalf("error message %+v attrs %v", e, got[0].Attributes)
	}
	if strings.Contains(string(got[0].Data), secret) || strings.Contains(logs.String(), secret) {
		t.Fatal("signing secret leaked into the error message or logs")
	}
	all, _ := d.Store.AuditForEvent(ctx, badEv.ID)
	var rows []store.Audit
	for _, a := range all {
		if a.Stage == store.StageSuiteX {
			rows = append(rows, a)
		}
	}
	// A 4xx is a clear refusal: SuiteX did not apply it.
	if len(rows) != 2 || rows[0].Outcome != store.OutcomeSending || rows[1].Outcome != store.OutcomeRefused ||
		strings.Contains(rows[1].Detail, secret) {
		t.Fatalf("audit %+v", rows)
	}
}

func TestFromConfigNamesMissingSettings(t *testing.T) {
	t.Parallel()
	_, err := suitexfunc.Runner(config.Config{Env: config.Sandbox}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "SUITEX_BASE_URL") || !strings.Contains(err.Error(), "SUITEX_SIGNING_SECRET") {
		t.Fatalf("error %v", err)
	}
	if suitexfunc.Name != "SuiteXSink" {
		t.Fatalf("Name %q", suitexfunc.Name)
	}
}
