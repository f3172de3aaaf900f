package retryfunc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/functions/retry"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/logging"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

type fixture struct {
	ps    *pubsubtest.Server
	db    *mysqltest.DB
	srv   *httptest.Server
	calls map[string][]message.Message
	next  map[string]error
}

func setup(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{ps: pubsubtest.New(t, config.Sandbox, true), db: mysqltest.New(t), calls: map[string][]message.Message{}, next: map[string]error{}}
	stage := func(name string) retryfunc.Stage {
		return func(ctx context.Context, m message.Message) error {
			f.calls[name] = append(f.calls[name], m)
			return f.next[name]
		}
	}
	h, err := retryfunc.New(retryfunc.Deps{Env: config.Sandbox, Stages: map[string]retryfunc.Stage{"merge": stage("merge"), "suitex": stage("suitex")},
		Publisher: f.ps.Publisher(t), Store: f.db.Store, Log: logging.New(&bytes.Buffer{}, nil), OutageHold: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(message.HTTP(logging.New(&bytes.Buffer{}, nil), "p", h))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) push(t *testing.T, data []byte, attempt int) int {
	t.Helper()
	m := message.Message{Data: data, ID: "err-1", Attributes: map[string]string{"env": "sandbox", "stage": "x"}, DeliveryAttempt: attempt,
		Subscription: pubsubtest.SubPath(f.ps.Names.RetrySub), OrderingKey: "customer:C-1", PublishTime: time.Now()}
	resp, err := http.Post(f.srv.URL, "application/json", bytes.NewReader(message.PushBody(m)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func errorMessage(stage string, retryable bool) []byte {
	b, _ := json.Marshal(event.Error{Stage: stage, Retryable: retryable, Reason: "http_503", Detail: "down",
		Original: event.Original{Data: []byte(`{"id":"e1"}`), MessageID: "orig-1", Subscription: "projects/p/subscriptions/events.merged.sandbox-suitex-sub",
			Attributes: map[string]string{"env": "sandbox"}, OrderingKey: "customer:C-1", DeliveryAttempt: 1},
		EventID: "e1", RecordType: "customer", RecordID: "C-1"})
	return b
}

func TestRetryableSuccessAcksAndAudits(t *testing.T) {
	t.Parallel()
	f := setup(t)
	if code := f.push(t, errorMessage("suitex", true), 3); code != message.StatusAck {
		t.Fatalf("status %d", code)
	}
	got := f.calls["suitex"]
	if len(got) != 1 || string(got[0].Data) != `{"id":"e1"}` || got[0].ID != "orig-1" || got[0].Attributes["env"] != "sandbox" || got[0].OrderingKey != "customer:C-1" {
		t.Fatalf("stage re-run on %+v", got)
	}
	trail, _ := f.db.Store.AuditTrail(context.Background(), "customer", "C-1")
	if len(trail) != 1 || trail[0].Outcome != store.OutcomeRetried || trail[0].Stage != store.StageRetry || trail[0].EventID != "e1" {
		t.Errorf("audit %+v", trail)
	}
	if dl := f.ps.Drain(t, f.ps.Names.DLQSub); len(dl) != 0 {
		t.Errorf("dead-lettered on success: %d", len(dl))
	}
}

func TestRetryableFailureNacks(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.next["merge"] = failure.Retryable("merge", "version_gap", "v3 not there yet")
	if code := f.push(t, errorMessage("merge", true), 2); message.Acked(code) {
		t.Fatalf("status %d acks a failing retry", code)
	}
	f.next["merge"] = errors.New("database down")
	if code := f.push(t, errorMessage("merge", true), 3); message.Acked(code) {
		t.Fatalf("status %d acks a failing retry", code)
	}
	if dl := f.ps.Drain(t, f.ps.Names.DLQSub); len(dl) != 0 {
		t.Errorf("retryable failure dead-lettered by Retry: %d", len(dl))
	}
}

// An unreachable store is never the message's fault: on the attempt that
// Pub/Sub would dead-letter after a nack, a re-run that failed only because
// of the store parks the message again, with fresh attempts, and acks;
// before that it nacks like any failure; another failure on the last attempt
// still nacks (and is dead-lettered by Pub/Sub).
func TestStoreOutageOnTheLastAttemptParksAgain(t *testing.T) {
	t.Parallel()
	unavailable := failure.Retryable("merge", failure.ReasonStoreUnavailable, "dial tcp: connection refused")
	for _, c := range []struct {
		name     string
		err      error
		attempt  int
		acked    bool
		reparked int
	}{
		{"store down, attempt 4 of 5", unavailable, 4, false, 0},
		{"store down, last attempt", unavailable, 5, true, 1},
		{"store down, past the last attempt", unavailable, 6, true, 1},
		{"another failure, last attempt", failure.Retryable("merge", "version_gap", "v3 not there yet"), 5, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			f.next["merge"] = c.err
			data := errorMessage("merge", true)
			if code := f.push(t, data, c.attempt); message.Acked(code) != c.acked {
				t.Fatalf("status %d, want acked %v", code, c.acked)
			}
			again := f.ps.Drain(t, f.ps.Names.RetrySub)
			if len(again) != c.reparked {
				t.Fatalf("%d messages parked again, want %d", len(again), c.reparked)
			}
			if c.reparked > 0 && (!bytes.Equal(again[0].Data, data) || again[0].Attributes[retryfunc.AttrOutageReparks] != "1" ||
				again[0].Attributes["env"] != "sandbox" || again[0].OrderingKey != "customer:C-1") {
				t.Errorf("parked again as %+v", again[0])
			}
			if dl := f.ps.Drain(t, f.ps.Names.DLQSub); len(dl) != 0 {
				t.Errorf("dead-lettered by Retry: %d", len(dl))
			}
		})
	}
}

func TestNonRetryableGoesStraightToDLQ(t *testing.T) {
	t.Parallel()
	f := setup(t)
	data := errorMessage("merge", false)
	if code := f.push(t, data, 1); code != message.StatusAck {
		t.Fatalf("status %d", code)
	}
	if len(f.calls["merge"]) != 0 {
		t.Error("non-retryable stage was re-run")
	}
	dl := f.ps.Drain(t, f.ps.Names.DLQSub)
	if len(dl) != 1 {
		t.Fatalf("%d dead letters", len(dl))
	}
	a := dl[0].Attributes
	if !bytes.Equal(dl[0].Data, data) || a["env"] != "sandbox" || a[retryfunc.AttrDeadLetterDeliveryCount] != "1" ||
		a[retryfunc.AttrDeadLetterSubscription] != f.ps.Names.RetrySub || a[retryfunc.AttrDeadLetterReason] != "not_retryable" || dl[0].OrderingKey != "customer:C-1" {
		t.Errorf("dead letter %+v", dl[0])
	}
}

func TestPermanentOnRetryIsDeadLettered(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.next["suitex"] = failure.Permanent("suitex", "http_400", "bad field")
	if code := f.push(t, errorMessage("suitex", true), 2); code != message.StatusAck {
		t.Fatalf("status %d", code)
	}
	dl := f.ps.Drain(t, f.ps.Names.DLQSub)
	if len(dl) != 1 {
		t.Fatalf("%d dead letters", len(dl))
	}
	e, err := failure.Decode(dl[0].Data)
	if err != nil || e.Reason != "http_400" || e.Retryable || string(e.Original.Data) != `{"id":"e1"}` || dl[0].Attributes[retryfunc.AttrDeadLetterDeliveryCount] != "2" {
		t.Errorf("dead letter %+v, %v", e, err)
	}
}

func TestUndecodableAndUnknownStageAreKept(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for _, data := range [][]byte{[]byte("not json \x00"), errorMessage("ledger", true)} {
		if code := f.push(t, data, 1); code != message.StatusAck {
			t.Fatalf("status %d", code)
		}
	}
	dl := f.ps.Drain(t, f.ps.Names.DLQSub)
	if len(dl) != 2 || string(dl[0].Data) != "not json \x00" || dl[0].Attributes[retryfunc.AttrDeadLetterReason] != retryfunc.ReasonUndecodable ||
		dl[1].Attributes[retryfunc.AttrDeadLetterReason] != retryfunc.ReasonUnknownStage {
		t.Errorf("dead letters %+v", dl)
	}
}

// A CloudEvent of another type is dead-lettered with the decoder's reason
// and what it carried, never re-run.
func TestForeignCloudEventIsDeadLetteredWithItsReason(t *testing.T) {
	t.Parallel()
	f := setup(t)
	req, err := http.NewRequest(http.MethodPost, f.srv.URL, strings.NewReader(`{"hello":"world"}`))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"ce-specversion": "1.0", "ce-type": "com.example.not.pubsub", "ce-source": "//example/x",
		"ce-id": "ce-1", "Content-Type": "application/json"} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != message.StatusAck {
		t.Fatalf("status %d, want an ack (parked, not redelivered forever)", resp.StatusCode)
	}
	dl := f.ps.Drain(t, f.ps.Names.DLQSub)
	if len(dl) != 1 || dl[0].Attributes[retryfunc.AttrDeadLetterReason] != message.ReasonUnexpectedEventType || string(dl[0].Data) != `{"hello":"world"}` {
		t.Fatalf("dead letters %+v", dl)
	}
	if len(f.calls["merge"])+len(f.calls["suitex"]) != 0 {
		t.Fatal("a foreign CloudEvent re-ran a stage")
	}
}
