package main

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/backbone-sync/backbone/internal/bench"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish/pubsub"
)

const benchDefaultServerDSN = "root@tcp(127.0.0.1:3306)/"

func runBench(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "bench", "[--duration 4s] [--warmup 1s] [--quick] [--out bench-results] [--concurrency 1,4,16,64] [--profile] [--skip-scale] [--skip-storage] [--skip-serve]\n\n"+
		"Measures, in one run against one database server (EVENT_STORE_DSN, a privileged DSN; default "+benchDefaultServerDSN+"):\n"+
		"  a  the raw limit: the merge transaction's SQL (lock, dedup probe, two inserts) with plain database/sql\n"+
		"  b  the merge path: push requests to the Merge handler on an in-process HTTP server\n"+
		"  c  the full path: raw event published to events.raw until the other system's stand-in has it (the dev stack)\n"+
		"at each concurrency (events/s, p50/p99/max, CPU per event, SQL statements per event), then the ratios b/a\n"+
		"and c/a, an open-loop run at half of c's peak, the merge cost against history length, the bytes stored per\n"+
		"event, and the start-up and peak RSS of `backbone serve`. Writes bench.json, bench.svg and bench.md to --out.\n"+
		"Scratch databases bench_<run>_* are created and dropped. Exits 1 if any measurement had errors (missed targets\n"+
		"are reported, not failed).")
	duration := fs.Duration("duration", 4*time.Second, "measured window per point")
	warmup := fs.Duration("warmup", time.Second, "warm-up before each window (not recorded)")
	quick := fs.Bool("quick", false, "short run: 1.5s windows, 0.5s warm-up, fewer samples")
	out := fs.String("out", "bench-results", "directory for bench.json, bench.svg, bench.md (and profiles)")
	concList := fs.String("concurrency", "1,4,16,64", "concurrency levels, comma-separated")
	envName := fs.String("env", "sandbox", "environment the stacks run as")
	profile := fs.Bool("profile", false, "write CPU profiles (b and c at concurrency 16, the open loop) to --out")
	skipScale := fs.Bool("skip-scale", false, "skip the history-length curve")
	skipStorage := fs.Bool("skip-storage", false, "skip the bytes stored per event")
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
	o := bench.Options{Env: env, Timing: bench.Timing{Warmup: *warmup, Window: *duration}, Out: *out, Quick: *quick, Profile: *profile,
		SkipScale: *skipScale, SkipStorage: *skipStorage, SkipServe: *skipServe, Stdout: c.stdout, Stderr: c.stderr}
	for _, s := range strings.Split(*concList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 256 {
			return usagef("--concurrency: %q is not a number in 1-256", s)
		}
		o.Concurrency = append(o.Concurrency, n)
	}
	// --quick brings its own timing.
	if !o.Quick && (o.Timing.Window <= 0 || o.Timing.Warmup < 0) {
		return usagef("--duration must be positive and --warmup not negative")
	}
	dsn := c.getenv("EVENT_STORE_DSN")
	if dsn == "" {
		dsn = benchDefaultServerDSN
	}
	return bench.Run(ctx, dsn, o, benchWiring())
}

// benchWiring hands the bench what only this package builds: the Merge
// function wired as `serve` wires it, and the dev stack.
func benchWiring() bench.Wiring {
	return bench.Wiring{
		Merge: func(ctx context.Context, cfg config.Config, ps *pubsub.Publisher, log *slog.Logger) (message.Handler, func() error, error) {
			a, err := wire(ctx, cfg, []string{config.TargetMerge}, log, wireOptions{pubsub: ps})
			if err != nil {
				return nil, nil, err
			}
			// Not a.Close: the Pub/Sub client is the caller's.
			return a.handlers[config.TargetMerge], a.store.Close, nil
		},
		Functions: devWire,
	}
}
