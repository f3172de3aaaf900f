package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/deadletter"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql"
)

const dlqUsage = `usage: backbone dlq list|show|redrive [flags]

  list     dead letters, newest first, filtered (--stage, --reason, --record, --since, --until)
  show     everything about one dead letter: backbone dlq show MESSAGE_ID
  redrive  put dead letters back on events.error.{env}: by id, or by filter

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

// parseMixed parses flags that may come before or after positional
// arguments (`show ID --json` as well as `show --json ID`); the standard
// flag package stops at the first positional one.
func parseMixed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parse(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// filterFlags are the selection flags list and redrive share.
type filterFlags struct {
	stage, reason, record, since, until *string
	limit                               *int
}

func addFilterFlags(fs *flag.FlagSet) filterFlags {
	return filterFlags{
		stage:  fs.String("stage", "", "only this stage (merge, netsuite, suitex, unknown)"),
		reason: fs.String("reason", "", "only this reason code (e.g. http_503, invalid_json, undecodable)"),
		record: fs.String("record", "", "only this record, TYPE:ID (e.g. customer:C-1001)"),
		since:  fs.String("since", "", "archived at or after: RFC 3339 time, or a duration ago (24h, 7d)"),
		until:  fs.String("until", "", "archived before: RFC 3339 time, or a duration ago"),
		limit:  fs.Int("limit", 100, "at most this many, newest first"),
	}
}

// set reports whether any selecting flag was given (--limit alone selects
// nothing).
func (f filterFlags) set() bool {
	return *f.stage != "" || *f.reason != "" || *f.record != "" || *f.since != "" || *f.until != ""
}

// deadLetterStages are the values of dead_letters.stage: the stage that failed.
var deadLetterStages = []string{store.StageMerge, store.StageNetSuite, store.StageSuiteX, deadletter.StageUnknown}

func (f filterFlags) filter(now time.Time) (store.DeadLetterFilter, error) {
	out := store.DeadLetterFilter{Stage: *f.stage, Reason: *f.reason, Limit: *f.limit}
	if err := oneOf("--stage", *f.stage, deadLetterStages...); err != nil {
		return out, err
	}
	if *f.limit < 1 {
		return out, usagef("--limit %d: want at least 1", *f.limit)
	}
	if *f.record != "" {
		rt, rid, err := deadletter.ParseRecord(*f.record)
		if err != nil {
			return out, usagef("--record: %v", err)
		}
		out.RecordType, out.RecordID = rt, rid
	}
	var err error
	if *f.since != "" {
		if out.Since, err = deadletter.ParseWhen(*f.since, now); err != nil {
			return out, usagef("--since: %v", err)
		}
	}
	if *f.until != "" {
		if out.Until, err = deadletter.ParseWhen(*f.until, now); err != nil {
			return out, usagef("--until: %v", err)
		}
	}
	if !out.Since.IsZero() && !out.Until.IsZero() && !out.Since.Before(out.Until) {
		return out, usagef("--since %s is not before --until %s", *f.since, *f.until)
	}
	return out, nil
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
	fs := newFlags(c, "dlq show", "MESSAGE_ID [--json]\n\nShows one dead letter: its row, attributes, the decoded error message and earlier redrives.")
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

func dlqRedrive(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "dlq redrive", "(MESSAGE_ID... | --stage S --reason R --record TYPE:ID --since T --until T [--limit N] | --all) [--dry-run] [--rate N] [--json]\n\n"+
		"Puts dead letters back on events.error.{env} (redrive counter +1, retryable, attribute redrive_of), paced, each audited.\n"+
		"Dead-letter rows are never changed. --dry-run publishes nothing and says which were redriven before.")
	ff := addFilterFlags(fs)
	all := fs.Bool("all", false, "redrive every dead letter (up to --limit) when no id or filter is given")
	dryRun := fs.Bool("dry-run", false, "publish and audit nothing; print what would be redriven")
	rate := fs.Float64("rate", 10, "publish at most this many per second")
	asJSON := fs.Bool("json", false, "print one JSON object per line per dead letter (JSON lines)")
	dsn := fs.String("dsn", "", "event store DSN (default: EVENT_STORE_DSN)")
	ids, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(ids) > 0 && (ff.set() || *all):
		return usagef("give message ids or a filter, not both")
	case len(ids) == 0 && !ff.set() && !*all:
		return usagef("say what to redrive: message ids, a filter (--stage, --reason, --record, --since, --until), or --all")
	}
	f, err := ff.filter(time.Now())
	if err != nil {
		return err
	}
	pacer, err := deadletter.NewPacer(*rate, deadletter.RealClock{})
	if err != nil {
		return usagef("--rate: %v", err)
	}
	cfg, _ := config.Load(c.getenv) // only Env, Project and the emulator are used; each is checked below
	env, err := config.ParseEnv(c.getenv("BACKBONE_ENV"))
	if err != nil {
		return settingError{fmt.Errorf("%w: redrive publishes to events.error.{env}", err)}
	}

	s, err := openArchive(ctx, c, *dsn)
	if err != nil {
		return err
	}
	defer s.Close()
	letters, err := deadletter.Select(ctx, s, ids, f)
	if err != nil {
		return err
	}
	if len(letters) == 0 {
		fmt.Fprintln(c.stdout, "no dead letters match: nothing to redrive")
		return nil
	}
	if len(ids) == 0 && len(letters) == f.Limit {
		fmt.Fprintf(c.stderr, "taking the newest %d matches; more may match (raise --limit)\n", f.Limit)
	}

	r := &deadletter.Redriver{Store: s, Env: env, Limiter: pacer}
	if !*dryRun {
		project := projectOrDefault(cfg)
		if project == "" {
			return settingError{errors.New("GCP_PROJECT is not set: redrive publishes to the project's events.error topic")}
		}
		ps, err := publish.NewPubSub(ctx, project, cfg.EmulatorHost)
		if err != nil {
			return err
		}
		defer ps.Close()
		r.Pub = publish.Guard(env, ps)
	}
	enc := json.NewEncoder(c.stdout) // JSON lines: one compact object per dead letter, as it happens
	enc.SetEscapeHTML(false)
	res, err := r.Redrive(ctx, letters, *dryRun, func(o deadletter.Outcome) {
		if *asJSON {
			_ = enc.Encode(o)
			return
		}
		printOutcome(c, o)
	})
	if *dryRun {
		fmt.Fprintf(c.stderr, "dry run: %d would be redriven to %s, %d skipped, %d failed; nothing published\n",
			res.WouldRedrive, env.Names().ErrorTopic, res.Skipped, res.Failed)
	} else {
		fmt.Fprintf(c.stderr, "redrive: %d redriven to %s, %d skipped, %d failed\n",
			res.Redriven, env.Names().ErrorTopic, res.Skipped, res.Failed)
	}
	if err != nil {
		return err
	}
	if res.Failed > 0 || res.Skipped > 0 {
		return fmt.Errorf("%d dead letter(s) not redriven (%d skipped, %d failed): see above", res.Skipped+res.Failed, res.Skipped, res.Failed)
	}
	return nil
}

func printOutcome(c *cli, o deadletter.Outcome) {
	p := deadletter.Printable
	what := fmt.Sprintf("%s (%s %s", p(o.MessageID), p(o.Stage), p(o.Reason))
	if r := o.Record(); r != "" {
		what += ", " + p(r)
	}
	what += ")"
	before := "never redriven before"
	if o.PreviousRedrives > 0 {
		before = fmt.Sprintf("redriven %d time(s) before, last at %s", o.PreviousRedrives, o.LastRedrivenAt.UTC().Format(time.RFC3339Nano))
	}
	switch o.Action {
	case deadletter.ActionWouldRedrive:
		fmt.Fprintf(c.stdout, "would redrive %s to %s, key %q, as redrive %d; %s\n", what, o.Topic, o.OrderingKey, o.Redrive, before)
	case deadletter.ActionRedriven:
		fmt.Fprintf(c.stdout, "redriven %s as message %s on %s (redrive %d)\n", what, o.PublishedID, o.Topic, o.Redrive)
	case deadletter.ActionSkipped:
		fmt.Fprintf(c.stdout, "skipped %s: %s\n", what, p(o.Error))
	default:
		fmt.Fprintf(c.stdout, "FAILED %s: %s\n", what, p(o.Error))
	}
}
