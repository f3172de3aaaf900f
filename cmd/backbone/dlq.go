package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/backbone-sync/backbone/shared/deadletter"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql"
)

const dlqUsage = `usage: backbone dlq list|show|redrive [flags]

  list     dead letters, newest first, filtered (--stage, --reason, --record, --since, --until)
  show     everything about one dead letter: backbone dlq show MESSAGE_ID[@DIGEST]
  redrive  put dead letters back on events.error.{env}: by id, by filter, or --retryable

backbone dlq COMMAND --help for a command's flags. The archive is read from
EVENT_STORE_DSN or CLOUD_SQL_INSTANCE; redrive also needs BACKBONE_ENV and
GCP_PROJECT (PUBSUB_EMULATOR_HOST for a local emulator).
`

func runDLQ(ctx context.Context, c *cli, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(c.stderr, dlqUsage)
		return usagef("missing command: list, show or redrive")
	}
	switch args[0] {
	case "-h", "--help", "-help", "help":
		fmt.Fprint(c.stdout, dlqUsage)
		return flag.ErrHelp
	case "list":
		return dlqList(ctx, c, args[1:])
	case "show":
		return dlqShow(ctx, c, args[1:])
	case "redrive":
		return dlqRedrive(ctx, c, args[1:])
	}
	return usagef("unknown dlq command %q: want list, show or redrive", args[0])
}

// openArchive opens the event store the dead letters live in.
func openArchive(ctx context.Context, c *cli, dsn string) (*mysql.Store, error) {
	return storeFromEnv(ctx, c, dsn)
}

func dlqList(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "dlq list", "[--stage S] [--reason R] [--record TYPE:ID] [--since T] [--until T] [--limit N] [--json]\n\nLists archived dead letters, newest first.")
	ff := addFilterFlags(fs)
	asJSON := fs.Bool("json", false, "print a JSON array instead of a table")
	dsn := fs.String("dsn", "", "event store DSN (default: EVENT_STORE_DSN)")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("unexpected arguments %v (to see one dead letter: backbone dlq show ID)", pos)
	}
	f, err := ff.filter(time.Now())
	if err != nil {
		return err
	}
	s, err := openArchive(ctx, c, *dsn)
	if err != nil {
		return err
	}
	defer s.Close()
	rows, err := deadletter.List(ctx, s, f)
	if err != nil {
		return fmt.Errorf("list dead letters: %w", err)
	}
	if *asJSON {
		if rows == nil {
			rows = []deadletter.Summary{}
		}
		return deadletter.WriteJSON(c.stdout, rows)
	}
	if len(rows) == 0 {
		fmt.Fprintln(c.stdout, "no dead letters match")
		return nil
	}
	if err := deadletter.WriteTable(c.stdout, rows); err != nil {
		return err
	}
	if len(rows) == f.Limit {
		fmt.Fprintf(c.stderr, "showing the newest %d; more may match (raise --limit)\n", f.Limit)
	}
	return nil
}

func dlqShow(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "dlq show", "MESSAGE_ID[@DIGEST] [--json]\n\nShows one dead letter: its row, attributes, the decoded error message and earlier redrives.\nWhen several dead letters share the message id (an emulator restarted), the newest, and a list of the others.")
	asJSON := fs.Bool("json", false, "print JSON")
	dsn := fs.String("dsn", "", "event store DSN (default: EVENT_STORE_DSN)")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one message id (find them with backbone dlq list)")
	}
	s, err := openArchive(ctx, c, *dsn)
	if err != nil {
		return err
	}
	defer s.Close()
	v, err := deadletter.Show(ctx, s, pos[0])
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no dead letter %s (find them with backbone dlq list)", pos[0])
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return deadletter.WriteJSON(c.stdout, v)
	}
	return deadletter.WriteView(c.stdout, v)
}
