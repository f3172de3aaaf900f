package bench

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/backbone-sync/backbone/internal/devstack"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/logging"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish/pubsub"
	"github.com/backbone-sync/backbone/shared/store/mysql"
)

// Options are one run's settings (the flags of `backbone bench`).
type Options struct {
	Env         config.Env // the environment the stacks run as
	Timing      Timing     // replaced by the short run's with Quick
	Concurrency []int
	Out         string // directory for bench.json, bench.svg, bench.md (and profiles)
	// Quick is the short run: shorter windows, fewer samples.
	Quick bool
	// Profile writes CPU profiles (b and c at RefConcurrency, the open
	// loop) to Out.
	Profile     bool
	SkipScale   bool
	SkipServe   bool
	SkipStorage bool
	// Stdout gets the progress and the tables; Stderr what goes wrong after
	// the figures are written (the cleanup).
	Stdout, Stderr io.Writer
}

// sizes are a run's sample counts.
type sizes struct {
	countEvents   int // events per counted pass
	scaleMerges   int
	serveStarts   int
	serveConc     int
	storageEvents int
}

// sized returns the timing and sample counts of o: the full run's, or the
// short run's with Quick.
func (o Options) sized() (Timing, sizes) {
	s := sizes{countEvents: 1000, scaleMerges: 150, serveStarts: 5, serveConc: 100, storageEvents: StorageEvents}
	if !o.Quick {
		return o.Timing, s
	}
	// The storage figure keeps its 10,000 events: its target is stated for
	// them, and fixed costs (a table's first pages) would weigh more on
	// fewer.
	s.countEvents, s.scaleMerges, s.serveStarts = 300, 50, 3
	return Timing{Warmup: 500 * time.Millisecond, Window: 1500 * time.Millisecond}, s
}

// Wiring is what a run needs of the binary around it: the Merge function
// wired as `serve` wires it (mode b) and the five functions as `dev` wires
// them (mode c, the open loop, the burst, on internal/devstack). The command
// builds both and cannot be imported (it is package main), so it hands them
// over as functions.
type Wiring struct {
	// Merge wires the Merge function over cfg as `serve` does, publishing
	// through ps; closeStore releases its store (ps stays open: it is
	// shared).
	Merge func(ctx context.Context, cfg config.Config, ps *pubsub.Publisher, log *slog.Logger) (h message.Handler, closeStore func() error, err error)
	// Functions wires the dev stack's functions.
	Functions devstack.Wire
}

// Run is one whole run against the server of serverDSN (a privileged DSN).
// Every phase's failure is recorded and the run goes on, so one broken path
// does not hide the others' figures; the error lists them at the end.
func Run(ctx context.Context, serverDSN string, o Options, w Wiring) error {
	started := time.Now()
	timing, sz := o.sized()
	scratch, err := NewScratch(ctx, serverDSN)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
		defer cancel()
		if err := scratch.Close(cctx); err != nil {
			fmt.Fprintf(o.Stderr, "backbone bench: cleanup: %v\n", err)
		}
	}()
	serverPID := FindServerPID()
	b := &benchmark{ctx: ctx, o: o, timing: timing, sizes: sz, w: w, scratch: scratch,
		runner: NewRunner(timing, serverPID),
		// The functions log as deployed (JSON, one line per message); the
		// lines are formatted, then discarded.
		log: logging.New(io.Discard, slog.LevelInfo),
		res: &Result{Started: started.UTC(), Quick: o.Quick, WarmupMS: timing.Warmup.Milliseconds(),
			WindowMS: timing.Window.Milliseconds(), Machine: DescribeMachine(ctx, scratch.Server())}}
	m := b.res.Machine
	b.printf("backbone bench (run %s): %d × %s, %s, windows of %s after %s warm-up\n", scratch.RunID, m.NProc, m.CPUModel, m.Server, timing.Window, timing.Warmup)
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
	b.phase("modes", b.modes)
	b.phase("burst", b.burst)
	if !o.SkipScale {
		b.phase("scale", b.scale)
	}
	if !o.SkipStorage {
		b.phase("storage", b.storage)
	}
	if !o.SkipServe {
		b.phase("serve", b.serve)
	}

	if n := refusedConnections(ctx, scratch.Server()) - refusedBefore; refusedBefore >= 0 && n > 0 {
		b.fail("the database server refused %d connections during the run (to any client; max_connections %s is shared by all): "+
			"the figures of the modes with errors are affected", n, m.ServerVar["max_connections"])
	}
	b.res.ComputeRatios()
	b.res.EvaluateTargets()
	b.res.Seconds = time.Since(started).Seconds()
	if err := b.res.Write(o.Out); err != nil {
		return err
	}
	b.printf("\n")
	b.res.Markdown(o.Stdout)
	b.printf("\nwrote %s, %s, %s (%.0fs)\n", filepath.Join(o.Out, "bench.json"), filepath.Join(o.Out, "bench.svg"), filepath.Join(o.Out, "bench.md"), b.res.Seconds)
	if len(b.res.Errors) > 0 {
		return fmt.Errorf("%d measurement errors (the figures above are not clean): %s", len(b.res.Errors), strings.Join(b.res.Errors, "; "))
	}
	return ctx.Err()
}

// benchmark carries one run's state between the phases.
type benchmark struct {
	ctx     context.Context // the caller's: ends on Ctrl-C
	o       Options
	timing  Timing
	sizes   sizes
	w       Wiring
	scratch *Scratch
	runner  *Runner
	log     *slog.Logger
	res     *Result
}

func (b *benchmark) printf(format string, a ...any) { fmt.Fprintf(b.o.Stdout, format, a...) }

func (b *benchmark) note(s string) {
	b.res.Notes = append(b.res.Notes, s)
	b.printf("  note: %s\n", s)
}

func (b *benchmark) fail(format string, a ...any) {
	s := fmt.Sprintf(format, a...)
	b.res.Errors = append(b.res.Errors, s)
	b.printf("  ERROR: %s\n", s)
}

// phase runs one part of the run; its failure is recorded and the run goes
// on, so one broken path does not hide the other figures.
func (b *benchmark) phase(name string, fn func(ctx context.Context) error) {
	if b.ctx.Err() != nil {
		return
	}
	if err := fn(b.ctx); err != nil {
		b.fail("%s: %v", name, err)
	}
}

func (b *benchmark) printPoint(mode string, p Point) {
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

func (b *benchmark) printStatements(mode string, st Statements) {
	b.printf("  %s  %.2f statements/event, %.2f durable commits/event\n", mode, st.PerEvent, st.CommitsPerEvent)
}

// scratchDB creates, migrates and grants a scratch database the way `dev`
// does, and returns its privileged and least-privilege DSNs: every mode
// connects as the functions do, with the production grant set.
func (b *benchmark) scratchDB(ctx context.Context, name string) (rootDSN, workerDSN string, err error) {
	db, rootDSN, err := b.scratch.Name(name)
	if err != nil {
		return "", "", err
	}
	b.scratch.Granted(db, mysql.GrantStatements(db, devstack.WorkerName(db), "%"))
	workerDSN, err = devstack.PrepareDB(ctx, rootDSN)
	return rootDSN, workerDSN, err
}

// scratchStore is scratchDB opened: a privileged pool on the database and
// the store over the production grant set. closeAll closes both.
func (b *benchmark) scratchStore(ctx context.Context, name string) (root *sql.DB, st *mysql.Store, workerDSN string, closeAll func(), err error) {
	rootDSN, workerDSN, err := b.scratchDB(ctx, name)
	if err != nil {
		return nil, nil, "", nil, err
	}
	root, closeRoot, err := mysql.Open(ctx, config.DB{DSN: rootDSN, MaxOpenConns: 2})
	if err != nil {
		return nil, nil, "", nil, err
	}
	db, closeDB, err := mysql.Open(ctx, config.DB{DSN: workerDSN, MaxOpenConns: 4})
	if err != nil {
		_ = closeRoot()
		return nil, nil, "", nil, err
	}
	st = mysql.New(db, closeDB)
	return root, st, workerDSN, func() { _ = st.Close(); _ = closeRoot() }, nil
}

// profileFor returns where to write the CPU profile of mode at conc (only
// at the reference concurrency, with --profile) and a func to close it.
func (b *benchmark) profileFor(mode string, conc int) (io.Writer, func()) {
	if !b.o.Profile || conc != RefConcurrency {
		return nil, func() {}
	}
	if err := os.MkdirAll(b.o.Out, 0o755); err != nil {
		b.fail("profile: %v", err)
		return nil, func() {}
	}
	name := fmt.Sprintf("cpu-%s-%d.pprof", mode, conc)
	if mode == "open" {
		name = "cpu-open-loop.pprof"
	}
	path := filepath.Join(b.o.Out, name)
	f, err := os.Create(path)
	if err != nil {
		b.fail("profile: %v", err)
		return nil, func() {}
	}
	b.res.Profiles = append(b.res.Profiles, path)
	return f, func() { _ = f.Close() }
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
