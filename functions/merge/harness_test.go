package mergefunc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/functions/merge"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/merge"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

const env = config.Sandbox

// harness is one Merge function served over HTTP the way Cloud Run serves
// it, on its own database (as the least-privilege worker) and its own pstest.
type harness struct {
	t     testing.TB
	db    *mysqltest.DB
	store store.Store // the worker's store, as the function uses it
	ps    *pubsubtest.Server
	names config.Names
	eng   *merge.Engine
	url   string
	msgs  atomic.Int64
}

type option struct {
	// wrap wraps the guarded publisher (failure injection).
	wrap func(publish.Publisher) publish.Publisher
	// store replaces the worker store (database unreachable).
	store store.Store
	// reporterPub replaces the error reporter's publisher.
	reporterPub publish.Publisher
}

func newHarness(t testing.TB, opts ...option) *harness {
	t.Helper()
	var o option
	for _, x := range opts {
		o = x
	}
	h := &harness{t: t, db: mysqltest.New(t), ps: pubsubtest.New(t, env, true), names: env.Names()}
	if o.store != nil {
		h.store = o.store
	} else {
		h.store, _ = h.db.Worker(t)
	}
	pub := h.ps.Publisher(t)
	mergePub := pub
	if o.wrap != nil {
		mergePub = o.wrap(pub)
	}
	reporterPub := pub
	if o.reporterPub != nil {
		reporterPub = o.reporterPub
	}
	h.eng, h.url = serve(t, h.store, mergePub, reporterPub)
	return h
}

// serve runs one Merge function instance over HTTP.
func serve(t testing.TB, st store.Store, mergePub, reporterPub publish.Publisher) (*merge.Engine, string) {
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	eng := merge.New(st, mergePub, env, config.DefaultSources, log)
	handler, err := mergefunc.New(mergefunc.Deps{Engine: eng, Reporter: failure.NewReporter(env, reporterPub), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(message.HTTP(log, pubsubtest.Project, handler))
	t.Cleanup(srv.Close)
	return eng, srv.URL + "/" + mergefunc.Name
}

// secondInstance starts another Merge instance (another Cloud Run
// instance: its own engine, pool and publisher) on the same database and
// Pub/Sub, and returns its URL.
func (h *harness) secondInstance() string {
	st, _ := h.db.Worker(h.t)
	pub := h.ps.Publisher(h.t)
	_, url := serve(h.t, st, pub, pub)
	return url
}

// raw is a raw event under construction.
type raw struct {
	ID         string
	RecordType string
	RecordID   string
	Source     string
	Base       uint64
	TS         time.Time
	Changes    map[string]any
}

var t0 = time.Date(2026, 3, 13, 20, 0, 0, 0, time.UTC)

func (r raw) data() []byte {
	m := map[string]any{
		"record_type": r.RecordType, "record_id": r.RecordID, "source": r.Source,
		"timestamp": r.TS.Format(time.RFC3339Nano), "base_version": r.Base, "changes": r.Changes,
	}
	if r.ID != "" {
		m["id"] = r.ID
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// msg wraps data as a message from the raw subscription with a fresh id.
func (h *harness) msg(data []byte) message.Message {
	return message.Message{
		Data:         data,
		Attributes:   map[string]string{"env": string(env)},
		ID:           fmt.Sprintf("m-%d", h.msgs.Add(1)),
		PublishTime:  time.Now(),
		OrderingKey:  "",
		Subscription: pubsubtest.SubPath(h.names.MergeSub),
	}
}

// push sends m as a Pub/Sub push request and returns the status code.
func (h *harness) push(m message.Message) int {
	h.t.Helper()
	return h.pushTo(h.url, m)
}

func (h *harness) pushTo(url string, m message.Message) int {
	h.t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewReader(message.PushBody(m)))
	if err != nil {
		h.t.Fatalf("push: %v", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// pushOK pushes and requires an ack.
func (h *harness) pushOK(m message.Message) {
	h.t.Helper()
	if code := h.push(m); !message.Acked(code) {
		h.t.Fatalf("push %s: status %d, want an ack", m.ID, code)
	}
}

func (h *harness) send(r raw) message.Message {
	h.t.Helper()
	m := h.msg(r.data())
	h.pushOK(m)
	return m
}

// merged drains the NetSuite sink's subscription of the merged topic.
func (h *harness) merged() []event.Merged {
	h.t.Helper()
	var out []event.Merged
	for _, r := range h.ps.Drain(h.t, h.names.NetSuiteSub) {
		var m event.Merged
		if err := json.Unmarshal(r.Data, &m); err != nil {
			h.t.Fatalf("merged message %s: %v", r.Data, err)
		}
		if r.Attributes["env"] != string(env) || r.Attributes[event.AttrEventID] != m.ID ||
			r.Attributes[event.AttrSource] != m.Source || r.Attributes[event.AttrRecordType] != m.RecordType ||
			r.OrderingKey != publish.OrderingKey(m.RecordType, m.RecordID) {
			h.t.Errorf("merged message %s: attributes %v, ordering key %q", m.ID, r.Attributes, r.OrderingKey)
		}
		out = append(out, m)
	}
	return out
}

// errorsByMessage drains the error topic (through the retry subscription)
// and indexes the error messages by the original message id.
func (h *harness) errorsByMessage() map[string]event.Error {
	h.t.Helper()
	out := map[string]event.Error{}
	for _, r := range h.ps.Drain(h.t, h.names.RetrySub) {
		e, err := failure.Decode(r.Data)
		if err != nil {
			h.t.Fatalf("error message: %v", err)
		}
		if r.Attributes["env"] != string(env) {
			h.t.Errorf("error message without env attribute: %v", r.Attributes)
		}
		if _, dup := out[e.Original.MessageID]; dup {
			h.t.Errorf("two error messages for message %s", e.Original.MessageID)
		}
		out[e.Original.MessageID] = e
	}
	return out
}

func (h *harness) history(rt, rid string) []store.Event {
	h.t.Helper()
	evs, err := h.db.Store.History(context.Background(), rt, rid)
	if err != nil {
		h.t.Fatal(err)
	}
	return evs
}

func (h *harness) audit(rt, rid string) []store.Audit {
	h.t.Helper()
	as, err := h.db.Store.AuditTrail(context.Background(), rt, rid)
	if err != nil {
		h.t.Fatal(err)
	}
	return as
}

// outcomes counts a record's merge-stage audit outcomes.
func (h *harness) outcomes(rt, rid string) map[string]int {
	h.t.Helper()
	n := map[string]int{}
	for _, a := range h.audit(rt, rid) {
		n[a.Outcome]++
	}
	return n
}

func (h *harness) count(table string) int {
	h.t.Helper()
	var n int
	if err := h.db.Root.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

func newID() string { return uuid.NewString() }
