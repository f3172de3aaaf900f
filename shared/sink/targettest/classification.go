package targettest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/store"
)

// Answer is one answer of a target's system, and what a delivery through
// the Runner and the real store must make of it.
type Answer struct {
	RecordID  string       // the system's fake answers by record id
	Runner    *sink.Runner // the Runner that delivers it
	Outcome   string       // what Deliver returns
	Audited   string       // the outcome row: delivered, refused (a clear refusal) or failed (in doubt)
	Reason    string
	Retryable bool
	Detail    string // a part of the failure's detail
}

// Classification is a target's answers under test.
type Classification struct {
	Store   store.Store
	Stage   string                             // the target's stage
	Event   func(recordID string) event.Merged // version 1 of a record, stored before it is delivered
	Answers []Answer
	Logs    fmt.Stringer // what the Runners logged
	Secrets []string     // the target's credentials, none of which may leak
}

// RunClassification delivers one event per answer, in parallel, and checks
// the outcome, the delivery's two audit rows (sending, then the outcome),
// the failure (reason, retryability, stage, event id, a detail of at most
// about 2 KiB); then that no secret reached the logs, the failures or the
// audit, and that the failures were logged at all.
func RunClassification(t *testing.T, c Classification) {
	t.Helper()
	var (
		mu     sync.Mutex
		report []string
	)
	t.Run("cases", func(t *testing.T) {
		for _, tc := range c.Answers {
			t.Run(tc.RecordID, func(t *testing.T) {
				t.Parallel()
				ev := c.Event(tc.RecordID)
				StoreMerged(t, c.Store, ev)
				out, err := tc.Runner.Deliver(context.Background(), Message(t, ev))
				if out != tc.Outcome {
					t.Fatalf("outcome %q, want %q (%v)", out, tc.Outcome, err)
				}
				all, aerr := c.Store.AuditForEvent(context.Background(), ev.ID)
				var rows []store.Audit // the delivery's: sending, then the outcome
				for _, a := range all {
					if a.Stage == c.Stage {
						rows = append(rows, a)
					}
				}
				if aerr != nil || len(rows) != 2 || rows[0].Outcome != store.OutcomeSending || rows[1].Outcome != tc.Audited ||
					rows[1].Fields == nil || rows[1].Fields.Attempt != rows[0].ID {
					t.Fatalf("audit %+v %v", rows, aerr)
				}
				if tc.Outcome == store.OutcomeDelivered {
					if err != nil {
						t.Fatalf("error %v", err)
					}
					return
				}
				f, ok := failure.As(err)
				if !ok || f.Reason != tc.Reason || f.Retryable != tc.Retryable || f.Stage != c.Stage || f.EventID != ev.ID {
					t.Fatalf("failure %+v, want reason %s retryable %v", err, tc.Reason, tc.Retryable)
				}
				if !strings.Contains(f.Detail, tc.Detail) || len(f.Detail) > 2100 {
					t.Fatalf("detail (%d bytes) lacks %q: %s", len(f.Detail), tc.Detail, f.Detail)
				}
				mu.Lock()
				report = append(report, f.Detail, rows[1].Detail)
				mu.Unlock()
			})
		}
	})
	all := c.Logs.String() + strings.Join(report, "\n")
	for _, s := range c.Secrets {
		if strings.Contains(all, s) {
			t.Errorf("secret %q leaked into logs, failures or audit", s[:min(6, len(s))])
		}
	}
	if !strings.Contains(c.Logs.String(), "delivery failed") {
		t.Fatal("no failure was logged: the leak check saw nothing")
	}
}

// Message is the push message of a merged event, as the merged topic's
// subscription delivers it to a sink.
func Message(t testing.TB, ev event.Merged) message.Message {
	t.Helper()
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return message.Message{Data: data, ID: uuid.NewString(),
		Attributes: map[string]string{"env": "sandbox", "source": ev.Source, "record_type": ev.RecordType, "event_id": ev.ID}}
}
