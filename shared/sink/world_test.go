package sink_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/internal/fake/netsuitefake"
	"github.com/backbone-sync/backbone/internal/fake/suitexfake"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/merge"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/record"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/sink/netsuite"
	"github.com/backbone-sync/backbone/shared/sink/suitex"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// The world is the whole sync in one process, against MariaDB and the two
// HTTP fakes, driven step by step: sources edit, raw events are merged,
// merged messages are delivered, failures are parked and retried, dead
// letters are redriven. A test owns the order of every step, so a schedule
// is deterministic; the fakes' hooks let a target fail, apply and then
// fail, or re-emit what it was sent while the request is still in flight.

const (
	sysNS = store.StageNetSuite
	sysSX = store.StageSuiteX
)

var systems = []string{sysNS, sysSX}

// Credentials the fakes check.
const (
	wAccount        = "123456_SB1"
	wConsumerKey    = "ck-world"
	wConsumerSecret = "cs-world-secret"
	wTokenID        = "tk-world"
	wTokenSecret    = "ts-world-secret"
	wSuiteXSecret   = "sx-world-secret"
	wRecordType     = "customer"
)

// plan says how a target answers the next request for a record.
type plan int

const (
	planOK        plan = iota
	planFail           // 503 before applying
	planApplyFail      // applies, then answers 504 (a timeout after apply)
	planRefuse         // 400 without applying
)

// world is shared by the schedules of one test; each schedule owns its
// records, and the fakes route hooks to the schedule owning the record.
type world struct {
	t      testing.TB
	db     *mysqltest.DB
	store  store.Store
	engine *merge.Engine
	nsFake *netsuitefake.Server
	sxFake *suitexfake.Server
	runner map[string]*sink.Runner
	nsURL  string
	sxURL  string

	mu     sync.Mutex
	owners map[string]*sched // record id -> schedule
}

func newWorld(t testing.TB, maxConcurrency int) *world {
	t.Helper()
	d := mysqltest.New(t)
	w := &world{t: t, db: d, store: d.Store, owners: map[string]*sched{}, runner: map[string]*sink.Runner{}}
	w.engine = merge.New(d.Store, publish.Guard(config.Sandbox, publish.Func(w.publish)), config.Sandbox, config.DefaultSources, nil)
	w.nsFake = &netsuitefake.Server{Account: wAccount, ConsumerKey: wConsumerKey, ConsumerSecret: wConsumerSecret,
		TokenID: wTokenID, TokenSecret: wTokenSecret}
	w.nsFake.Hook = func(req netsuitefake.Request, apply func()) (int, string) {
		v, _ := strconv.ParseUint(req.Header.Get(netsuite.HeaderVersion), 10, 64)
		var fields map[string]json.RawMessage
		_ = json.Unmarshal(req.Body, &fields)
		return w.owner(req.ExternalID).hook(sysNS, req.ExternalID, v, fields, apply)
	}
	w.sxFake = &suitexfake.Server{Secret: wSuiteXSecret}
	w.sxFake.Hook = func(req suitexfake.Request, apply func()) (int, string) {
		var ev struct {
			RecordID string                     `json:"record_id"`
			Version  uint64                     `json:"version"`
			Changes  map[string]json.RawMessage `json:"changes"`
		}
		_ = json.Unmarshal(req.Body, &ev)
		return w.owner(ev.RecordID).hook(sysSX, ev.RecordID, ev.Version, ev.Changes, apply)
	}
	nsSrv, sxSrv := w.nsFake.Start(t), w.sxFake.Start(t)
	w.nsURL, w.sxURL = nsSrv.URL, sxSrv.URL
	w.runner[sysNS] = w.newRunner(sysNS, nsSrv.URL, sxSrv.URL, maxConcurrency)
	w.runner[sysSX] = w.newRunner(sysSX, nsSrv.URL, sxSrv.URL, maxConcurrency)
	return w
}

// newRunner builds one more Runner of target (another instance, or Retry's).
func (w *world) newRunner(target, nsURL, sxURL string, maxConcurrency int) *sink.Runner {
	w.t.Helper()
	var tgt sink.Target
	var err error
	if target == sysNS {
		tgt, err = netsuite.New(config.NetSuite{AccountID: wAccount, BaseURL: nsURL, Auth: "tba",
			ConsumerKey: wConsumerKey, ConsumerSecret: wConsumerSecret, TokenID: wTokenID, TokenSecret: wTokenSecret,
			Timeout: 10 * time.Second, MaxConcurrency: maxConcurrency})
	} else {
		tgt, err = suitex.New(config.SuiteX{BaseURL: sxURL, SigningSecret: wSuiteXSecret, Timeout: 10 * time.Second})
	}
	if err != nil {
		w.t.Fatal(err)
	}
	return sink.NewRunner(config.Sandbox, tgt, w.store, nil).CheckpointEvery(*worldCheckpointEvery)
}

// worldCheckpointEvery is small, unlike production's, so that the
// schedules' short histories cross known-state checkpoints often: the
// convergence test then covers deliveries that read through one.
var worldCheckpointEvery = flag.Int("world.checkpoint", 3, "rows since a known-state checkpoint that make a world delivery write one (0: never)")

func (w *world) owner(rid string) *sched {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.owners[rid]
	if s == nil {
		panic("no schedule owns record " + rid)
	}
	return s
}

// publish is the merged topic: every merged message goes to both sinks'
// queues of the schedule owning the record.
func (w *world) publish(_ context.Context, topic string, m publish.Message) (string, error) {
	if !strings.HasPrefix(topic, "events.merged.") {
		return "", fmt.Errorf("unexpected topic %s", topic)
	}
	_, rid, _ := strings.Cut(m.OrderingKey, ":")
	s := w.owner(rid)
	id := uuid.NewString()
	msg := message.Message{Data: m.Data, Attributes: m.Attributes, ID: id, OrderingKey: m.OrderingKey}
	s.mu.Lock()
	for _, sys := range systems {
		s.mergedQ[sys] = append(s.mergedQ[sys], msg)
	}
	s.published++
	s.mu.Unlock()
	return id, nil
}

// parked is a failed delivery waiting for Retry.
type parked struct {
	m        message.Message
	attempts int
	reason   string
}

// sched is one schedule: its records, queues and the systems' local state.
type sched struct {
	t       testing.TB
	w       *world
	records []string
	log     []string
	clock   int

	mu        sync.Mutex
	rawQ      map[string][]message.Message                                                      // per source
	mergedQ   map[string][]message.Message                                                      // per target
	retryQ    map[string][]parked                                                               // per target
	dead      map[string][]parked                                                               // per target
	base      map[string]uint64                                                                 // system + "/" + record -> version the system holds
	plans     map[string][]plan                                                                 // per target: answers to the next requests
	echo      func(sys, rid string, version, oldBase uint64, fields map[string]json.RawMessage) // decides echoes
	poisoned  bool
	published int
	requests  map[string]int // per target
}

func (w *world) newSched(t testing.TB, records ...string) *sched {
	s := &sched{t: t, w: w, records: records,
		rawQ: map[string][]message.Message{}, mergedQ: map[string][]message.Message{},
		retryQ: map[string][]parked{}, dead: map[string][]parked{}, base: map[string]uint64{},
		plans: map[string][]plan{}, requests: map[string]int{}}
	w.mu.Lock()
	for _, r := range records {
		w.owners[r] = s
	}
	w.mu.Unlock()
	return s
}

func (s *sched) logf(format string, a ...any) {
	s.mu.Lock()
	s.log = append(s.log, fmt.Sprintf(format, a...))
	s.mu.Unlock()
}

// hook is both fakes' answer to a request for one of this schedule's records.
func (s *sched) hook(sys, rid string, version uint64, fields map[string]json.RawMessage, apply func()) (int, string) {
	s.mu.Lock()
	s.requests[sys]++
	p := planOK
	if q := s.plans[sys]; len(q) > 0 {
		p, s.plans[sys] = q[0], q[1:]
	}
	_, hasPoison := fields["p"]
	poisoned := s.poisoned && hasPoison
	oldBase := s.base[sys+"/"+rid]
	echo := s.echo
	s.mu.Unlock()
	delete(fields, "backbone_version")
	if poisoned {
		p = planRefuse
	}
	s.logf("  %s receives %s v%d %s -> %s", sys, rid, version, fmtFields(fields), planName(p))
	switch p {
	case planFail:
		return http.StatusServiceUnavailable, `{"error":"unavailable"}`
	case planRefuse:
		if sys == sysNS {
			return http.StatusBadRequest, netsuitefake.Error(400, "INVALID_FLD_VALUE", "field p refused")
		}
		return http.StatusBadRequest, `{"error":"field p refused"}`
	}
	apply()
	s.mu.Lock()
	if version > s.base[sys+"/"+rid] {
		s.base[sys+"/"+rid] = version
	}
	s.mu.Unlock()
	if echo != nil {
		echo(sys, rid, version, oldBase, fields)
	}
	if p == planApplyFail {
		return http.StatusGatewayTimeout, `{"error":"timeout"}`
	}
	return 0, ""
}

// edit is a change a system makes itself: applied to its copy, published
// as a raw event on the base it holds.
func (s *sched) edit(sys, rid string, changes map[string]json.RawMessage, ts time.Time, withID bool) message.Message {
	if sys == sysNS {
		s.w.nsFake.Edit(wRecordType, rid, changes)
	} else {
		s.w.sxFake.Edit(wRecordType, rid, changes)
	}
	s.mu.Lock()
	b := s.base[sys+"/"+rid]
	s.mu.Unlock()
	return s.emit(sys, rid, b, changes, ts, withID)
}

// emit queues a raw event from sys.
func (s *sched) emit(sys, rid string, base uint64, changes map[string]json.RawMessage, ts time.Time, withID bool) message.Message {
	raw := map[string]any{"record_type": wRecordType, "record_id": rid, "source": sys,
		"timestamp": ts.UTC().Format(time.RFC3339Nano), "base_version": base, "changes": changes}
	if withID {
		raw["id"] = uuid.NewString()
	}
	data, err := json.Marshal(raw)
	if err != nil {
		panic(err)
	}
	m := message.Message{Data: data, ID: uuid.NewString(), Attributes: map[string]string{"env": string(config.Sandbox)},
		OrderingKey: wRecordType + ":" + rid}
	s.mu.Lock()
	s.rawQ[sys] = append(s.rawQ[sys], m)
	s.mu.Unlock()
	s.logf("%s emits %s %s base %d ts %s", sys, rid, fmtFields(changes), base, ts.Format("15:04:05"))
	return m
}

// mergeOne merges the next raw event of sys; redeliver puts it back too.
func (s *sched) mergeOne(ctx context.Context, sys string, redeliver bool) bool {
	s.mu.Lock()
	q := s.rawQ[sys]
	if len(q) == 0 {
		s.mu.Unlock()
		return false
	}
	m := q[0]
	s.rawQ[sys] = q[1:]
	if redeliver {
		s.rawQ[sys] = append([]message.Message{m}, s.rawQ[sys]...)
	}
	s.mu.Unlock()
	s.mergeMsg(ctx, sys, m)
	return true
}

func (s *sched) mergeMsg(ctx context.Context, sys string, m message.Message) {
	res, err := s.w.engine.Process(ctx, m)
	if err != nil {
		if f, ok := failure.As(err); ok && f.Reason == merge.ReasonVersionGap {
			s.mu.Lock()
			s.rawQ[sys] = append(s.rawQ[sys], m)
			s.mu.Unlock()
			return
		}
		s.fatalf("merge of %s: %v", sys, err)
	}
	s.logf("  merge %s %s -> %s v%d %s", sys, res.RecordID, res.Outcome, res.Version, conflictNames(res.Conflicts))
}

// deliverOne delivers the next merged message to target.
func (s *sched) deliverOne(ctx context.Context, target string, redeliver bool) bool {
	s.mu.Lock()
	q := s.mergedQ[target]
	if len(q) == 0 {
		s.mu.Unlock()
		return false
	}
	m := q[0]
	s.mergedQ[target] = q[1:]
	if redeliver {
		s.mergedQ[target] = append(s.mergedQ[target], m)
	}
	s.mu.Unlock()
	s.deliver(ctx, target, parked{m: m})
	return true
}

// retryOne re-runs the oldest parked failure of target, as Retry does.
func (s *sched) retryOne(ctx context.Context, target string) bool {
	s.mu.Lock()
	q := s.retryQ[target]
	if len(q) == 0 {
		s.mu.Unlock()
		return false
	}
	p := q[0]
	s.retryQ[target] = q[1:]
	s.mu.Unlock()
	p.attempts++
	s.deliver(ctx, target, p)
	return true
}

// redrive puts every dead letter of target back through a delivery.
func (s *sched) redrive(ctx context.Context, target string) {
	s.mu.Lock()
	q := s.dead[target]
	s.dead[target] = nil
	s.mu.Unlock()
	for _, p := range q {
		s.logf("redrive %s (%s)", target, p.reason)
		s.deliver(ctx, target, parked{m: p.m})
	}
}

func (s *sched) deliver(ctx context.Context, target string, p parked) {
	outcome, err := s.w.runner[target].Deliver(ctx, p.m)
	s.logf("  deliver to %s -> %s", target, outcome)
	if err == nil {
		return
	}
	f, ok := failure.As(err)
	if !ok {
		s.fatalf("delivery error is not a failure: %v", err)
	}
	p.reason = f.Reason
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Retryable && p.attempts < 5 {
		s.retryQ[target] = append(s.retryQ[target], p)
		return
	}
	s.dead[target] = append(s.dead[target], p)
}

func (s *sched) fatalf(format string, a ...any) {
	s.t.Helper()
	s.t.Fatalf("%s\nschedule:\n%s", fmt.Sprintf(format, a...), strings.Join(s.log, "\n"))
}

// busy says whether anything is still queued.
func (s *sched) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sys := range systems {
		if len(s.rawQ[sys])+len(s.mergedQ[sys])+len(s.retryQ[sys]) > 0 {
			return true
		}
	}
	return false
}

// drain runs every queue to empty in a fixed order (merges first, then
// deliveries, then retries), at most limit steps.
func (s *sched) drain(ctx context.Context, limit int) {
	for i := 0; i < limit; i++ {
		progressed := false
		for _, sys := range systems {
			for s.mergeOne(ctx, sys, false) {
				progressed = true
			}
		}
		for _, sys := range systems {
			if s.deliverOne(ctx, sys, false) || s.retryOne(ctx, sys) {
				progressed = true
			}
		}
		if !progressed && !s.busy() {
			return
		}
	}
	s.fatalf("queues did not drain in %d rounds", limit)
}

// view is a system's copy of a record, nulls dropped (null clears).
func (s *sched) view(sys, rid string) map[string]string {
	var rec map[string]json.RawMessage
	if sys == sysNS {
		rec = s.w.nsFake.Record(wRecordType, rid)
	} else {
		rec = s.w.sxFake.Record(wRecordType, rid)
	}
	out := map[string]string{}
	for f, v := range rec {
		if f == "backbone_version" || string(v) == "null" {
			continue
		}
		out[f] = string(mustCanon(v))
	}
	return out
}

// storeView is the store's folded state of a record, nulls dropped, after
// checking that the state the merge keeps equals a fold of the events.
func (s *sched) storeView(ctx context.Context, rid string) map[string]string {
	evs, err := s.w.store.History(ctx, wRecordType, rid)
	if err != nil {
		s.fatalf("history: %v", err)
	}
	folded, err := record.Fold(evs)
	if err != nil {
		s.fatalf("fold: %v", err)
	}
	head, err := s.w.store.Head(ctx, wRecordType, rid)
	if err != nil {
		s.fatalf("head: %v", err)
	}
	if kept, ok := record.Parse(head); ok {
		for f, fs := range folded.Fields {
			if k := kept.Fields[f]; k == nil || string(k.Value) != string(fs.Value) {
				s.fatalf("record %s field %s: the merge's state differs from the fold of the events", rid, f)
			}
		}
	}
	for _, ev := range evs {
		if !ev.Processed {
			s.fatalf("record %s: event %s (v%d) left processed = 0", rid, ev.ID, ev.Version())
		}
	}
	out := map[string]string{}
	for f, fs := range folded.Fields {
		if string(fs.Value) != "null" {
			out[f] = string(fs.Value)
		}
	}
	return out
}

// converged checks every record: both systems' copies equal the store.
func (s *sched) converged(ctx context.Context) {
	s.t.Helper()
	for _, rid := range s.records {
		want := s.storeView(ctx, rid)
		for _, sys := range systems {
			if got := s.view(sys, rid); !equalMaps(got, want) {
				s.fatalf("record %s: %s holds %v, the store %v", rid, sys, got, want)
			}
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func mustCanon(v json.RawMessage) []byte {
	c, err := event.Canonical(v)
	if err != nil {
		panic(err)
	}
	return c
}

func fmtFields(m map[string]json.RawMessage) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + string(m[k])
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func conflictNames(cs []event.Conflict) string {
	if len(cs) == 0 {
		return ""
	}
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.Field + ":" + c.Rule + "/" + c.Resolution
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func planName(p plan) string {
	return [...]string{"ok", "503", "apply+504", "400"}[p]
}

func vals(kv ...any) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for i := 0; i+1 < len(kv); i += 2 {
		b, err := json.Marshal(kv[i+1])
		if err != nil {
			panic(err)
		}
		out[kv[i].(string)] = b
	}
	return out
}

// checkpoints counts the known-state checkpoints the world's deliveries
// wrote.
func (w *world) checkpoints(t testing.TB) int {
	t.Helper()
	var n int
	if err := w.db.Root.QueryRow("SELECT COUNT(*) FROM event_audit_log WHERE stage IN (?, ?) AND state IS NOT NULL", sysNS, sysSX).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
