package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/deadletter"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/publish/pubsub"
)

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
	job := deadletter.Job{Store: s, Env: env, Limiter: pacer, IDs: ids, Filter: f, DryRun: *dryRun,
		Connect: func(ctx context.Context) (publish.Publisher, string, func(), error) {
			return redriveTopic(ctx, cfg, env)
		},
		Stdout: c.stdout, Stderr: c.stderr}
	if *retryable {
		job.Retryable = &deadletter.Retryable{MaxRedrives: *maxRedrives,
			Checks: deadletter.HealthChecks(cfg.SuiteX.BaseURL, cfg.NetSuite.BaseURL, s, *probeTimeout)}
	}
	enc := json.NewEncoder(c.stdout) // JSON lines: one compact object per dead letter, as it happens
	enc.SetEscapeHTML(false)
	job.Each = func(o deadletter.Outcome) {
		if *asJSON {
			_ = enc.Encode(o)
			return
		}
		_ = deadletter.WriteOutcome(c.stdout, o)
	}
	return job.Run(ctx)
}

// redriveTopic connects to env's error topic in cfg's project and checks
// that it takes publishes.
func redriveTopic(ctx context.Context, cfg config.Config, env config.Env) (publish.Publisher, string, func(), error) {
	project := projectOrDefault(cfg)
	if project == "" {
		return nil, "", nil, settingError{errors.New("GCP_PROJECT is not set: redrive publishes to the project's events.error topic")}
	}
	client, err := pubsub.NewClient(ctx, project, cfg.EmulatorHost)
	if err != nil {
		return nil, "", nil, err
	}
	checked, err := pubsub.CheckTopic(ctx, client, project, env.Names().ErrorTopic)
	if err != nil {
		_ = client.Close()
		return nil, "", nil, fmt.Errorf("redrive cannot publish: %w", err)
	}
	ps := pubsub.FromClient(client)
	return publish.Guard(env, ps), checked, func() { _ = ps.Close(); _ = client.Close() }, nil
}
