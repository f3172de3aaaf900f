package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"time"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/deadletter"
	"github.com/backbone-sync/backbone/shared/publish"
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

func dlqRedrive(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "dlq redrive", "(MESSAGE_ID[@DIGEST]... | --stage S --reason R --record TYPE:ID --since T --until T [--limit N] | --all | --retryable) [--dry-run] [--rate N] [--json]\n\n"+
		"Puts dead letters back on events.error.{env} (redrive counter +1, retryable, attribute redrive_of), paced, each audited,\n"+
		"each record's oldest version first. A MESSAGE_ID names every dead letter archived under it; MESSAGE_ID@DIGEST one of them.\n"+
		"Dead-letter rows are never changed. --dry-run publishes nothing, checks that the error topic exists and that this\n"+
		"principal may publish to it, and says which were redriven before.\n"+
		"--retryable (the scheduled job): only failures that were transient (target 5xx/429/timeout, store or Pub/Sub\n"+
		"unreachable, version gap), never a permanent rejection, each at most once, and only for stages whose target\n"+
		"answers a health probe (SUITEX_BASE_URL, NETSUITE_BASE_URL, the event store for merge).")
	ff := addFilterFlags(fs)
	all := fs.Bool("all", false, "redrive every dead letter (up to --limit) when no id or filter is given")
	retryable := fs.Bool("retryable", false, "only transient failures never redriven before, after a health probe of their target (with or without a filter)")
	maxRedrives := fs.Int("max-redrives", deadletter.DefaultMaxAutoRedrives, "with --retryable: leave a failure alone once it has come back this many times")
	probeTimeout := fs.Duration("probe-timeout", 5*time.Second, "with --retryable: how long each health probe may take")
	dryRun := fs.Bool("dry-run", false, "publish and audit nothing; check the topic and print what would be redriven")
	rate := fs.Float64("rate", 10, "publish at most this many per second (the rate cap)")
	asJSON := fs.Bool("json", false, "print one JSON object per line per dead letter (JSON lines)")
	dsn := fs.String("dsn", "", "event store DSN (default: EVENT_STORE_DSN)")
	ids, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(ids) > 0 && (ff.set() || *all || *retryable):
		return usagef("give message ids or a filter, not both")
	case len(ids) == 0 && !ff.set() && !*all && !*retryable:
		return usagef("say what to redrive: message ids, a filter (--stage, --reason, --record, --since, --until), --all or --retryable")
	case *maxRedrives < 1:
		return usagef("--max-redrives %d: want at least 1", *maxRedrives)
	}
	f, err := ff.filter(time.Now())
	if err != nil {
		return err
	}
	// The oldest matches: a redrive replays in version order, and leaving
	// out the oldest of a record would turn its newer ones into gaps.
	f.OldestFirst = true
	pacer, err := deadletter.NewPacer(*rate, deadletter.RealClock{})
	if err != nil {
		return usagef("--rate: %v", err)
	}
	cfg, _ := config.Load(c.getenv) // only Env, Project, the emulator and the base URLs are used; each is checked where used
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
	if len(ids) == 0 && len(letters) == f.Limit {
		fmt.Fprintf(c.stderr, "taking the oldest %d matches; more may match (raise --limit, or run again)\n", f.Limit)
	}
	var held []deadletter.Held
	if *retryable {
		checks := redriveHealthChecks(cfg, s, *probeTimeout)
		plan, err := deadletter.PlanRetryable(ctx, s, letters, *maxRedrives, checks)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stderr, "retryable: %d to redrive; left alone: %d permanent or past the limit, %d redriven before\n",
			len(plan.Ready)+heldCount(plan.Held), plan.Permanent, plan.Redriven)
		for _, h := range plan.Held {
			fmt.Fprintf(c.stderr, "holding back %d %s dead letter(s) until their target is healthy: %s\n", h.Count, deadletter.Printable(h.Stage), deadletter.Printable(h.Error))
		}
		letters, held = plan.Ready, plan.Held
	}
	if len(letters) == 0 {
		if len(held) > 0 {
			return fmt.Errorf("%d dead letter(s) held back: their target is not healthy yet (see above)", heldCount(held))
		}
		fmt.Fprintln(c.stdout, "no dead letters match: nothing to redrive")
		return nil
	}

	r := &deadletter.Redriver{Store: s, Env: env, Limiter: pacer}
	if *retryable {
		r.Note = "automatic redrive of a transient failure (--retryable)"
	}
	project := projectOrDefault(cfg)
	if project == "" {
		return settingError{errors.New("GCP_PROJECT is not set: redrive publishes to the project's events.error topic")}
	}
	client, err := publish.NewClient(ctx, project, cfg.EmulatorHost)
	if err != nil {
		return err
	}
	defer client.Close()
	// Checked before anything is published, dry run or not: a redrive that
	// cannot publish must fail here, not after reporting success.
	checked, err := publish.CheckTopic(ctx, client, project, env.Names().ErrorTopic)
	if err != nil {
		return fmt.Errorf("redrive cannot publish: %w", err)
	}
	fmt.Fprintf(c.stderr, "topic %s: %s\n", env.Names().ErrorTopic, checked)
	if !*dryRun {
		ps := publish.FromClient(client)
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
	if len(held) > 0 {
		return fmt.Errorf("%d dead letter(s) held back: their target is not healthy yet (see above)", heldCount(held))
	}
	return nil
}

func heldCount(held []deadletter.Held) int {
	n := 0
	for _, h := range held {
		n += h.Count
	}
	return n
}

// redriveHealthChecks probes what each stage's redrive depends on: the
// target's base URL for a sink, the event store for the merge. A stage
// without a check (unknown) is held back.
func redriveHealthChecks(cfg config.Config, s store.Store, timeout time.Duration) map[string]deadletter.HealthCheck {
	client := &http.Client{Timeout: timeout}
	return map[string]deadletter.HealthCheck{
		store.StageSuiteX:   named("SUITEX_BASE_URL", deadletter.HTTPReachable(client, cfg.SuiteX.BaseURL, timeout)),
		store.StageNetSuite: named("NETSUITE_BASE_URL", deadletter.HTTPReachable(client, cfg.NetSuite.BaseURL, timeout)),
		store.StageMerge: func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			return s.Ping(ctx)
		},
	}
}

// named prefixes a check's error with the variable it probes.
func named(variable string, check deadletter.HealthCheck) deadletter.HealthCheck {
	return func(ctx context.Context) error {
		if err := check(ctx); err != nil {
			return fmt.Errorf("%s: %w", variable, err)
		}
		return nil
	}
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
