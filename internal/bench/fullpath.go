package bench

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/internal/devstack"
	"github.com/backbone-sync/backbone/internal/fake"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/publish/pubsub"
	"github.com/backbone-sync/backbone/shared/store"
)

// Mode c, the full path: raw events through the dev stack until the other
// system's stand-in has them.

// observer follows events through the dev stack: when the Merge function
// acked each one, and when a stand-in received it.
type observer struct {
	mu sync.Mutex
	w  map[string]*tracked
}

type tracked struct {
	merged, delivered     chan struct{}
	mergedAt, deliveredAt time.Time
}

func newObserver() *observer { return &observer{w: map[string]*tracked{}} }

func (o *observer) expect(id string) *tracked {
	t := &tracked{merged: make(chan struct{}), delivered: make(chan struct{})}
	o.mu.Lock()
	o.w[id] = t
	o.mu.Unlock()
	return t
}

func (o *observer) forget(id string) {
	o.mu.Lock()
	delete(o.w, id)
	o.mu.Unlock()
}

func (o *observer) mark(id string, merged bool, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	t := o.w[id]
	if t == nil {
		return
	}
	if merged && t.mergedAt.IsZero() {
		t.mergedAt = at
		close(t.merged)
	}
	if !merged && t.deliveredAt.IsZero() {
		t.deliveredAt = at
		close(t.delivered)
	}
}

func (o *observer) onDelivery(d fake.Delivery) { o.mark(d.EventID, false, time.Now()) }

// statusRecorder remembers the status a handler answered.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(s int) {
	r.status = s
	r.ResponseWriter.WriteHeader(s)
}

// serve is the dev stack's function server: an in-process mux (the
// Functions Framework's registry is process-global and this run starts
// several stacks), with the Merge handler observed.
func (o *observer) serve(handlers map[string]http.Handler, ln net.Listener) (func(), error) {
	wrapped := make(map[string]http.Handler, len(handlers))
	for name, h := range handlers {
		if name == config.TargetMerge {
			inner := h
			h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, err := io.ReadAll(io.LimitReader(r.Body, message.MaxRequestBytes))
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				r.Body = io.NopCloser(bytes.NewReader(body))
				rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
				inner.ServeHTTP(rec, r)
				if message.Acked(rec.status) {
					if id := rawEventID(body); id != "" {
						o.mark(id, true, time.Now())
					}
				}
			})
		}
		wrapped[name] = h
	}
	return devstack.ServeInProcess(wrapped, ln)
}

// rawEventID reads the raw event's id out of a push request body.
func rawEventID(body []byte) string {
	var env struct {
		Message struct {
			Data []byte `json:"data"`
		} `json:"message"`
	}
	if json.Unmarshal(body, &env) != nil {
		return ""
	}
	var raw struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(env.Message.Data, &raw) != nil {
		return ""
	}
	return raw.ID
}

// fullStack is a dev stack with an observer and an external publisher (the
// source systems' adapters).
type fullStack struct {
	d   *devstack.Stack
	obs *observer
	ps  *pubsub.Publisher
	pub publish.Publisher
}

// startFull starts a dev stack on the database of dsn (privileged) and
// observes it.
func (b *benchmark) startFull(ctx context.Context, dsn string) (*fullStack, error) {
	obs := newObserver()
	d, err := devstack.Start(ctx, devstack.Options{Env: b.o.Env, DSN: dsn, FuncAddr: "127.0.0.1:0", Log: b.log, Serve: obs.serve,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second}, b.w.Functions)
	if err != nil {
		return nil, err
	}
	d.NetSuite.OnDelivery(obs.onDelivery)
	d.SuiteX.OnDelivery(obs.onDelivery)
	ps, err := pubsub.New(ctx, devstack.Project, d.Emulator)
	if err != nil {
		d.Stop()
		return nil, err
	}
	return &fullStack{d: d, obs: obs, ps: ps, pub: publish.Guard(b.o.Env, ps)}, nil
}

func (f *fullStack) stop() {
	_ = f.ps.Close()
	f.d.Stop()
}

// deliveryTimeout bounds one event's trip through the stack.
const deliveryTimeout = 30 * time.Second

// send publishes e as a raw event with a new id and waits until the other
// system's stand-in has it. The caller forgets the id when done with it.
func (f *fullStack) send(ctx context.Context, env config.Env, e Event) (string, *tracked, error) {
	id := uuid.NewString()
	t := f.obs.expect(id)
	if _, err := f.pub.Publish(ctx, env.Names().RawTopic, publish.Message{Data: e.Raw(id), OrderingKey: publish.OrderingKey(RecordType, e.RecordID)}); err != nil {
		return id, t, err
	}
	timer := time.NewTimer(deliveryTimeout)
	defer timer.Stop()
	select {
	case <-t.delivered:
		return id, t, nil
	case <-ctx.Done():
		return id, t, ctx.Err()
	case <-timer.C:
		return id, t, fmt.Errorf("event %s (%s base %d) not delivered within %s", id, e.RecordID, e.Base, deliveryTimeout)
	}
}

func (f *fullStack) op(env config.Env, prefix string, worker int) Op {
	s := NewStream(prefix, SourceOf(worker), RecordsPerWorker)
	return func(ctx context.Context) error {
		e := s.Next()
		id, _, err := f.send(ctx, env, e)
		f.obs.forget(id)
		s.Done(err == nil)
		return err
	}
}

// quiesce waits until the audit log holds want rows for records like
// pattern: every sink has written its row (the stand-in sees a delivery
// before the sink audits it, and the source's own sink skips in parallel).
func quiesce(ctx context.Context, db *sql.DB, pattern string, want int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		// A delivery's `sending` row is its attempt, not its outcome.
		n, err := countRows(ctx, db, "SELECT COUNT(*) FROM event_audit_log WHERE record_id LIKE ? AND (processing_outcome IS NULL OR processing_outcome <> '"+store.OutcomeSending+"')", pattern)
		if err != nil {
			return err
		}
		if n >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d audit rows for %s after 30s", n, want, pattern)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fullLevel measures c at one concurrency on a fresh stack and waits until
// the stack is idle before stopping it (a message still in the embedded
// emulator would be lost with it).
func (b *benchmark) fullLevel(ctx context.Context, rootDSN string, db *sql.DB, conc int) (Point, error) {
	f, err := b.startFull(ctx, rootDSN)
	if err != nil {
		return Point{Concurrency: conc, Errors: 1, FirstError: err.Error()}, err
	}
	defer f.stop()
	prof, done := b.profileFor("c", conc)
	prefix := fmt.Sprintf("c%d-", conc)
	p := b.runner.Closed(ctx, conc, func(w int) Op { return f.op(b.o.Env, fmt.Sprintf("%sw%d", prefix, w), w) }, prof)
	done()
	// Every event is merged, delivered to the other system and skipped by
	// its own: three audit rows.
	return p, quiesce(ctx, db, prefix+"%", 3*p.Succeeded)
}

// openLoop publishes at rate events/s regardless of completions, on a pool
// of records large enough that an event never follows its record's previous
// one before that one is through (10 s apart at the rate).
func (b *benchmark) openLoop(ctx context.Context, rootDSN string, db *sql.DB, rate float64) error {
	f, err := b.startFull(ctx, rootDSN)
	if err != nil {
		return err
	}
	defer f.stop()
	pool := max(1000, int(rate*10))
	var seq atomic.Int64
	b.printf("\nopen loop at %.0f events/s (half of peak c), full path\n", rate)
	prof, done := b.profileFor("open", RefConcurrency)
	defer done()
	res := b.runner.Open(ctx, rate, deliveryTimeout, []string{"raw_to_merged", "raw_to_delivered"}, func(ctx context.Context) ([]time.Time, error) {
		n := int(seq.Add(1) - 1)
		k := n % pool
		e := Event{RecordID: fmt.Sprintf("open-r%d", k), Source: SourceOf(k), Base: uint64(n / pool), Seq: n}
		id, t, err := f.send(ctx, b.o.Env, e)
		defer f.obs.forget(id)
		if err != nil {
			return nil, err
		}
		// The delivery can overtake the Merge ack (the sink may run while
		// the merge still sets processed = 1): wait for both.
		select {
		case <-t.merged:
		case <-ctx.Done():
			return nil, fmt.Errorf("event of %s delivered but its merge ack was not seen: %w", e.RecordID, ctx.Err())
		}
		return []time.Time{t.mergedAt, t.deliveredAt}, nil
	}, prof)
	b.res.OpenLoop = &res
	for _, k := range []string{"raw_to_merged", "raw_to_delivered"} {
		l := res.Stages[k]
		b.printf("  %-17s p50 %7.2f ms  p90 %7.2f ms  p99 %7.2f ms  max %7.2f ms\n", k, l.P50MS, l.P90MS, l.P99MS, l.MaxMS)
	}
	b.printf("  %d sent in the window, %d completed; cpu ms/event: bench %.3f, db own %.3f (all %.3f); other load %.2f cores\n", res.Sent, res.Completed,
		res.CPU.SelfMSPerEvent, res.CPU.OwnServerMSPerEvent, res.CPU.ServerMSPerEvent, res.CPU.OtherCores)
	if res.Errors > 0 {
		b.fail("open loop: %d errors, first: %s", res.Errors, res.FirstError)
	}
	return quiesce(ctx, db, "open-%", 3*int(seq.Load()))
}

// countedFull runs c's counted pass on a stack whose database connections
// go through the proxy.
func (b *benchmark) countedFull(ctx context.Context, rootDSN string, db *sql.DB) (Statements, error) {
	proxy, pdsn, err := b.viaProxy(rootDSN)
	if err != nil {
		return Statements{}, err
	}
	defer proxy.Close()
	f, err := b.startFull(ctx, pdsn)
	if err != nil {
		return Statements{}, err
	}
	defer f.stop()
	n := max(b.sizes.countEvents/2, 100)
	before := proxy.Counts()
	got, err := RunN(ctx, RefConcurrency, n, func(w int) Op { return f.op(b.o.Env, fmt.Sprintf("ccount-w%d", w), w) })
	if err != nil {
		return Statements{}, err
	}
	if err := quiesce(ctx, db, "ccount%", 3*got); err != nil {
		return Statements{}, err
	}
	return PerEvent(proxy.Counts().Sub(before), got)
}
