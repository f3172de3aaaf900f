package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"time"

	"github.com/backbone-sync/backbone/internal/health"
	"github.com/backbone-sync/backbone/shared/config"
)

const statusSynopsis = `[--json] [--window 15m] [thresholds]

Health at a glance: per subscription its backlog (from Cloud Monitoring; "n/a" on
an emulator, which reports none), the outbox (unprocessed events, the oldest's age),
dead letters in the last hour and day by stage and reason, per target the last
successful delivery and the failure rate over --window, and the records whose
targets have not converged (SPEC §7: some field differs from the target's known
value), among the newest --max-records records with activity in the last
--convergence-window. Exits 1 when a threshold is crossed (a negative value turns
a check off), so it can gate a deploy or a cron job.

Needs EVENT_STORE_DSN (or CLOUD_SQL_INSTANCE) and BACKBONE_ENV (or --env); in GCP,
GCP_PROJECT for the backlogs.`

// statusFlags are the figures' options and thresholds, shared with console.
type statusFlags struct {
	env                          *string
	window, convergence          *time.Duration
	maxRecords                   *int
	maxDLHour, minAttempts, maxU *int
	maxRate                      *float64
	maxOutboxAge, grace, unacked *time.Duration
	maxBacklog                   *int64
}

func addStatusFlags(fs *flag.FlagSet) *statusFlags {
	d := health.DefaultThresholds()
	return &statusFlags{
		env:          fs.String("env", "", "environment (default: BACKBONE_ENV)"),
		window:       fs.Duration("window", 15*time.Minute, "the failure rate's window"),
		convergence:  fs.Duration("convergence-window", 24*time.Hour, "check records with merge or delivery activity this recent"),
		maxRecords:   fs.Int("max-records", 500, "check at most this many of them, newest first"),
		maxDLHour:    fs.Int("max-dead-letters-hour", d.MaxDeadLettersHour, "threshold: dead letters archived in the last hour"),
		maxOutboxAge: fs.Duration("max-outbox-age", d.MaxOutboxAge, "threshold: age of the oldest unprocessed event"),
		maxRate:      fs.Float64("max-failure-rate", d.MaxFailureRate, "threshold: a target's failure rate over --window (0..1)"),
		minAttempts:  fs.Int("min-attempts", d.MinAttempts, "the failure rate counts once a target had this many attempts in --window"),
		maxU:         fs.Int("max-unconverged", d.MaxUnconverged, "threshold: records not converged for longer than --unconverged-grace"),
		grace:        fs.Duration("unconverged-grace", d.UnconvergedGrace, "how long a record may wait for its delivery before it counts"),
		maxBacklog:   fs.Int64("max-backlog", d.MaxBacklog, "threshold: a subscription's undelivered messages (where known)"),
		unacked:      fs.Duration("max-unacked-age", d.MaxUnackedAge, "threshold: a subscription's oldest unacked message (where known)"),
	}
}

// options checks the flags and returns the snapshot options and thresholds.
func (f *statusFlags) options(c *cli) (health.Options, health.Thresholds, error) {
	e := *f.env
	if e == "" {
		e = c.getenv("BACKBONE_ENV")
	}
	env, err := config.ParseEnv(e)
	if err != nil {
		return health.Options{}, health.Thresholds{}, settingError{fmt.Errorf("%w: status reads the subscriptions of events.*.{env} (or pass --env)", err)}
	}
	if *f.window <= 0 || *f.convergence <= 0 || *f.maxRecords < 1 {
		return health.Options{}, health.Thresholds{}, usagef("--window and --convergence-window must be positive, --max-records at least 1")
	}
	if *f.maxRate > 1 {
		return health.Options{}, health.Thresholds{}, usagef("--max-failure-rate %v: want a fraction, 0..1", *f.maxRate)
	}
	t := health.Thresholds{MaxDeadLettersHour: *f.maxDLHour, MaxOutboxAge: *f.maxOutboxAge, MaxFailureRate: *f.maxRate,
		MinAttempts: *f.minAttempts, MaxUnconverged: *f.maxU, UnconvergedGrace: *f.grace, MaxBacklog: *f.maxBacklog, MaxUnackedAge: *f.unacked}
	return health.Options{Env: env, FailureWindow: *f.window, ConvergenceWindow: *f.convergence, MaxRecords: *f.maxRecords}, t, nil
}

// backlogSource is Cloud Monitoring on real Pub/Sub, nothing on an
// emulator (it keeps no backlog metric). close is never nil.
func backlogSource(ctx context.Context, cfg config.Config, o *health.Options) (close func()) {
	switch {
	case cfg.EmulatorHost != "":
		o.BacklogNote = "the Pub/Sub emulator at " + cfg.EmulatorHost + " reports no backlog"
	case cfg.Project == "":
		o.BacklogNote = "GCP_PROJECT is not set"
	default:
		m, err := health.NewMonitoring(ctx, cfg.Project)
		if err != nil {
			o.BacklogNote = err.Error()
			return func() {}
		}
		o.Backlogs = m
		return func() { _ = m.Close() }
	}
	return func() {}
}

func runStatus(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "status", statusSynopsis)
	sf := addStatusFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON (the snapshot and the problems)")
	dsn := fs.String("dsn", "", "event store DSN (default: EVENT_STORE_DSN)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("unexpected arguments %v", fs.Args())
	}
	o, t, err := sf.options(c)
	if err != nil {
		return err
	}
	cfg, _ := config.Load(c.getenv) // the emulator and project only; the store is checked by storeFromEnv
	s, err := storeFromEnv(ctx, c, *dsn)
	if err != nil {
		return err
	}
	defer s.Close()
	defer backlogSource(ctx, cfg, &o)()
	snap, err := health.Take(ctx, s, o)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	problems := snap.Problems(t)
	if *asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if problems == nil {
			problems = []string{}
		}
		if err := enc.Encode(struct {
			Healthy  bool             `json:"healthy"`
			Problems []string         `json:"problems"`
			Snapshot *health.Snapshot `json:"snapshot"`
		}{len(problems) == 0, problems, snap}); err != nil {
			return err
		}
	} else if err := snap.WriteText(c.stdout, problems); err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("unhealthy: %d threshold(s) crossed", len(problems))
	}
	return nil
}
