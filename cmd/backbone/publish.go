package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/backbone-sync/backbone/internal/eventfile"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/publish/pubsub"
)

func runPublish(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "publish", "[--verbatim] [--verbose] FILE|-\n\nPublishes raw events to events.raw.{BACKBONE_ENV}, in file order (each record's events keep it): FILE holds\n"+
		"one JSON object, a JSON array of objects, or JSON lines. Every event is checked first; if one is not JSON,\n"+
		"nothing is published. Prints one summary line (--verbose: each message id too). Uses PUBSUB_EMULATOR_HOST when set.")
	verbatim := fs.Bool("verbatim", false, "publish each line as is, even when it is not valid JSON (to test poison messages)")
	verbose := fs.Bool("verbose", false, "print each event's message id and record")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one FILE (or - for standard input)")
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	var in io.Reader = os.Stdin
	if name := fs.Arg(0); name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	data, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	msgs, err := eventfile.Split(data, *verbatim)
	if err != nil {
		var bad eventfile.Rejected
		if errors.As(err, &bad) {
			fmt.Fprintf(c.stdout, "publish: 0 published, %d rejected locally (nothing is published unless every event is JSON)\n", bad.N)
		}
		return err
	}
	ps, err := openPubSub(ctx, cfg)
	if err != nil {
		return err
	}
	defer ps.Close()
	pub := publish.Guard(cfg.Env, ps)
	topic := cfg.Env.Names().RawTopic
	where := fmt.Sprintf("%s (project %s", topic, projectOrDefault(cfg))
	if cfg.EmulatorHost != "" {
		where += ", emulator " + cfg.EmulatorHost
	}
	where += ")"
	// One at a time, in file order: a record's later events must not overtake
	// its earlier ones (the ordering key keeps them in order only once
	// published).
	for i, m := range msgs {
		id, err := pub.Publish(ctx, topic, m)
		if err != nil {
			fmt.Fprintf(c.stdout, "publish: %d published to %s, 0 rejected locally; event %d failed\n", i, where, i+1)
			return fmt.Errorf("event %d of %d: %w", i+1, len(msgs), err)
		}
		if *verbose {
			key := m.OrderingKey
			if key == "" {
				key = "(no record)"
			}
			fmt.Fprintf(c.stdout, "%s  %s\n", id, key)
		}
	}
	fmt.Fprintf(c.stdout, "publish: %d published to %s, 0 rejected locally\n", len(msgs), where)
	return nil
}

// openPubSub connects to Pub/Sub, first checking that an emulator answers:
// the client would retry an unreachable one for ever.
func openPubSub(ctx context.Context, cfg config.Config) (*pubsub.Publisher, error) {
	if h := cfg.EmulatorHost; h != "" {
		conn, err := net.DialTimeout("tcp", h, 3*time.Second)
		if err != nil {
			return nil, fmt.Errorf("the Pub/Sub emulator at %s (PUBSUB_EMULATOR_HOST) is not reachable: %w (is backbone dev running? export the lines its banner prints)", h, err)
		}
		_ = conn.Close()
	}
	return pubsub.New(ctx, projectOrDefault(cfg), cfg.EmulatorHost)
}

// projectOrDefault lets local runs against the emulator work without a
// project: the emulator accepts any.
func projectOrDefault(cfg config.Config) string {
	if cfg.Project == "" && cfg.EmulatorHost != "" {
		return "backbone-dev"
	}
	return cfg.Project
}
