package main

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/publish/pubsub"
	"github.com/backbone-sync/backbone/shared/topology"
)

const provisionSynopsis = `--env sandbox|production [--project P] [--dry-run] [--recreate]
       [--endpoint-base URL | --endpoints Target=URL,...] [--invoker SA_EMAIL] [--pull]
       [--project-number N] [--ack-deadline 60s]

Creates or updates the Pub/Sub topology of one environment (SPEC §2): its 4
topics and 5 subscriptions, and the dead-letter roles of the Pub/Sub service
agent. Idempotent: a second run changes nothing. --dry-run prints the diff only.

With endpoints the subscriptions push to them with an OIDC token of --invoker;
without, they are pull subscriptions (local runs). On real Pub/Sub, pull must
be asked for with --pull, so that a forgotten --endpoints cannot turn a
deployed environment's push subscriptions off.

Message ordering (and a subscription's topic or filter) cannot be changed on an
existing subscription: such drift is reported, and fixed only with --recreate,
which deletes and recreates the subscription and loses its unacked messages.

PUBSUB_EMULATOR_HOST points it at an emulator, where the IAM step is skipped.`

func runProvision(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "provision", provisionSynopsis)
	envFlag := fs.String("env", "", "environment: sandbox or production (required)")
	project := fs.String("project", "", "project id (default: GCP_PROJECT, then GOOGLE_CLOUD_PROJECT)")
	dryRun := fs.Bool("dry-run", false, "print what differs and change nothing")
	recreate := fs.Bool("recreate", false, "delete and recreate subscriptions whose ordering, topic or filter differ (their unacked messages are lost)")
	endpointBase := fs.String("endpoint-base", "", "one server hosting every function at BASE/{Target}")
	endpointList := fs.String("endpoints", "", "push endpoint per function: Merge=URL,NetSuiteSink=URL,SuiteXSink=URL,Retry=URL,DLQArchive=URL")
	invoker := fs.String("invoker", "", "service account email whose OIDC token authenticates the pushes")
	pull := fs.Bool("pull", false, "on real Pub/Sub: provision pull subscriptions (no endpoints)")
	projectNumber := fs.String("project-number", "", "project number, to grant the Pub/Sub service agent its dead-letter roles (required on real Pub/Sub)")
	ackDeadline := fs.Duration("ack-deadline", topology.DefaultAckDeadline, "ack deadline of every subscription, 10s-600s")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("unexpected arguments %v", fs.Args())
	}
	if *envFlag == "" {
		return usagef("--env is required: sandbox or production")
	}
	env, err := config.ParseEnv(*envFlag)
	if err != nil {
		return usageError{strings.Replace(err.Error(), "BACKBONE_ENV", "--env", 1)}
	}
	cfg, _ := config.Load(c.getenv) // the project and the emulator only
	if *project == "" {
		*project = cfg.Project
	}
	if *project == "" {
		return usagef("no project: pass --project or set GCP_PROJECT")
	}
	emulator := cfg.EmulatorHost

	endpoints, err := provisionEndpoints(*endpointBase, *endpointList)
	if err != nil {
		return err
	}
	if endpoints != nil && *pull {
		return usagef("--pull and endpoints exclude each other")
	}
	if emulator == "" {
		if endpoints == nil && !*pull {
			return usagef("no --endpoints or --endpoint-base: on real Pub/Sub pass them, or --pull to provision pull subscriptions")
		}
		for target, ep := range endpoints {
			if !strings.HasPrefix(ep, "https://") {
				return usagef("endpoint %s=%q: Pub/Sub pushes only to https endpoints", target, ep)
			}
		}
		if *projectNumber == "" {
			return usagef("--project-number is required on real Pub/Sub, to grant the dead-letter roles (gcloud projects describe %s --format='value(projectNumber)')", *project)
		}
	}

	want, err := topology.Desired(env, endpoints, topology.Options{AckDeadline: *ackDeadline, Invoker: *invoker, ProjectNumber: *projectNumber, Emulator: emulator})
	if err != nil {
		return usageError{err.Error()}
	}
	client, err := pubsub.NewClient(ctx, *project, emulator)
	if err != nil {
		return err
	}
	defer client.Close()

	where := "project " + *project
	if emulator != "" {
		where += " on the emulator at " + emulator
	}
	mode := "provision"
	if *dryRun {
		mode = "provision (dry run: nothing is changed)"
	}
	fmt.Fprintf(c.stdout, "%s %s in %s\n", mode, env, where)

	changes, applyErr := topology.Apply(ctx, client, want, topology.Mode{DryRun: *dryRun, Recreate: *recreate})
	if err := changes.Write(c.stdout); err != nil {
		return err
	}
	if applyErr != nil {
		return fmt.Errorf("provision %s: %w", env, applyErr)
	}
	fmt.Fprintln(c.stdout, changes.Summary(want, *dryRun))
	return nil
}

// provisionEndpoints turns --endpoint-base or --endpoints into target -> URL
// (nil when neither is given).
func provisionEndpoints(base, list string) (map[string]string, error) {
	if base != "" && list != "" {
		return nil, usagef("--endpoint-base and --endpoints exclude each other")
	}
	if base != "" {
		if u, err := url.Parse(base); err != nil || u.Host == "" {
			return nil, usagef("--endpoint-base %q is not an absolute URL", base)
		}
		m := map[string]string{}
		for _, t := range config.Targets {
			m[t] = strings.TrimRight(base, "/") + "/" + t
		}
		return m, nil
	}
	if list == "" {
		return nil, nil
	}
	m := map[string]string{}
	for _, pair := range strings.Split(list, ",") {
		target, ep, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || target == "" || ep == "" {
			return nil, usagef("--endpoints entry %q: want Target=URL", pair)
		}
		if !slices.Contains(config.Targets, target) {
			return nil, usagef("--endpoints: unknown target %q: targets are %s", target, strings.Join(config.Targets, ", "))
		}
		if _, dup := m[target]; dup {
			return nil, usagef("--endpoints: %s given twice", target)
		}
		m[target] = ep
	}
	return m, nil
}
