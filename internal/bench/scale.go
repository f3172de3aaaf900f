package bench

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/merge"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/record"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql"
)

// ScalePoint is the cost of a merge on records with a given history, and
// of delivering the merged event to the other system.
type ScalePoint struct {
	PriorEvents int     `json:"prior_events"`
	Records     int     `json:"records"`
	Latency     Latency `json:"latency"`
	// DeliveryLatency is the Runner's delivery of each measured merge's
	// event to the other system (a target that accepts everything).
	DeliveryLatency Latency `json:"delivery_latency"`
	// Statements are the merge's alone (the delivery's are not counted).
	Statements Statements `json:"statements"`
}

// Scale is the history-length curve.
type Scale struct {
	Points []ScalePoint `json:"points"`
	// Ratio is the mean merge cost at the longest history over the
	// shortest; RatioP50 the same for the medians.
	Ratio    float64 `json:"ratio_mean"`
	RatioP50 float64 `json:"ratio_p50"`
	// DeliveryRatio and DeliveryRatioP50 are the same for the deliveries.
	DeliveryRatio    float64 `json:"delivery_ratio_mean"`
	DeliveryRatioP50 float64 `json:"delivery_ratio_p50"`
	// SeedSeconds is how long seeding the histories took.
	SeedSeconds float64 `json:"seed_seconds"`
	// Warnings counts the engine's and the runners' warnings during the
	// measured merges and deliveries (a rebuilt state, anything
	// unexpected): it must be 0, or the curve did not measure the normal
	// path.
	Warnings     int    `json:"engine_warnings"`
	FirstWarning string `json:"first_warning,omitempty"`
}

// ScaleOptions configure MeasureScale.
type ScaleOptions struct {
	Priors  []int // histories, e.g. 10, 1000, 10000
	Records int   // records per history length
	Merges  int   // measured merges per history length
	Counted int   // merges per history length in the counted pass
	Env     config.Env
	Sources []string
}

// MeasureScale seeds records with each history length through db (bulk
// inserts), then merges on them one at a time through the engine over st and
// times each merge. Publishing is a no-op here: its cost does not depend on
// the history, and leaving it out keeps the ratio about the store. The
// message the engine published is then delivered to the other system (the
// one that did not send the event: it lacks the fields just changed) by a
// sink.Runner over st with a target that accepts everything, and that
// delivery is timed separately; it must end delivered. It writes the
// sending and delivered rows the seed wrote for every earlier event.
//
// Each record's history alternates NetSuite and SuiteX, both changing email,
// and every event was delivered to the other system — so each measured
// merge (the other source's turn, as in the history) has an echo candidate
// and runs the delivery lookup too: the most history-dependent path.
//
// Seeding stores no folded state (the engine's private format is the
// engine's business): the first merge of each record, not timed, makes the
// engine rebuild the state from the events and store it, as it does for
// events appended by another tool. From then on it is the normal path.
// counted, if set, is the same engine over a counting connection; proxy
// counts its statements, those of each merge alone (the deliveries go
// through st, and the counts are read around each merge only).
func MeasureScale(ctx context.Context, db *sql.DB, st, counted store.Store, proxy *Proxy, o ScaleOptions) (Scale, error) {
	var sc Scale
	type rec struct {
		id      string
		version uint64
	}
	levels := make([][]*rec, len(o.Priors))
	start := time.Now()
	for i, p := range o.Priors {
		for k := range o.Records {
			r := &rec{id: fmt.Sprintf("scale-%d-%d", p, k), version: uint64(p)}
			if err := seedHistory(ctx, db, r.id, p); err != nil {
				return sc, err
			}
			levels[i] = append(levels[i], r)
		}
	}
	sc.SeedSeconds = round3(time.Since(start).Seconds())

	warn := &warnCounter{}
	log := slog.New(warn)
	// The engine publishes through the guard (which stamps the env
	// attribute the runner checks) to a no-op that keeps the message.
	var published lastPublished
	nop := publish.Guard(o.Env, publish.Func(func(_ context.Context, _ string, m publish.Message) (string, error) {
		published.set(m)
		return "nop", nil
	}))
	eng := merge.New(st, nop, o.Env, o.Sources, log)
	runners := map[string]*sink.Runner{}
	for _, stage := range []string{store.StageNetSuite, store.StageSuiteX} {
		runners[stage] = sink.NewRunner(o.Env, acceptAll(stage), st, log)
	}
	seq := 0
	// one merges the next event on r through eng and delivers it to the
	// other system; it returns both durations. With merged set, it adds the
	// proxy's counts of the merge alone to it.
	one := func(eng *merge.Engine, r *rec, merged *Counts) (time.Duration, time.Duration, error) {
		seq++
		src, other := store.StageNetSuite, store.StageSuiteX
		if r.version%2 == 1 {
			src, other = store.StageSuiteX, store.StageNetSuite
		}
		e := Event{RecordID: r.id, Source: src, Base: r.version, Seq: seq}
		m := message.Message{Data: e.Raw(uuid.NewString()), ID: fmt.Sprintf("scale-%d", seq), Attributes: map[string]string{}}
		published.reset()
		var before Counts
		if merged != nil {
			before = proxy.Counts()
		}
		t := time.Now()
		res, err := eng.Process(ctx, m)
		dm := time.Since(t)
		if merged != nil {
			*merged = merged.Add(proxy.Counts().Sub(before))
		}
		if err != nil {
			return dm, 0, fmt.Errorf("merge on %s (history %d): %w", r.id, r.version, err)
		}
		if res.Outcome != store.OutcomeAccepted && res.Outcome != store.OutcomeMerged {
			return dm, 0, fmt.Errorf("merge on %s (history %d): outcome %s, want accepted", r.id, r.version, res.Outcome)
		}
		r.version++
		pm, ok := published.get()
		if !ok || pm.Attributes[event.AttrEventID] != res.EventID {
			return dm, 0, fmt.Errorf("merge on %s (history %d): event %s was not the last message published (got %q)",
				r.id, r.version-1, res.EventID, pm.Attributes[event.AttrEventID])
		}
		// What the other system's sink does with the merged message: its
		// sending and delivered rows keep the history as the seed made it.
		mm := message.Message{ID: fmt.Sprintf("scale-merged-%d", seq), Data: pm.Data, Attributes: pm.Attributes, OrderingKey: pm.OrderingKey}
		t = time.Now()
		outcome, err := runners[other].Deliver(ctx, mm)
		dd := time.Since(t)
		if err != nil {
			return dm, dd, fmt.Errorf("delivery of %s (history %d) to %s: outcome %s: %w", r.id, r.version-1, other, outcome, err)
		}
		if outcome != store.OutcomeDelivered {
			return dm, dd, fmt.Errorf("delivery of %s (history %d) to %s: outcome %s, want %s", r.id, r.version-1, other, outcome, store.OutcomeDelivered)
		}
		return dm, dd, nil
	}
	// Warm-up: two merges per record and their deliveries, one to each
	// system. The first merge rebuilds and stores the state; the first
	// delivery to each system reads the seeded history whole (it has no
	// known-state checkpoint yet, as after an upgrade) and writes one. The
	// curve is what every later merge and delivery costs.
	for range 2 {
		for _, lv := range levels {
			for _, r := range lv {
				if _, _, err := one(eng, r, nil); err != nil {
					return sc, err
				}
			}
		}
	}
	warn.reset()
	lat := make([][]time.Duration, len(levels))
	dlat := make([][]time.Duration, len(levels))
	for i := range o.Merges {
		// Interleave the history lengths, rotating who goes first, so that
		// background noise on a shared machine falls on all of them alike.
		for j := range levels {
			k := (i + j) % len(levels)
			r := levels[k][i%len(levels[k])]
			dm, dd, err := one(eng, r, nil)
			if err != nil {
				return sc, err
			}
			lat[k] = append(lat[k], dm)
			dlat[k] = append(dlat[k], dd)
		}
	}
	sc.Warnings, sc.FirstWarning = warn.get()
	for k, p := range o.Priors {
		sc.Points = append(sc.Points, ScalePoint{PriorEvents: p, Records: o.Records, Latency: Summarize(lat[k]), DeliveryLatency: Summarize(dlat[k])})
	}
	if counted != nil && proxy != nil && o.Counted > 0 {
		ceng := merge.New(counted, nop, o.Env, o.Sources, log)
		for k := range levels {
			// The deliveries run as in the measured pass (over st, not
			// through the proxy), and only the merges' statements are
			// summed: the count is the merge's alone.
			d := Counts{ByKind: map[string]int64{}}
			for i := range o.Counted {
				if _, _, err := one(ceng, levels[k][i%len(levels[k])], &d); err != nil {
					return sc, err
				}
			}
			s, err := PerEvent(d, o.Counted)
			if err != nil {
				return sc, err
			}
			sc.Points[k].Statements = s
		}
	}
	sc.Ratio, sc.RatioP50 = scaleRatios(sc.Points, func(p ScalePoint) Latency { return p.Latency })
	sc.DeliveryRatio, sc.DeliveryRatioP50 = scaleRatios(sc.Points, func(p ScalePoint) Latency { return p.DeliveryLatency })
	return sc, nil
}

// scaleRatios are the mean and median of the longest history's latency
// (of) over the shortest's; 0 when there is no such pair.
func scaleRatios(ps []ScalePoint, of func(ScalePoint) Latency) (mean, p50 float64) {
	n := len(ps)
	if n < 2 {
		return 0, 0
	}
	first, last := of(ps[0]), of(ps[n-1])
	if first.MeanMS <= 0 || first.P50MS <= 0 {
		return 0, 0
	}
	return round3(last.MeanMS / first.MeanMS), round3(last.P50MS / first.P50MS)
}

// acceptAll is a sink.Target that has every delivery: the curve times the
// Runner's bookkeeping, not a system's answer.
type acceptAll string

func (t acceptAll) Name() string                                 { return string(t) }
func (t acceptAll) Deliver(context.Context, sink.Delivery) error { return nil }

// lastPublished keeps the last message published (the engine publishes on
// its caller's goroutine; the lock keeps that an implementation detail).
type lastPublished struct {
	mu sync.Mutex
	m  publish.Message
	ok bool
}

func (l *lastPublished) set(m publish.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m, l.ok = m, true
}

func (l *lastPublished) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m, l.ok = publish.Message{}, false
}

func (l *lastPublished) get() (publish.Message, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m, l.ok
}

// seedHistory appends prior events to record rid in bulk, as the backbone
// would have written them: sources alternating, both changing email and a
// field of their own; each event audited accepted with the fields its
// source reported, and delivered to the other system (a sending row and a
// delivered row with the fields sent); the record's projection row last.
func seedHistory(ctx context.Context, db *sql.DB, rid string, prior int) error {
	const batch = 1000
	ts := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	st := record.Empty()
	fieldSet := func(fs store.FieldSet) string {
		b, _ := json.Marshal(fs)
		return string(b)
	}
	for from := 0; from < prior; from += batch {
		to := min(prior, from+batch)
		var (
			evRows, auRows []string
			evArgs, auArgs []any
		)
		for v := from; v < to; v++ {
			src, other, own := "netsuite", "suitex", "credit_limit"
			if v%2 == 1 {
				src, other, own = "suitex", "netsuite", "nickname"
			}
			id := uuid.NewString()
			at := ts.Add(time.Duration(v) * time.Second)
			changes := map[string]json.RawMessage{
				"email": json.RawMessage(fmt.Sprintf(`"seed-%d@example.com"`, v)),
				own:     json.RawMessage(strconv.Itoa(v)),
			}
			cj, _ := json.Marshal(changes)
			st = st.Apply(store.Event{ID: id, RecordType: RecordType, RecordID: rid, Source: src, Timestamp: at, BaseVersion: uint64(v)}, changes)
			digests := record.Digests(changes)
			fp := event.HashHex([]byte(id))
			sending := mysql.NewAuditID()
			evRows = append(evRows, "(?, ?, ?, ?, ?, ?, ?, 1)")
			evArgs = append(evArgs, id, RecordType, rid, src, at, v, string(cj))
			auRows = append(auRows, "(?, ?, ?, ?, ?, 'accepted', 'merge', ?, ?, ?, ?)",
				"(?, ?, ?, ?, ?, 'sending', ?, ?, NULL, ?, ?)", "(?, ?, ?, ?, ?, 'delivered', ?, ?, NULL, ?, ?)")
			auArgs = append(auArgs,
				mysql.NewAuditID(), id, fp, RecordType, rid, v+1, src, fieldSet(store.FieldSet{Base: uint64(v), Fields: digests}), at,
				sending, id, fp, RecordType, rid, other, v+1, fieldSet(store.FieldSet{Fields: digests}), at.Add(time.Millisecond),
				mysql.NewAuditID(), id, fp, RecordType, rid, other, v+1, fieldSet(store.FieldSet{Attempt: sending, Fields: digests}), at.Add(2*time.Millisecond))
		}
		if _, err := db.ExecContext(ctx, "INSERT INTO events (id, record_type, record_id, source, `timestamp`, base_version, changes, processed) VALUES "+
			strings.Join(evRows, ","), evArgs...); err != nil {
			return fmt.Errorf("seed %s events %d-%d: %w", rid, from, to, err)
		}
		if _, err := db.ExecContext(ctx, "INSERT INTO event_audit_log (id, event_id, fingerprint, record_type, record_id, processing_outcome, stage, version, source, fields, created_at) VALUES "+
			strings.Join(auRows, ","), auArgs...); err != nil {
			return fmt.Errorf("seed %s audit %d-%d: %w", rid, from, to, err)
		}
	}
	if prior == 0 {
		return nil
	}
	state, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO record_heads (record_type, record_id, version, event_id, state) VALUES (?, ?, ?, ?, ?)",
		RecordType, rid, st.Version, st.EventID, string(state)); err != nil {
		return fmt.Errorf("seed %s head: %w", rid, err)
	}
	return nil
}

// warnCounter is a slog handler that counts warnings and errors.
type warnCounter struct {
	mu    sync.Mutex
	n     int
	first string
}

func (w *warnCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (w *warnCounter) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	if w.first == "" {
		w.first = r.Message
	}
	return nil
}

func (w *warnCounter) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnCounter) WithGroup(string) slog.Handler      { return w }

func (w *warnCounter) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n, w.first = 0, ""
}

func (w *warnCounter) get() (int, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n, w.first
}

// scale is the run's history-length phase: MeasureScale in a scratch
// database, the engine over the production grant set, a counted pass
// through the proxy.
func (b *benchmark) scale(ctx context.Context) error {
	root, st, workerDSN, closeAll, err := b.scratchStore(ctx, "scale")
	if err != nil {
		return err
	}
	defer closeAll()
	proxy, pdsn, err := b.viaProxy(workerDSN)
	if err != nil {
		return err
	}
	defer proxy.Close()
	pdb, closeP, err := mysql.Open(ctx, config.DB{DSN: pdsn, MaxOpenConns: 4})
	if err != nil {
		return err
	}
	counted := mysql.New(pdb, closeP)
	defer counted.Close()
	b.printf("\nmerge cost against history length (sequential merges through the engine, publish a no-op; each merged event then delivered to the other system by its sink's runner, the target accepting everything)\n")
	sc, err := MeasureScale(ctx, root, st, counted, proxy, ScaleOptions{
		Priors: []int{10, 1000, 10000}, Records: 4, Merges: b.sizes.scaleMerges, Counted: 20, Env: b.o.Env, Sources: config.DefaultSources})
	if err != nil {
		return err
	}
	b.res.Scale = &sc
	for _, p := range sc.Points {
		b.printf("  %6d prior events: mean %.3f ms  p50 %.3f ms  p99 %.3f ms  (%d merges, %.2f statements/merge)\n",
			p.PriorEvents, p.Latency.MeanMS, p.Latency.P50MS, p.Latency.P99MS, p.Latency.Count, p.Statements.PerEvent)
		b.printf("  %6s   delivery:     mean %.3f ms  p50 %.3f ms  p99 %.3f ms  (%d deliveries)\n",
			"", p.DeliveryLatency.MeanMS, p.DeliveryLatency.P50MS, p.DeliveryLatency.P99MS, p.DeliveryLatency.Count)
	}
	longest, shortest := sc.Points[len(sc.Points)-1].PriorEvents, sc.Points[0].PriorEvents
	b.printf("  ratio %d/%d: mean %.3f, p50 %.3f (seeded in %.1fs)\n", longest, shortest, sc.Ratio, sc.RatioP50, sc.SeedSeconds)
	b.printf("  delivery ratio %d/%d: mean %.3f, p50 %.3f\n", longest, shortest, sc.DeliveryRatio, sc.DeliveryRatioP50)
	if sc.Warnings > 0 {
		b.fail("scale: the engine or the runners logged %d warnings during the measured merges and deliveries (first: %s): not the normal path", sc.Warnings, sc.FirstWarning)
	}
	return nil
}
