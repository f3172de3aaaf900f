package sink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/internal/fake/netsuitefake"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/sink/netsuite"
	"github.com/backbone-sync/backbone/shared/sink/suitex"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql"
)

// The scenarios that per-version delivery got wrong, each deterministic,
// each ending with every system's copy equal to the store (SPEC §7).

var t0 = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

// nsBodies returns the NetSuite upsert bodies received for rid.
func nsBodies(w *world, rid string) []map[string]json.RawMessage {
	var out []map[string]json.RawMessage
	for _, r := range w.nsFake.Requests() {
		if r.ExternalID != rid {
			continue
		}
		var m map[string]json.RawMessage
		_ = json.Unmarshal(r.Body, &m)
		out = append(out, m)
	}
	return out
}

// sxBodies returns the SuiteX event bodies received for rid.
func sxBodies(w *world, rid string) []map[string]json.RawMessage {
	var out []map[string]json.RawMessage
	for _, r := range w.sxFake.Requests() {
		var ev struct {
			RecordID string                     `json:"record_id"`
			Changes  map[string]json.RawMessage `json:"changes"`
		}
		_ = json.Unmarshal(r.Body, &ev)
		if ev.RecordID == rid {
			out = append(out, ev.Changes)
		}
	}
	return out
}

func (s *sched) plan(target string, ps ...plan) {
	s.mu.Lock()
	s.plans[target] = append(s.plans[target], ps...)
	s.mu.Unlock()
}

func TestOvertakenVersionStillReachesTheTarget(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 5)
	s := w.newSched(t, "ov-1")
	ctx := context.Background()
	s.edit(sysSX, "ov-1", vals("a", 1, "b", 1), at(1), true)
	s.drain(ctx, 50) // v1 everywhere
	// v2 changes b only, and fails at NetSuite (503): parked for Retry.
	s.edit(sysSX, "ov-1", vals("b", 2), at(2), true)
	s.mergeOne(ctx, sysSX, false)
	s.plan(sysNS, planFail)
	s.deliverOne(ctx, sysNS, false)
	if len(s.retryQ[sysNS]) != 1 {
		t.Fatalf("v2 not parked: %v", s.log)
	}
	// v3 changes a only and is delivered: it carries v2's b along.
	s.edit(sysSX, "ov-1", vals("a", 3), at(3), true)
	s.mergeOne(ctx, sysSX, false)
	s.deliverOne(ctx, sysNS, false)
	bodies := nsBodies(w, "ov-1")
	last := bodies[len(bodies)-1]
	if string(last["a"]) != "3" || string(last["b"]) != "2" {
		t.Fatalf("the delivery after the failed v2 sent %v, want a=3 and b=2", last)
	}
	// Retry's v2 finds nothing missing: no request, audited stale.
	n := len(bodies)
	s.retryOne(ctx, sysNS)
	if got := len(nsBodies(w, "ov-1")); got != n {
		t.Fatalf("Retry of the overtaken v2 sent a request")
	}
	s.drain(ctx, 50)
	s.converged(ctx)
}

func TestConflictWinnerIsSentBackToItsOwnSystem(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 5)
	s := w.newSched(t, "cw-1")
	ctx := context.Background()
	s.edit(sysSX, "cw-1", vals("f", "start"), at(1), true)
	s.drain(ctx, 50)
	// Both edit f on version 1; NetSuite's edit is the later one.
	s.edit(sysNS, "cw-1", vals("f", "netsuite"), at(20), true)
	s.edit(sysSX, "cw-1", vals("f", "suitex"), at(10), true)
	s.mergeOne(ctx, sysSX, false)   // v2 = SuiteX's value
	s.deliverOne(ctx, sysNS, false) // overwrites NetSuite's own edit
	if got := s.view(sysNS, "cw-1")["f"]; got != `"suitex"` {
		t.Fatalf("NetSuite holds %s after v2", got)
	}
	s.mergeOne(ctx, sysNS, false) // NetSuite's later edit wins: v3
	s.drain(ctx, 50)
	bodies := nsBodies(w, "cw-1")
	if last := bodies[len(bodies)-1]; string(last["f"]) != `"netsuite"` {
		t.Fatalf("NetSuite's winning value was not sent back to it: last upsert %v", last)
	}
	s.converged(ctx)
}

func TestRetryNeverSendsAValueTheTargetChangedSince(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 5)
	s := w.newSched(t, "rr-1")
	ctx := context.Background()
	s.edit(sysSX, "rr-1", vals("f", "old"), at(1), true)
	s.mergeOne(ctx, sysSX, false)
	s.plan(sysNS, planFail)
	s.deliverOne(ctx, sysNS, false) // v1 fails at NetSuite
	// NetSuite changes f itself, on the base it holds (0): it wins (later).
	s.edit(sysNS, "rr-1", vals("f", "mine"), at(5), true)
	s.mergeOne(ctx, sysNS, false)
	s.retryOne(ctx, sysNS) // Retry of v1
	for _, b := range nsBodies(w, "rr-1") {
		if string(b["f"]) == `"old"` && s.view(sysNS, "rr-1")["f"] == `"old"` {
			t.Fatalf("Retry regressed NetSuite to the old value")
		}
	}
	s.drain(ctx, 50)
	if got := s.view(sysNS, "rr-1")["f"]; got != `"mine"` {
		t.Fatalf("NetSuite holds %s, want its own later edit", got)
	}
	s.converged(ctx)
}

func TestEchoWhileItsDeliveryIsInFlightIsAnEcho(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 5)
	s := w.newSched(t, "ef-1")
	ctx := context.Background()
	s.edit(sysSX, "ef-1", vals("f", "a"), at(1), true)
	s.mergeOne(ctx, sysSX, false) // v1 f=a
	once := true
	s.echo = func(sys, rid string, version, oldBase uint64, applied map[string]json.RawMessage) {
		if sys != sysNS || !once {
			return
		}
		once = false
		// While NetSuite's request is in flight: SuiteX changes f (v2),
		// then NetSuite's after-submit script re-emits the delivered value
		// with a later timestamp and its old base, merged before the
		// backbone hears back.
		s.mergeMsg(ctx, sysSX, s.edit(sysSX, rid, vals("f", "b"), at(2), true))
		s.mergeMsg(ctx, sysNS, s.emit(sysNS, rid, oldBase, applied, at(30), true))
		s.mu.Lock()
		s.rawQ = map[string][]message.Message{}
		s.mu.Unlock()
	}
	s.deliverOne(ctx, sysNS, false)
	s.echo = nil
	trail, err := w.store.AuditTrail(ctx, wRecordType, "ef-1")
	if err != nil {
		t.Fatal(err)
	}
	echoed := false
	for _, a := range trail {
		if a.Stage == store.StageMerge && a.Source == sysNS {
			echoed = a.Outcome == store.OutcomeEcho
		}
	}
	if !echoed {
		t.Fatalf("NetSuite's re-emission was not an echo:\n%s", strings.Join(s.log, "\n"))
	}
	s.drain(ctx, 50)
	if got := s.storeView(ctx, "ef-1")["f"]; got != `"b"` {
		t.Fatalf("store holds f=%s, want SuiteX's b", got)
	}
	s.converged(ctx)
}

func TestAnyRecordIdentityIsDelivered(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 5)
	long := strings.Repeat("😀", 191)
	ids := []string{"客户-😀-1", long, "C-1", "c-1", "C-1 "}
	s := w.newSched(t, ids...)
	ctx := context.Background()
	for i, id := range ids {
		s.edit(sysSX, id, vals("n", i), at(i), true)
		s.edit(sysNS, id, vals("m", i), at(i), true)
	}
	s.drain(ctx, 100)
	for i, id := range ids {
		if got := s.view(sysNS, id)["n"]; got != fmt.Sprint(i) {
			t.Errorf("NetSuite record %q holds n=%s, want %d", id, got, i)
		}
		if got := s.view(sysSX, id)["m"]; got != fmt.Sprint(i) {
			t.Errorf("SuiteX record %q holds m=%s, want %d", id, got, i)
		}
		dls := s.dead[sysNS]
		if len(dls) > 0 {
			t.Errorf("dead letters for %q: %v", id, dls[0].reason)
		}
	}
	s.converged(ctx)
}

func TestDroppedOwnValueStillGetsTheWinnerBack(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 5)
	s := w.newSched(t, "dv-1")
	ctx := context.Background()
	s.edit(sysSX, "dv-1", vals("f", "a"), at(1), true)
	s.drain(ctx, 50) // NetSuite got f=a (v1)
	// SuiteX toggles f away and back: v2 f=z, v3 f=a (the winner equals
	// the value delivered before).
	s.edit(sysSX, "dv-1", vals("f", "z"), at(2), true)
	s.mergeOne(ctx, sysSX, false)
	s.edit(sysSX, "dv-1", vals("f", "a"), at(30), true)
	s.mergeOne(ctx, sysSX, false)
	// NetSuite edits f on version 1, earlier than SuiteX's v3: it loses.
	s.edit(sysNS, "dv-1", vals("f", "c"), at(10), true)
	s.mergeOne(ctx, sysNS, false)
	s.drain(ctx, 50)
	if got := s.view(sysNS, "dv-1")["f"]; got != `"a"` {
		t.Fatalf("NetSuite kept its losing value %s; the winner a was not sent back:\n%s", got, strings.Join(s.log, "\n"))
	}
	s.converged(ctx)
}

// coalescing: k versions stored while a target's delivery is blocked cost
// at most two requests once it unblocks.
func TestCoalescing(t *testing.T) {
	t.Parallel()
	for _, target := range systems {
		t.Run(target, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, 5)
			rid := "co-" + target
			s := w.newSched(t, rid)
			ctx := context.Background()
			other := sysSX
			if target == sysSX {
				other = sysNS
			}
			release := make(chan struct{})
			blocked := make(chan struct{})
			var once sync.Once
			s.echo = func(sys, _ string, _, _ uint64, _ map[string]json.RawMessage) {
				if sys == target {
					once.Do(func() { close(blocked); <-release })
				}
			}
			s.edit(other, rid, vals("v", 0), at(0), true)
			s.mergeOne(ctx, other, false)
			done := make(chan struct{})
			go func() { defer close(done); s.deliverOne(ctx, target, false) }()
			<-blocked
			for i := 1; i < 50; i++ {
				s.edit(other, rid, vals("v", i, fmt.Sprintf("f%d", i%7), i), at(i), true)
				s.mergeOne(ctx, other, false)
			}
			before := s.requestsTo(target)
			close(release)
			<-done
			s.drain(ctx, 200)
			t.Logf("%s: %d requests for 50 versions", target, s.requestsTo(target)-before+1)
			if got := s.requestsTo(target) - before + 1; got > 2 {
				t.Fatalf("%s got %d requests for 50 stored versions, want at most 2", target, got)
			}
			s.converged(ctx)
		})
	}
}

func (s *sched) requestsTo(target string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[target]
}

// The NetSuite share is enforced across every instance and Retry together.
func TestNetSuiteConcurrencyShareAcrossInstances(t *testing.T) {
	t.Parallel()
	const share = 3
	w := newWorld(t, share)
	var inFlight, peak atomic.Int32
	w.nsFake.Hook = func(req netsuitefake.Request, apply func()) (int, string) {
		n := inFlight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(15 * time.Millisecond)
		apply()
		inFlight.Add(-1)
		return 0, ""
	}
	ids := make([]string, 32)
	for i := range ids {
		ids[i] = fmt.Sprintf("cs-%02d", i)
	}
	s := w.newSched(t, ids...)
	ctx := context.Background()
	for i, id := range ids {
		s.edit(sysSX, id, vals("n", i), at(i), true)
		s.mergeOne(ctx, sysSX, false)
	}
	runners := []*sink.Runner{w.runner[sysNS], w.newRunner(sysNS, w.nsURL, w.sxURL, share), w.newRunner(sysNS, w.nsURL, w.sxURL, share)}
	msgs := s.mergedQ[sysNS]
	var wg sync.WaitGroup
	errs := make(chan error, len(msgs))
	for i, m := range msgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := runners[i%len(runners)].Deliver(ctx, m); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("delivery failed: %v", err)
	}
	t.Logf("peak in flight %d of share %d", peak.Load(), share)
	if p := peak.Load(); p > share || p < 2 {
		t.Fatalf("peak NetSuite requests in flight %d, share %d", p, share)
	}
	for i, id := range ids {
		if got := s.view(sysNS, id)["n"]; got != fmt.Sprint(i) {
			t.Errorf("record %s: NetSuite holds n=%s", id, got)
		}
	}
}

// A 429 waits for Retry-After and tries again within the same delivery;
// the version field tells NetSuite which version it holds.
func TestNetSuite429WaitsForRetryAfter(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 5)
	var calls atomic.Int32
	var bodies [][]byte
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
		if calls.Add(1) == 1 {
			rw.Header().Set("Retry-After", "1")
			rw.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(rw, netsuitefake.Error(429, "CONCURRENCY_LIMIT_EXCEEDED", "busy"))
			return
		}
		rw.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	tgt, err := netsuite.New(config.NetSuite{AccountID: wAccount, BaseURL: srv.URL, Auth: "tba",
		ConsumerKey: wConsumerKey, ConsumerSecret: wConsumerSecret, TokenID: wTokenID, TokenSecret: wTokenSecret,
		Timeout: 5 * time.Second, MaxConcurrency: 2, VersionField: "custentity_bb_version"})
	if err != nil {
		t.Fatal(err)
	}
	r := sink.NewRunner(config.Sandbox, tgt, w.store, nil)
	s := w.newSched(t, "ra-1")
	ctx := context.Background()
	s.edit(sysSX, "ra-1", vals("f", 1), at(1), true)
	s.mergeOne(ctx, sysSX, false)
	start := time.Now()
	outcome, err := r.Deliver(ctx, s.mergedQ[sysNS][0])
	if err != nil || outcome != store.OutcomeDelivered {
		t.Fatalf("Deliver: %s %v", outcome, err)
	}
	if calls.Load() != 2 || time.Since(start) < time.Second {
		t.Fatalf("%d requests in %s: want the 429 waited out (1 s) and one more request", calls.Load(), time.Since(start))
	}
	var body map[string]json.RawMessage
	_ = json.Unmarshal(bodies[1], &body)
	if string(body["custentity_bb_version"]) != "1" || string(body["f"]) != "1" {
		t.Fatalf("upsert body %s: want f and the version field set to 1", bodies[1])
	}
	trail, err := w.store.AuditTrail(ctx, wRecordType, "ra-1")
	if err != nil {
		t.Fatal(err)
	}
	var outcomes []string
	for _, a := range trail {
		if a.Stage == store.StageNetSuite {
			outcomes = append(outcomes, a.Outcome)
		}
	}
	if strings.Join(outcomes, ",") != "sending,refused,sending,delivered" {
		t.Fatalf("NetSuite audit rows %v", outcomes)
	}
}

// While the store is unreachable the sink nacks instead of parking the
// message: an outage must not spend the message's attempts (SPEC §6).
func TestSinkNacksWhileTheStoreIsUnreachable(t *testing.T) {
	t.Parallel()
	// Nothing listens on port 1: every statement fails to connect.
	db, closeDB, err := mysql.Open(context.Background(), config.DB{DSN: "root@tcp(127.0.0.1:1)/nodb?timeout=200ms", MaxOpenConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	tgt, err := suitex.New(config.SuiteX{BaseURL: "http://127.0.0.1:1", SigningSecret: "x", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var reported atomic.Int32
	h, err := sink.NewHandler(sink.Deps{Runner: sink.NewRunner(config.Sandbox, tgt, mysql.New(db, closeDB), nil),
		Reporter: reporterFunc(func(context.Context, event.Error) (string, error) { reported.Add(1); return "e1", nil })})
	if err != nil {
		t.Fatal(err)
	}
	ev := merged("customer", "C-1", "netsuite", 1)
	if err := h(context.Background(), msg(t, config.Sandbox, ev)); err == nil {
		t.Fatal("the handler acked while the store was unreachable")
	}
	if reported.Load() != 0 {
		t.Fatal("the failure was parked on the error topic instead of nacked")
	}
}

type reporterFunc func(context.Context, event.Error) (string, error)

func (f reporterFunc) Report(ctx context.Context, e event.Error) (string, error) { return f(ctx, e) }

// A CloudEvent the backbone must not act on is bad input at the sinks too:
// rejected with the decoder's reason, nothing delivered.
func TestSinkRejectsForeignCloudEvents(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 5)
	m := message.Message{ID: "ce-1", Invalid: &message.Invalid{Reason: message.ReasonUnexpectedEventType,
		Detail: "type com.example.other", Data: []byte(`{"id":"x"}`)}}
	for _, sys := range systems {
		outcome, err := w.runner[sys].Deliver(context.Background(), m)
		f, ok := failure.As(err)
		if outcome != store.OutcomeRejected || !ok || f.Retryable || f.Reason != message.ReasonUnexpectedEventType {
			t.Fatalf("%s: %s %v, want rejected unexpected_event_type", sys, outcome, err)
		}
	}
	if len(w.nsFake.Requests())+len(w.sxFake.Requests()) != 0 {
		t.Fatal("a foreign CloudEvent reached a target")
	}
}

// A stress record's merged message, however it got onto the topic, is
// refused: nothing stress writes ever reaches a target.
func TestSinkRefusesStressRecords(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 5)
	ev := merged(event.StressRecordType, "S-1", "netsuite", 1)
	for _, sys := range systems {
		outcome, err := w.runner[sys].Deliver(context.Background(), msg(t, config.Sandbox, ev))
		f, ok := failure.As(err)
		if outcome != store.OutcomeRejected || !ok || f.Retryable || f.Reason != sink.ReasonReservedRecordType {
			t.Fatalf("%s: %s %v, want rejected %s", sys, outcome, err, sink.ReasonReservedRecordType)
		}
	}
	if len(w.nsFake.Requests())+len(w.sxFake.Requests()) != 0 {
		t.Fatal("a stress record reached a target")
	}
}
