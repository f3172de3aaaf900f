package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/internal/bench"
	"github.com/backbone-sync/backbone/internal/devstack"
	"github.com/backbone-sync/backbone/internal/fake"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/logging"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql"
)

const benchDefaultServerDSN = "root@tcp(127.0.0.1:3306)/"

// benchOptions are the flags of `backbone bench`.
type benchOptions struct {
	env         config.Env
	timing      bench.Timing
	concurrency []int
	out         string
	quick       bool
	profile     bool
	skipScale   bool
	skipServe   bool
	countEvents int // events per counted pass
	scaleMerges int
	serveStarts int
	serveConc   int
}

func runBench(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "bench", "[--duration 4s] [--warmup 1s] [--quick] [--out bench-results] [--concurrency 1,4,16,64] [--profile] [--skip-scale] [--skip-serve]\n\n"+
		"Measures, in one run against one database server (EVENT_STORE_DSN, a privileged DSN; default "+benchDefaultServerDSN+"):\n"+
		"  a  the raw limit: the merge transaction's SQL (lock, dedup probe, two inserts) with plain database/sql\n"+
		"  b  the merge path: push requests to the Merge handler on an in-process HTTP server\n"+
		"  c  the full path: raw event published to events.raw until the other system's stand-in has it (the dev stack)\n"+
		"at each concurrency (events/s, p50/p99/max, CPU per event, SQL statements per event), then the ratios b/a\n"+
		"and c/a, an open-loop run at half of c's peak, the merge cost against history length, and the start-up\n"+
		"and peak RSS of `backbone serve`. Writes bench.json, bench.svg and bench.md to --out. Scratch databases\n"+
		"bench_<run>_* are created and dropped. Exits 1 if any measurement had errors (missed targets are reported, not failed).")
	duration := fs.Duration("duration", 4*time.Second, "measured window per point")
	warmup := fs.Duration("warmup", time.Second, "warm-up before each window (not recorded)")
	quick := fs.Bool("quick", false, "short run: 1.5s windows, 0.5s warm-up, fewer samples")
	out := fs.String("out", "bench-results", "directory for bench.json, bench.svg, bench.md (and profiles)")
	concList := fs.String("concurrency", "1,4,16,64", "concurrency levels, comma-separated")
	envName := fs.String("env", "sandbox", "environment the stacks run as")
	profile := fs.Bool("profile", false, "write CPU profiles (b and c at concurrency 16, the open loop) to --out")
	skipScale := fs.Bool("skip-scale", false, "skip the history-length curve")
	skipServe := fs.Bool("skip-serve", false, "skip the serve start-up and memory measurement")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("no arguments expected")
	}
	env, err := config.ParseEnv(*envName)
	if err != nil {
		return usageError{err.Error()}
	}
	o := benchOptions{env: env, timing: bench.Timing{Warmup: *warmup, Window: *duration}, out: *out, quick: *quick, profile: *profile,
		skipScale: *skipScale, skipServe: *skipServe, countEvents: 1000, scaleMerges: 150, serveStarts: 5, serveConc: 100}
	for _, s := range strings.Split(*concList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 256 {
			return usagef("--concurrency: %q is not a number in 1-256", s)
		}
		o.concurrency = append(o.concurrency, n)
	}
	if o.quick {
		o.timing = bench.Timing{Warmup: 500 * time.Millisecond, Window: 1500 * time.Millisecond}
		o.countEvents, o.scaleMerges, o.serveStarts = 300, 50, 3
	}
	if o.timing.Window <= 0 || o.timing.Warmup < 0 {
		return usagef("--duration must be positive and --warmup not negative")
	}
	dsn := c.getenv("EVENT_STORE_DSN")
	if dsn == "" {
		dsn = benchDefaultServerDSN
	}
	return benchRun(ctx, c, dsn, o)
}

// benchRun is one whole run. Every phase's failure is recorded and the run
// goes on, so one broken path does not hide the others' figures.
func benchRun(ctx context.Context, c *cli, serverDSN string, o benchOptions) error {
	started := time.Now()
	scratch, err := bench.NewScratch(ctx, serverDSN)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
		defer cancel()
		if err := scratch.Close(cctx); err != nil {
			fmt.Fprintf(c.stderr, "backbone bench: cleanup: %v\n", err)
		}
	}()
	serverPID := bench.FindServerPID()
	b := &benchSession{ctx: ctx, c: c, o: o, scratch: scratch,
		runner: bench.NewRunner(o.timing, serverPID),
		// The functions log as deployed (JSON, one line per message); the
		// lines are formatted, then discarded.
		log: logging.New(io.Discard, slog.LevelInfo),
		res: &bench.Result{Started: started.UTC(), Quick: o.quick, WarmupMS: o.timing.Warmup.Milliseconds(),
			WindowMS: o.timing.Window.Milliseconds(), Machine: bench.DescribeMachine(ctx, scratch.Server())}}
	m := b.res.Machine
	b.printf("backbone bench (run %s): %d × %s, %s, windows of %s after %s warm-up\n", scratch.RunID, m.NProc, m.CPUModel, m.Server, o.timing.Window, o.timing.Warmup)
	if stale, err := scratch.Stale(ctx); err == nil && len(stale) > 0 {
		b.note(fmt.Sprintf("%d scratch databases of earlier runs are still on the server (a run killed before its cleanup; they may also "+
			"belong to a run in progress): %s. Drop them with DROP DATABASE when no bench runs", len(stale), strings.Join(stale, ", ")))
	}
	switch list := scratch.ServerThreads(ctx); {
	case serverPID == 0:
		b.note("the database server is not a local process: its CPU per event is not measured")
	case list == nil:
		b.note("the database server does not report its connections' threads: its CPU is measured for the whole process only")
	default:
		b.runner.OwnThreads(list)
	}

	refusedBefore := refusedConnections(ctx, scratch.Server())
	b.phase("modes", b.benchModes)
	b.phase("burst", b.benchBurst)
	if !o.skipScale {
		b.phase("scale", b.benchScale)
	}
	if !o.skipServe {
		b.phase("serve", b.benchServe)
	}

	if n := refusedConnections(ctx, scratch.Server()) - refusedBefore; refusedBefore >= 0 && n > 0 {
		b.fail("the database server refused %d connections during the run (to any client; max_connections %s is shared by all): "+
			"the figures of the modes with errors are affected", n, m.ServerVar["max_connections"])
	}
	b.res.ComputeRatios()
	b.res.EvaluateTargets()
	b.res.Seconds = time.Since(started).Seconds()
	if err := b.res.Write(o.out); err != nil {
		return err
	}
	b.printf("\n")
	b.res.Markdown(c.stdout)
	b.printf("\nwrote %s, %s, %s (%.0fs)\n", filepath.Join(o.out, "bench.json"), filepath.Join(o.out, "bench.svg"), filepath.Join(o.out, "bench.md"), b.res.Seconds)
	if len(b.res.Errors) > 0 {
		return fmt.Errorf("%d measurement errors (the figures above are not clean): %s", len(b.res.Errors), strings.Join(b.res.Errors, "; "))
	}
	return ctx.Err()
}

// benchSession carries one run's state between the phases.
type benchSession struct {
	ctx     context.Context // the CLI's: ends on Ctrl-C
	c       *cli
	o       benchOptions
	scratch *bench.Scratch
	runner  *bench.Runner
	log     *slog.Logger
	res     *bench.Result
}

func (b *benchSession) printf(format string, a ...any) { fmt.Fprintf(b.c.stdout, format, a...) }

func (b *benchSession) note(s string) {
	b.res.Notes = append(b.res.Notes, s)
	b.printf("  note: %s\n", s)
}

func (b *benchSession) fail(format string, a ...any) {
	s := fmt.Sprintf(format, a...)
	b.res.Errors = append(b.res.Errors, s)
	b.printf("  ERROR: %s\n", s)
}

// phase runs one part of the run; its failure is recorded and the run goes
// on, so one broken path does not hide the other figures.
func (b *benchSession) phase(name string, fn func(ctx context.Context) error) {
	if b.ctx.Err() != nil {
		return
	}
	if err := fn(b.ctx); err != nil {
		b.fail("%s: %v", name, err)
	}
}

func (b *benchSession) printPoint(mode string, p bench.Point) {
	b.printf("  %-2s c=%-3d %7.0f events/s  p50 %7.2f  p99 %7.2f  max %7.2f ms  cpu ms/event: bench %.3f, db own %.3f (all %.3f); other load %.2f cores",
		mode, p.Concurrency, p.EventsPerSec, p.Latency.P50MS, p.Latency.P99MS, p.Latency.MaxMS, p.CPU.SelfMSPerEvent, p.CPU.OwnServerMSPerEvent, p.CPU.ServerMSPerEvent, p.CPU.OtherCores)
	if p.Errors > 0 {
		b.printf("  ERRORS %d: %s", p.Errors, p.FirstError)
	}
	b.printf("\n")
	if p.Errors > 0 {
		b.res.Errors = append(b.res.Errors, fmt.Sprintf("%s at concurrency %d: %d errors, first: %s", mode, p.Concurrency, p.Errors, p.FirstError))
	}
}

// scratchDB creates, migrates and grants a scratch database the way `dev`
// does, and returns its privileged and least-privilege DSNs: every mode
// connects as the functions do, with the production grant set.
func (b *benchSession) scratchDB(ctx context.Context, name string) (rootDSN, workerDSN string, err error) {
	db, rootDSN, err := b.scratch.Name(name)
	if err != nil {
		return "", "", err
	}
	b.scratch.Granted(db, mysql.GrantStatements(db, devstack.WorkerName(db), "%"))
	workerDSN, err = devstack.PrepareDB(ctx, rootDSN)
	return rootDSN, workerDSN, err
}

// openPlain opens dsn as a plain *sql.DB with the store's session settings
// (UTC, utf8mb4, client-side interpolation, READ COMMITTED per session), so
// the raw limit does the same transactional work on the same connections.
func openPlain(dsn string, conns int) (*sql.DB, error) {
	db, _, err := mysql.Open(context.Background(), config.DB{DSN: dsn, MaxOpenConns: conns})
	return db, err
}

// refusedConnections reads the server's count of connections refused for
// max_connections (-1 when it cannot be read).
func refusedConnections(ctx context.Context, db *sql.DB) int64 {
	var name string
	var n int64
	if err := db.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Connection_errors_max_connections'").Scan(&name, &n); err != nil {
		return -1
	}
	return n
}

// releaseIdle closes a pool's idle connections (and lets it keep them again
// next time): between measurements a mode's pool must not hold connections
// another mode may need, on a server whose max_connections is shared.
func releaseIdle(db *sql.DB) {
	db.SetMaxIdleConns(0)
	db.SetMaxIdleConns(256)
}

func countRows(ctx context.Context, db *sql.DB, q string, args ...any) (int, error) {
	var n int
	err := db.QueryRowContext(ctx, q, args...).Scan(&n)
	return n, err
}

// ---- the three modes -----------------------------------------------------

// Descriptions of what one event is in each mode (also in bench.json).
const (
	measuresRaw = "one READ COMMITTED transaction per event with plain database/sql: SELECT … FOR UPDATE of the record's newest event, " +
		"the dedup probe by fingerprint, INSERT events, INSERT event_audit_log, COMMIT; latency from BEGIN to COMMIT returned. " +
		"Measured in two half windows at each concurrency, before and after b and c, pooled."
	measuresMerge = "one Pub/Sub push request (a raw event in a push envelope) POSTed to the Merge function — message.HTTP around " +
		"functions/merge, wired as `serve` wires it (pool of 32 connections, as `dev`) — on an in-process HTTP server; the merge " +
		"publishes to an in-process pstest topic; latency from sending the request to the 204 ack (merge committed, merged event " +
		"published, processed = 1)"
	measuresFull = "one raw event published to events.raw.{env} (pubsub/v2 client, ordering key) through the dev stack — embedded " +
		"pstest, push bridge, the five functions on an in-process HTTP server, stand-in targets — until the OTHER system's stand-in " +
		"has received it (an event from netsuite is delivered to SuiteX only and vice versa: echo suppression; workers alternate " +
		"sources, so both targets receive). Latency from the publish call to that delivery. The source's own sink also runs (it " +
		"audits skipped_echo) and is waited for before the stack stops, but not timed. A fresh stack per concurrency level."
)

// benchModes measures a, b and c level by level, so that the three figures
// of one concurrency are taken within seconds of each other (the machine is
// shared: its load drifts over a run), then counts their statements and runs
// the open loop.
func (b *benchSession) benchModes(ctx context.Context) error {
	ma := bench.Mode{Key: bench.ModeRaw, Name: "raw limit", Measures: measuresRaw}
	mb := bench.Mode{Key: bench.ModeMerge, Name: "merge path", Measures: measuresMerge}
	mc := bench.Mode{Key: bench.ModeFull, Name: "full path", Measures: measuresFull}
	defer func() { b.res.Modes = append(b.res.Modes, ma, mb, mc) }()

	// (a): its database and pool.
	_, aDSN, err := b.scratchDB(ctx, "a")
	if err != nil {
		return err
	}
	aDB, err := openPlain(aDSN, slices.Max(b.o.concurrency))
	if err != nil {
		return err
	}
	defer aDB.Close()
	raw := bench.NewRawLimit(aDB).
		// The decomposition's outbox flag goes through the store's own
		// MarkProcessed (group-committed), so it costs what it costs there.
		WithFlag(mysql.New(aDB, func() error { return nil }).MarkProcessed)

	// (b): its database, an emulator with topics only, the Merge server.
	bRoot, bDSN, err := b.scratchDB(ctx, "b")
	if err != nil {
		return err
	}
	srv, ps, err := topicsOnly(ctx, b.o.env)
	if err != nil {
		return err
	}
	defer srv.Close()
	defer ps.Close()
	client := pushClient()
	var msgSeq atomic.Int64

	// (c): its database; the stacks are started per level.
	cName, cRoot, err := b.scratch.Name("c")
	if err != nil {
		return err
	}
	b.scratch.Granted(cName, mysql.GrantStatements(cName, devstack.WorkerName(cName), "%"))
	cDB, err := openPlain(cRoot, 2)
	if err != nil {
		return err
	}
	defer cDB.Close()

	half := bench.Timing{Warmup: b.o.timing.Warmup, Window: b.o.timing.Window / 2}
	totals := map[string]int{}
	for _, conc := range b.o.concurrency {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.printf("\nconcurrency %d\n", conc)
		rawOps := func(tag string) func(int) bench.Op {
			return func(w int) bench.Op { return raw.Op(fmt.Sprintf("a%d%s-w%d", conc, tag, w), w) }
		}
		a1 := b.runner.ClosedFor(ctx, half, conc, rawOps("x"), nil)
		releaseIdle(aDB)

		// A Merge server per level: its pool closes with it, so it holds no
		// connections while the other modes run (the server's
		// max_connections is shared with everything else on it).
		ms, err := b.startMergeServer(ctx, bDSN, ps, srv.Addr)
		if err != nil {
			return err
		}
		prof, done := b.profileFor("b", conc)
		pb := b.runner.Closed(ctx, conc, func(w int) bench.Op {
			return pushOp(client, b.o.env, ms.url, fmt.Sprintf("b%d-w%d", conc, w), w, &msgSeq)
		}, prof)
		done()
		ms.stop()

		pc, err := b.fullLevel(ctx, cRoot, cDB, conc)
		if err != nil {
			b.fail("c at concurrency %d: %v", conc, err)
		}

		a2 := b.runner.ClosedFor(ctx, half, conc, rawOps("y"), nil)
		releaseIdle(aDB)
		pa := bench.Pool(a1, a2)
		b.res.RawDrift = append(b.res.RawDrift, bench.NewDrift(a1, a2))
		b.printPoint("a", pa)
		b.printf("         (a before b and c: %.0f events/s, after: %.0f)\n", a1.EventsPerSec, a2.EventsPerSec)
		b.printPoint("b", pb)
		b.printPoint("c", pc)
		if conc == bench.RefConcurrency && !b.o.quick {
			totals["a"] += b.decompose(ctx, raw, conc)
			releaseIdle(aDB)
		}
		ma.Points, mb.Points, mc.Points = append(ma.Points, pa), append(mb.Points, pb), append(mc.Points, pc)
		totals["a"] += pa.Succeeded
		totals["b"] += pb.Succeeded
		totals["c"] += pc.Succeeded
	}

	// Open loop at half of c's peak, on its own stack.
	if peak, ok := mc.Peak(); ok && peak.EventsPerSec > 0 {
		if err := b.openLoop(ctx, cRoot, cDB, peak.EventsPerSec/2); err != nil {
			b.fail("open loop: %v", err)
		}
	}

	// Verification: every acknowledged event is stored (and, for c,
	// delivered), before the counted passes add their own.
	if stored, err := countRows(ctx, aDB, "SELECT COUNT(*) FROM events"); err != nil {
		return err
	} else {
		ma.Verified = fmt.Sprintf("%d events stored = %d transactions committed", stored, totals["a"])
		if stored != totals["a"] {
			b.fail("a: verification: %s", ma.Verified)
		}
	}
	bDB, err := openPlain(bRoot, 2)
	if err != nil {
		return err
	}
	defer bDB.Close()
	if stored, err := countRows(ctx, bDB, "SELECT COUNT(*) FROM events WHERE processed = 1"); err != nil {
		return err
	} else {
		mb.Verified = fmt.Sprintf("%d events stored and published (processed = 1) = %d push requests acked", stored, totals["b"])
		if stored != totals["b"] {
			b.fail("b: verification: %s (an ack without a merge is a failure parked on the error topic)", mb.Verified)
		}
	}
	stored, err := countRows(ctx, cDB, "SELECT COUNT(*) FROM events WHERE record_id LIKE 'c%' AND processed = 1")
	if err != nil {
		return err
	}
	delivered, err := countRows(ctx, cDB, "SELECT COUNT(*) FROM event_audit_log WHERE record_id LIKE 'c%' AND processing_outcome = 'delivered'")
	if err != nil {
		return err
	}
	mc.Verified = fmt.Sprintf("%d events stored and published, %d audited delivered; %d events received by the other stand-in", stored, delivered, totals["c"])
	if stored != totals["c"] || delivered != totals["c"] {
		b.fail("c: verification: %s", mc.Verified)
	}

	// Counted passes.
	b.printf("\nSQL statements per event (counted passes through the wire-protocol proxy, concurrency %d)\n", bench.RefConcurrency)
	if st, err := b.countedRaw(ctx, aDSN); err != nil {
		b.fail("a: counted pass: %v", err)
	} else {
		ma.Statements = &st
		b.printStatements("a", st)
	}
	if st, err := b.countedMerge(ctx, bDSN, ps, srv.Addr, client, &msgSeq); err != nil {
		b.fail("b: counted pass: %v", err)
	} else {
		mb.Statements = &st
		b.printStatements("b", st)
	}
	if st, err := b.countedFull(ctx, cRoot, cDB); err != nil {
		b.fail("c: counted pass: %v", err)
	} else {
		mc.Statements = &st
		b.printStatements("c", st)
	}
	return nil
}

// decompose measures the merge's SQL with no backbone around it, with and
// without the outbox flag, in the raw-limit database; it returns how many
// events it stored there.
func (b *benchSession) decompose(ctx context.Context, raw *bench.RawLimit, conc int) int {
	stored := 0
	for _, v := range []struct {
		key, name, measures string
		variant             bench.Variant
	}{
		{"m", "merge SQL alone", "every statement the merge sends for an accepted event (store/mysql's head with state FOR UPDATE, id and fingerprint probes, " +
			"outbox-gate read, two inserts with the state document, COMMIT), then the outbox flag through the store's MarkProcessed; " +
			"plain database/sql, no HTTP, JSON, publish or engine", bench.VariantMergeSQL},
		{"n", "merge SQL without the outbox flag", "the same without setting processed = 1 (one durable commit per event)", bench.VariantMergeSQLNoFlag},
		{"p", "merge SQL as proposed (docs/bench.md)", "the head query also returning the newest event's id and processed flag (no outbox-gate read), " +
			"one UNION ALL probe for id and fingerprint, the inserts with the state document, COMMIT, the flag through MarkProcessed", bench.VariantProposed},
	} {
		r := raw.WithVariant(v.variant)
		p := b.runner.Closed(ctx, conc, func(w int) bench.Op { return r.Op(fmt.Sprintf("%s%d-w%d", v.key, conc, w), w) }, nil)
		b.printPoint(v.key, p)
		b.printf("         (%s)\n", v.name)
		b.res.Decomposition = append(b.res.Decomposition, bench.NamedPoint{Name: v.name, Measures: v.measures, Point: p})
		stored += p.Succeeded
	}
	return stored
}

func (b *benchSession) printStatements(mode string, st bench.Statements) {
	b.printf("  %s  %.2f statements/event, %.2f durable commits/event\n", mode, st.PerEvent, st.CommitsPerEvent)
}

// profileFor returns where to write the CPU profile of mode at conc (only
// at the reference concurrency, with --profile) and a func to close it.
func (b *benchSession) profileFor(mode string, conc int) (io.Writer, func()) {
	if !b.o.profile || conc != bench.RefConcurrency {
		return nil, func() {}
	}
	if err := os.MkdirAll(b.o.out, 0o755); err != nil {
		b.fail("profile: %v", err)
		return nil, func() {}
	}
	name := fmt.Sprintf("cpu-%s-%d.pprof", mode, conc)
	if mode == "open" {
		name = "cpu-open-loop.pprof"
	}
	path := filepath.Join(b.o.out, name)
	f, err := os.Create(path)
	if err != nil {
		b.fail("profile: %v", err)
		return nil, func() {}
	}
	b.res.Profiles = append(b.res.Profiles, path)
	return f, func() { _ = f.Close() }
}

// ---- (a) ----

func (b *benchSession) countedRaw(ctx context.Context, workerDSN string) (bench.Statements, error) {
	proxy, err := bench.StartProxy(b.scratch.Addr())
	if err != nil {
		return bench.Statements{}, err
	}
	defer proxy.Close()
	pdsn, err := bench.WithAddr(workerDSN, proxy.Addr())
	if err != nil {
		return bench.Statements{}, err
	}
	db, err := openPlain(pdsn, bench.RefConcurrency)
	if err != nil {
		return bench.Statements{}, err
	}
	defer db.Close()
	raw := bench.NewRawLimit(db)
	before := proxy.Counts()
	n, err := bench.RunN(ctx, bench.RefConcurrency, b.o.countEvents, func(w int) bench.Op { return raw.Op(fmt.Sprintf("acount-w%d", w), w) })
	if err != nil {
		return bench.Statements{}, err
	}
	return bench.PerEvent(proxy.Counts().Sub(before), n)
}

// ---- (b) ----

// topicsOnly starts an in-process pstest server with env's four topics and
// no subscriptions: the merged events are published (the merge waits for
// the server's ack, as in production) and then dropped, so nothing
// accumulates and nothing downstream runs.
func topicsOnly(ctx context.Context, env config.Env) (*pstest.Server, *publish.PubSub, error) {
	srv := pstest.NewServer()
	ps, err := publish.NewPubSub(ctx, devstack.Project, srv.Addr)
	if err != nil {
		_ = srv.Close()
		return nil, nil, err
	}
	for _, t := range env.Names().Topics() {
		if _, err := ps.Client().TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: "projects/" + devstack.Project + "/topics/" + t}); err != nil {
			_ = ps.Close()
			_ = srv.Close()
			return nil, nil, fmt.Errorf("create topic %s: %w", t, err)
		}
	}
	return srv, ps, nil
}

// mergeServer is the Merge function wired as `serve` wires it, behind
// message.HTTP, on an in-process HTTP server.
type mergeServer struct {
	url  string
	once sync.Once
	shut func()
}

func (m *mergeServer) stop() { m.once.Do(m.shut) }

func (b *benchSession) startMergeServer(ctx context.Context, workerDSN string, ps *publish.PubSub, emulator string) (*mergeServer, error) {
	vars := map[string]string{"BACKBONE_ENV": string(b.o.env), "GCP_PROJECT": devstack.Project, "EVENT_STORE_DSN": workerDSN, "PUBSUB_EMULATOR_HOST": emulator}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		return nil, err
	}
	// The dev stack's pool size, so that (b) and (c) differ only in the
	// pipeline around the merge.
	cfg.DB.MaxOpenConns = 32
	a, err := wire(ctx, cfg, []string{config.TargetMerge}, b.log, wireOptions{pubsub: ps})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/"+config.TargetMerge, message.HTTP(b.log.With("function", config.TargetMerge), devstack.Project, a.handlers[config.TargetMerge]))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = a.store.Close()
		return nil, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return &mergeServer{url: "http://" + ln.Addr().String() + "/" + config.TargetMerge, shut: func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		// Not a.Close: the Pub/Sub client is shared.
		_ = a.store.Close()
	}}, nil
}

// pushClient posts push requests with a connection per worker kept alive.
func pushClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 256}}
}

// pushOp is one worker posting raw events as push requests to url.
func pushOp(client *http.Client, env config.Env, url, prefix string, worker int, msgSeq *atomic.Int64) bench.Op {
	s := bench.NewStream(prefix, bench.SourceOf(worker), bench.RecordsPerWorker)
	sub := "projects/" + devstack.Project + "/subscriptions/" + env.Names().MergeSub
	return func(ctx context.Context) error {
		e := s.Next()
		body := message.PushBody(message.Message{
			Data: e.Raw(uuid.NewString()), Attributes: map[string]string{publish.AttrEnv: string(env)},
			ID: strconv.FormatInt(msgSeq.Add(1), 10), PublishTime: time.Now(), OrderingKey: publish.OrderingKey(bench.RecordType, e.RecordID),
			Subscription: sub,
		})
		err := post(ctx, client, url, body)
		s.Done(err == nil)
		return err
	}
}

func post(ctx context.Context, client *http.Client, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != message.StatusAck {
		return fmt.Errorf("push answered %d: %s", resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	return nil
}

func (b *benchSession) countedMerge(ctx context.Context, workerDSN string, ps *publish.PubSub, emulator string, client *http.Client, seq *atomic.Int64) (bench.Statements, error) {
	proxy, err := bench.StartProxy(b.scratch.Addr())
	if err != nil {
		return bench.Statements{}, err
	}
	defer proxy.Close()
	pdsn, err := bench.WithAddr(workerDSN, proxy.Addr())
	if err != nil {
		return bench.Statements{}, err
	}
	ms, err := b.startMergeServer(ctx, pdsn, ps, emulator)
	if err != nil {
		return bench.Statements{}, err
	}
	defer ms.stop()
	before := proxy.Counts()
	n, err := bench.RunN(ctx, bench.RefConcurrency, b.o.countEvents, func(w int) bench.Op {
		return pushOp(client, b.o.env, ms.url, fmt.Sprintf("bcount-w%d", w), w, seq)
	})
	after := proxy.Counts()
	if err != nil {
		return bench.Statements{}, err
	}
	return bench.PerEvent(after.Sub(before), n)
}

// ---- (c) ----

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
	mux := http.NewServeMux()
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
		mux.Handle("/"+name, h)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
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
	ps  *publish.PubSub
	pub publish.Publisher
}

func (b *benchSession) startFull(ctx context.Context, dsn string) (*fullStack, error) {
	obs := newObserver()
	d, err := startDev(ctx, devstack.Options{Env: b.o.env, DSN: dsn, FuncAddr: "127.0.0.1:0", Log: b.log, Serve: obs.serve,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	d.NetSuite.OnDelivery(obs.onDelivery)
	d.SuiteX.OnDelivery(obs.onDelivery)
	ps, err := publish.NewPubSub(ctx, devstack.Project, d.Emulator)
	if err != nil {
		d.Stop()
		return nil, err
	}
	return &fullStack{d: d, obs: obs, ps: ps, pub: publish.Guard(b.o.env, ps)}, nil
}

func (f *fullStack) stop() {
	_ = f.ps.Close()
	f.d.Stop()
}

// deliveryTimeout bounds one event's trip through the stack.
const deliveryTimeout = 30 * time.Second

// send publishes e as a raw event with a new id and waits until the other
// system's stand-in has it. The caller forgets the id when done with it.
func (f *fullStack) send(ctx context.Context, env config.Env, e bench.Event) (string, *tracked, error) {
	id := uuid.NewString()
	t := f.obs.expect(id)
	if _, err := f.pub.Publish(ctx, env.Names().RawTopic, publish.Message{Data: e.Raw(id), OrderingKey: publish.OrderingKey(bench.RecordType, e.RecordID)}); err != nil {
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

func (f *fullStack) op(env config.Env, prefix string, worker int) bench.Op {
	s := bench.NewStream(prefix, bench.SourceOf(worker), bench.RecordsPerWorker)
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
func (b *benchSession) fullLevel(ctx context.Context, rootDSN string, db *sql.DB, conc int) (bench.Point, error) {
	f, err := b.startFull(ctx, rootDSN)
	if err != nil {
		return bench.Point{Concurrency: conc, Errors: 1, FirstError: err.Error()}, err
	}
	defer f.stop()
	prof, done := b.profileFor("c", conc)
	prefix := fmt.Sprintf("c%d-", conc)
	p := b.runner.Closed(ctx, conc, func(w int) bench.Op { return f.op(b.o.env, fmt.Sprintf("%sw%d", prefix, w), w) }, prof)
	done()
	// Every event is merged, delivered to the other system and skipped by
	// its own: three audit rows.
	return p, quiesce(ctx, db, prefix+"%", 3*p.Succeeded)
}

// openLoop publishes at rate events/s regardless of completions, on a pool
// of records large enough that an event never follows its record's previous
// one before that one is through (10 s apart at the rate).
func (b *benchSession) openLoop(ctx context.Context, rootDSN string, db *sql.DB, rate float64) error {
	f, err := b.startFull(ctx, rootDSN)
	if err != nil {
		return err
	}
	defer f.stop()
	pool := max(1000, int(rate*10))
	var seq atomic.Int64
	b.printf("\nopen loop at %.0f events/s (half of peak c), full path\n", rate)
	prof, done := b.profileFor("open", bench.RefConcurrency)
	defer done()
	res := b.runner.Open(ctx, rate, deliveryTimeout, []string{"raw_to_merged", "raw_to_delivered"}, func(ctx context.Context) ([]time.Time, error) {
		n := int(seq.Add(1) - 1)
		k := n % pool
		e := bench.Event{RecordID: fmt.Sprintf("open-r%d", k), Source: bench.SourceOf(k), Base: uint64(n / pool), Seq: n}
		id, t, err := f.send(ctx, b.o.env, e)
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
func (b *benchSession) countedFull(ctx context.Context, rootDSN string, db *sql.DB) (bench.Statements, error) {
	proxy, err := bench.StartProxy(b.scratch.Addr())
	if err != nil {
		return bench.Statements{}, err
	}
	defer proxy.Close()
	pdsn, err := bench.WithAddr(rootDSN, proxy.Addr())
	if err != nil {
		return bench.Statements{}, err
	}
	f, err := b.startFull(ctx, pdsn)
	if err != nil {
		return bench.Statements{}, err
	}
	defer f.stop()
	n := max(b.o.countEvents/2, 100)
	before := proxy.Counts()
	got, err := bench.RunN(ctx, bench.RefConcurrency, n, func(w int) bench.Op { return f.op(b.o.env, fmt.Sprintf("ccount-w%d", w), w) })
	if err != nil {
		return bench.Statements{}, err
	}
	if err := quiesce(ctx, db, "ccount%", 3*got); err != nil {
		return bench.Statements{}, err
	}
	return bench.PerEvent(proxy.Counts().Sub(before), got)
}

// ---- the history-length curve ---------------------------------------------

func (b *benchSession) benchScale(ctx context.Context) error {
	rootDSN, workerDSN, err := b.scratchDB(ctx, "scale")
	if err != nil {
		return err
	}
	root, closeRoot, err := mysql.Open(ctx, config.DB{DSN: rootDSN, MaxOpenConns: 2})
	if err != nil {
		return err
	}
	defer closeRoot()
	db, closeDB, err := mysql.Open(ctx, config.DB{DSN: workerDSN, MaxOpenConns: 4})
	if err != nil {
		return err
	}
	st := mysql.New(db, closeDB)
	defer st.Close()
	proxy, err := bench.StartProxy(b.scratch.Addr())
	if err != nil {
		return err
	}
	defer proxy.Close()
	pdsn, err := bench.WithAddr(workerDSN, proxy.Addr())
	if err != nil {
		return err
	}
	pdb, closeP, err := mysql.Open(ctx, config.DB{DSN: pdsn, MaxOpenConns: 4})
	if err != nil {
		return err
	}
	counted := mysql.New(pdb, closeP)
	defer counted.Close()
	b.printf("\nmerge cost against history length (sequential merges through the engine, publish a no-op)\n")
	sc, err := bench.MeasureScale(ctx, root, st, counted, proxy, bench.ScaleOptions{
		Priors: []int{10, 1000, 10000}, Records: 4, Merges: b.o.scaleMerges, Counted: 20, Env: b.o.env, Sources: config.DefaultSources})
	if err != nil {
		return err
	}
	b.res.Scale = &sc
	for _, p := range sc.Points {
		b.printf("  %6d prior events: mean %.3f ms  p50 %.3f ms  p99 %.3f ms  (%d merges, %.2f statements/merge)\n",
			p.PriorEvents, p.Latency.MeanMS, p.Latency.P50MS, p.Latency.P99MS, p.Latency.Count, p.Statements.PerEvent)
	}
	b.printf("  ratio %d/%d: mean %.3f, p50 %.3f (seeded in %.1fs)\n", sc.Points[len(sc.Points)-1].PriorEvents, sc.Points[0].PriorEvents, sc.Ratio, sc.RatioP50, sc.SeedSeconds)
	if sc.Warnings > 0 {
		b.fail("scale: the engine logged %d warnings during the measured merges (first: %s): not the normal path", sc.Warnings, sc.FirstWarning)
	}
	return nil
}

// ---- serve: start-up and memory -------------------------------------------

func (b *benchSession) benchServe(ctx context.Context) error {
	_, workerDSN, err := b.scratchDB(ctx, "serve")
	if err != nil {
		return err
	}
	srv, ps, err := topicsOnly(ctx, b.o.env)
	if err != nil {
		return err
	}
	defer srv.Close()
	defer ps.Close()
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the backbone binary: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	client := pushClient()
	var seq atomic.Int64
	b.printf("\nbackbone serve (FUNCTION_TARGET=Merge) as a subprocess: %s\n", exe)
	res, err := bench.MeasureServe(ctx, bench.ServeOptions{
		Command: []string{exe, "serve"},
		// Only what serve needs: the bench's own environment stays out.
		Env: []string{"BACKBONE_ENV=" + string(b.o.env), "GCP_PROJECT=" + devstack.Project, "PUBSUB_EMULATOR_HOST=" + srv.Addr,
			"EVENT_STORE_DSN=" + workerDSN, "FUNCTION_TARGET=" + config.TargetMerge, "PORT=" + strconv.Itoa(port)},
		Port: port, Starts: b.o.serveStarts, Concurrency: b.o.serveConc, Duration: b.o.timing.Window,
		NewOp: func(w int, base string) bench.Op {
			return pushOp(client, b.o.env, base+"/", fmt.Sprintf("serve-w%d", w), w, &seq)
		},
	})
	b.res.Serve = &res
	if err != nil {
		return err
	}
	b.printf("  start-up %v ms (median %.1f ms)\n  peak RSS %.1f MiB (idle %.1f MiB) under %d concurrent requests: %d requests, %.0f/s, p99 %.1f ms, serve's CPU %.3f ms/request\n",
		res.StartupMS, res.StartupMedianMS, res.PeakRSSMiB, res.RSSIdleMiB, res.Concurrency, res.Load.Succeeded, res.Load.EventsPerSec, res.Load.Latency.P99MS,
		res.Load.CPU.ServerMSPerEvent)
	if res.Load.Errors > 0 {
		b.fail("serve: %d errors under load, first: %s", res.Load.Errors, res.Load.FirstError)
	}
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// The burst figure (SPEC §7 coalescing): versions of a record stored while
// its delivery is slow cost one request, not one per version.
const (
	burstRecords  = 10
	burstVersions = 20
	// A slow NetSuite: REST upserts of a second and more are common, and
	// the figure is about versions arriving faster than the target answers.
	burstDelay = time.Second
)

// benchBurst publishes burstVersions chained versions of each of
// burstRecords records from SuiteX as fast as it can, against a NetSuite
// stand-in that takes burstDelay per request, and counts NetSuite's
// requests per stored version once every record reached NetSuite whole.
func (b *benchSession) benchBurst(ctx context.Context) error {
	rootDSN, _, err := b.scratchDB(ctx, "burst")
	if err != nil {
		return err
	}
	f, err := b.startFull(ctx, rootDSN)
	if err != nil {
		return err
	}
	defer f.stop()
	f.d.NetSuite.SetDelay(burstDelay)
	prefix := "burst-" + b.scratch.RunID + "-"
	start := time.Now().UTC()
	for v := range burstVersions {
		for r := range burstRecords {
			changes := map[string]json.RawMessage{
				"n":                     json.RawMessage(strconv.Itoa(v)),
				fmt.Sprintf("f%d", v%5): json.RawMessage(strconv.Itoa(v)),
			}
			data, err := json.Marshal(event.Raw{ID: uuid.NewString(), RecordType: bench.RecordType, RecordID: fmt.Sprintf("%s%d", prefix, r),
				Source: store.StageSuiteX, Timestamp: event.NewTime(start.Add(time.Duration(v) * time.Millisecond)), BaseVersion: uint64(v), Changes: changes})
			if err != nil {
				return err
			}
			if _, err := f.pub.Publish(ctx, b.o.env.Names().RawTopic, publish.Message{Data: data,
				OrderingKey: publish.OrderingKey(bench.RecordType, fmt.Sprintf("%s%d", prefix, r))}); err != nil {
				return fmt.Errorf("burst: publish: %w", err)
			}
		}
	}
	// Done when NetSuite received version burstVersions of every record,
	// and then nothing more for a while (the later merged messages find
	// nothing missing).
	deadline := time.Now().Add(60 * time.Second)
	var requests, settledAt int
	for {
		ds := f.d.NetSuite.Deliveries()
		full := map[string]bool{}
		requests = 0
		for _, d := range ds {
			if !strings.HasPrefix(d.RecordID, prefix) {
				continue
			}
			requests++
			if d.Version == burstVersions {
				full[d.RecordID] = true
			}
		}
		if len(full) == burstRecords {
			if requests == settledAt {
				break
			}
			settledAt = requests
			time.Sleep(time.Second)
			continue
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("burst: %d of %d records reached NetSuite at version %d within 60s", len(full), burstRecords, burstVersions)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stored := burstRecords * burstVersions
	b.res.Burst = &bench.Burst{Records: burstRecords, VersionsPerRecord: burstVersions, DelayMS: burstDelay.Milliseconds(),
		NetSuiteRequests: requests, RequestsPerVersion: float64(requests) / float64(stored)}
	b.printf("burst: %d versions of %d records from SuiteX against a NetSuite answering in %s: %d NetSuite requests, %.3f per stored version\n",
		burstVersions, burstRecords, burstDelay, requests, b.res.Burst.RequestsPerVersion)
	return nil
}
