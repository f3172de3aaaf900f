package pushbridge_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/internal/devstack/pushbridge"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	want := []time.Duration{10, 20, 40, 80, 100, 100}
	for i, w := range want {
		if got := pushbridge.Backoff(i+1, 10, 100); got != w {
			t.Errorf("attempt %d: %v, want %v", i+1, got, w)
		}
	}
}

// recorder is an endpoint that fails the first `fail` deliveries of each
// message, and records every request it decodes.
type recorder struct {
	mu   sync.Mutex
	fail int
	seen map[string][]message.Message
	done chan struct{}
	want int
	acks int
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	m, err := message.Decode(req)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen[m.ID] = append(r.seen[m.ID], m)
	if len(r.seen[m.ID]) <= r.fail {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	r.acks++
	if r.acks == r.want {
		close(r.done)
	}
	w.WriteHeader(http.StatusNoContent)
}

func run(t *testing.T, ps *pubsubtest.Server, routes []pushbridge.Route) (*pushbridge.Bridge, func()) {
	t.Helper()
	b := pushbridge.New(ps.Client, pubsubtest.Project, routes, pushbridge.Options{MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = b.Run(ctx); close(stopped) }()
	return b, func() { cancel(); <-stopped }
}

func TestRedeliversUntilAckedInOrder(t *testing.T) {
	t.Parallel()
	ps := pubsubtest.New(t, config.Sandbox, true)
	rec := &recorder{fail: 2, seen: map[string][]message.Message{}, done: make(chan struct{}), want: 3}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	pub := ps.Publisher(t)
	var ids []string
	for _, d := range []string{"1", "2", "3"} {
		id, err := pub.Publish(context.Background(), ps.Names.RawTopic, publish.Message{Data: []byte(d), OrderingKey: "customer:C-1"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	_, stop := run(t, ps, []pushbridge.Route{{Subscription: ps.Names.MergeSub, Endpoint: srv.URL}})
	select {
	case <-rec.done:
	case <-time.After(30 * time.Second):
		t.Fatal("messages not delivered")
	}
	stop()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i, id := range ids {
		got := rec.seen[id]
		if len(got) != 3 {
			t.Fatalf("message %d delivered %d times, want 3 (2 failures + 1 ack)", i, len(got))
		}
		for j, m := range got {
			if m.DeliveryAttempt != j+1 || m.OrderingKey != "customer:C-1" || m.SubscriptionName() != ps.Names.MergeSub || m.Attributes["env"] != "sandbox" {
				t.Errorf("delivery %d of %d: %+v", j, i, m)
			}
		}
	}
	// Ordering: message 2's first delivery comes after message 1's ack.
	if !rec.seen[ids[1]][0].PublishTime.After(time.Time{}) {
		t.Error("publish time missing")
	}
}

func TestDeadLettersAfterFiveAttempts(t *testing.T) {
	t.Parallel()
	ps := pubsubtest.New(t, config.Sandbox, true)
	var mu sync.Mutex
	var attempts []int
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m, _ := message.Decode(r)
		mu.Lock()
		attempts = append(attempts, m.DeliveryAttempt)
		mu.Unlock()
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, "down")
	}))
	defer failing.Close()
	dlq := &recorder{seen: map[string][]message.Message{}, done: make(chan struct{}), want: 1}
	dlqSrv := httptest.NewServer(dlq)
	defer dlqSrv.Close()
	if _, err := ps.Publisher(t).Publish(context.Background(), ps.Names.ErrorTopic, publish.Message{Data: []byte(`{"x":1}`), OrderingKey: "k"}); err != nil {
		t.Fatal(err)
	}
	_, stop := run(t, ps, []pushbridge.Route{
		{Subscription: ps.Names.RetrySub, Endpoint: failing.URL},
		{Subscription: ps.Names.DLQSub, Endpoint: dlqSrv.URL},
	})
	select {
	case <-dlq.done:
	case <-time.After(30 * time.Second):
		t.Fatal("not dead-lettered")
	}
	stop()
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) != 5 {
		t.Fatalf("retry endpoint saw %d attempts (%v), want 5", len(attempts), attempts)
	}
	for i, a := range attempts {
		if a != i+1 {
			t.Errorf("attempt %d reported as %d", i+1, a)
		}
	}
	for _, ms := range dlq.seen {
		if string(ms[0].Data) != `{"x":1}` {
			t.Errorf("dead letter data %q", ms[0].Data)
		}
		if a := ms[0].Attributes; a[pushbridge.AttrDeadLetterDeliveryCount] != "5" || a[pushbridge.AttrDeadLetterSubscription] != ps.Names.RetrySub {
			t.Errorf("dead letter attributes: %v", a)
		}
	}
}
