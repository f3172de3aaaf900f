package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/logging"
	"github.com/backbone-sync/backbone/shared/merge"
	"github.com/backbone-sync/backbone/shared/publish"
)

const outboxSynopsis = `flush [--older-than 1m] [--limit N] [--dsn DSN]

Republishes events left processed = 0 (stored, but their merged message was
never confirmed published: the merge crashed or lost Pub/Sub between commit
and publish) to events.merged.{env}, oldest first and per record in version
order, then sets processed = 1. Redeliveries and newer merges of the same
record do this on their own; flush catches what nothing redelivers.

Needs BACKBONE_ENV, GCP_PROJECT (PUBSUB_EMULATOR_HOST for an emulator) and
EVENT_STORE_DSN or CLOUD_SQL_INSTANCE.`

func runOutbox(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "outbox", outboxSynopsis)
	olderThan := fs.Duration("older-than", time.Minute, "only events created at least this long ago (younger ones are probably still being published by their merge)")
	limit := fs.Int("limit", 500, "at most this many events per run")
	dsn := fs.String("dsn", "", "event store DSN (default: EVENT_STORE_DSN)")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || pos[0] != "flush" {
		return usagef("want exactly one command: flush")
	}
	if *olderThan < 0 {
		return usagef("--older-than must not be negative")
	}
	if *limit < 1 {
		return usagef("--limit must be at least 1")
	}

	cfg, _ := config.Load(c.getenv) // only Env, Sources, Project, the emulator and DB are used; each is checked below
	env, err := config.ParseEnv(c.getenv("BACKBONE_ENV"))
	if err != nil {
		return settingError{fmt.Errorf("%w: flush publishes to events.merged.{env}", err)}
	}
	if *dsn != "" {
		cfg.DB.DSN = *dsn
	}
	project := projectOrDefault(cfg)
	if project == "" {
		return settingError{errors.New("GCP_PROJECT is not set: flush publishes to the project's events.merged topic")}
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	ps, err := openPubSub(ctx, cfg)
	if err != nil {
		return err
	}
	defer ps.Close()

	log := logging.New(c.stderr, slog.LevelInfo)
	eng := merge.New(st, publish.Guard(env, ps), env, cfg.Sources, log)
	n, err := eng.Flush(ctx, *olderThan, *limit)
	fmt.Fprintf(c.stdout, "outbox flush: republished %d event(s) to %s\n", n, env.Names().MergedTopic)
	if err != nil {
		return fmt.Errorf("some events were not republished (they stay processed = 0 for the next flush): %w", err)
	}
	if n == *limit {
		fmt.Fprintf(c.stderr, "the limit (%d) was reached: more events may be waiting, run flush again\n", *limit)
	}
	return nil
}
