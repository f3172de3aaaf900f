package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/internal/stress"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/store"
)

func runStress(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "stress", "[--n 1000] [--records N] [--concurrency 16] [--skip-pubsub] [--json] [--dsn DSN]\n\nThe verification run, as the functions' database user (sync_worker):\n  1. least-privilege check of the connected user (fails fast)\n  2. N concurrent appends through the repository\n  3. integrity check: counts, no duplicates, exact microseconds, gap-free chains\n  4. end-to-end probe: a raw event published to events.raw.{env} must be merged (needs a running\n     backbone, e.g. make dev); --skip-pubsub drops it\nExits 1 on any failure.")
	n := fs.Int("n", 1000, "concurrent appends")
	records := fs.Int("records", 0, "distinct records (default n/10)")
	conc := fs.Int("concurrency", 16, "concurrent writers")
	skip := fs.Bool("skip-pubsub", false, "skip the end-to-end Pub/Sub probe")
	asJSON := fs.Bool("json", false, "print a JSON summary instead of progress")
	dsn := fs.String("dsn", "", "DSN of the user to check (default: EVENT_STORE_DSN)")
	probeTimeout := fs.Duration("probe-timeout", 30*time.Second, "how long the probe waits for the merged event")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 || *n < 1 || *conc < 1 {
		return usagef("--n and --concurrency must be positive; no arguments")
	}
	cfg, err := loadConfig(c)
	if err != nil && !*skip {
		return err // the probe needs BACKBONE_ENV
	}
	if *dsn != "" {
		cfg.DB.DSN = *dsn
	}
	s, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	db := s.DB()
	defer s.Close()
	o := stress.Options{Appends: *n, Records: *records, Concurrency: *conc}
	if !*asJSON {
		o.Progress = func(l string) { fmt.Fprintln(c.stdout, l) }
	}
	if !*skip {
		ps, err := openPubSub(ctx, cfg)
		if err != nil {
			return err
		}
		defer ps.Close()
		o.Probe = func(ctx context.Context) error {
			return probe(ctx, s, publish.Guard(cfg.Env, ps), cfg.Env, *probeTimeout)
		}
	}
	sum := stress.Run(ctx, s, db, o)
	if *asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(sum); err != nil {
			return err
		}
	}
	if !sum.OK {
		return errors.New("verification failed")
	}
	if !*asJSON {
		fmt.Fprintln(c.stdout, "all steps passed")
	}
	return nil
}

// probe publishes one raw event and waits until the running backbone has
// merged it and published the merged event (processed = 1).
func probe(ctx context.Context, s store.Store, pub publish.Publisher, env config.Env, timeout time.Duration) error {
	id := uuid.NewString()
	raw := event.Raw{ID: id, RecordType: stress.RecordType + "_probe", RecordID: id, Source: config.DefaultSources[0],
		Timestamp: event.NewTime(time.Now()), Changes: map[string]json.RawMessage{"probe": json.RawMessage(`true`)}}
	data, _ := json.Marshal(raw)
	if _, err := pub.Publish(ctx, env.Names().RawTopic, publish.Message{Data: data, OrderingKey: publish.OrderingKey(raw.RecordType, raw.RecordID)}); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		e, err := s.EventByID(ctx, id)
		if err == nil && e.Processed {
			return nil
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("probe event %s was not merged and published within %s: is the backbone running for %s?", id, timeout, env)
}
