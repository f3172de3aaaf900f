package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/backbone-sync/backbone/internal/devstack"
	"github.com/backbone-sync/backbone/internal/devstack/gcloudemu"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/logging"
	"github.com/backbone-sync/backbone/shared/publish/pubsub"
)

// startDev runs the dev stack with this binary's wiring; the console's
// identity is the local OS user unless o names one.
func startDev(ctx context.Context, o devstack.Options) (*devstack.Stack, error) {
	if o.User == "" {
		o.User = localUser()
	}
	return devstack.Start(ctx, o, devWire)
}

// devWire wires the five functions as `serve` does, publishing through the
// stack's client.
func devWire(ctx context.Context, cfg config.Config, ps *pubsub.Publisher, log *slog.Logger) (devstack.Functions, error) {
	a, err := wire(ctx, cfg, config.Targets, log, wireOptions{pubsub: ps})
	if err != nil {
		return devstack.Functions{}, err
	}
	return devstack.Functions{Handlers: a.handlers, Store: a.store}, nil
}

// devProjectFrom is the Pub/Sub project of dev and of every verb run from
// its shell: GCP_PROJECT, then GOOGLE_CLOUD_PROJECT, then backbone-dev, so
// that an exported project in a Google Cloud shell cannot split them.
func devProjectFrom(getenv func(string) string) string {
	for _, k := range []string{"GCP_PROJECT", "GOOGLE_CLOUD_PROJECT"} {
		if v := getenv(k); v != "" {
			return v
		}
	}
	return devstack.Project
}

func runDev(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "dev", "[--env sandbox] [--port 8080] [--pubsub-port 8085] [--emulator pstest|gcloud] [--min-backoff 2s] [--max-backoff 60s] [--debug]\n\n"+
		"Runs the whole backbone on this machine: an embedded Pub/Sub emulator (pstest; --emulator gcloud starts Google's,\n"+
		"which needs Java and the "+gcloudemu.Package+" package) unless PUBSUB_EMULATOR_HOST is set, in project\n"+
		"GCP_PROJECT (then GOOGLE_CLOUD_PROJECT, then "+devstack.Project+"); the event store at EVENT_STORE_DSN (default "+devstack.DefaultDSN+",\n"+
		"created and migrated); the topology provisioned; the five functions served by the Functions Framework and fed\n"+
		"push-style; local fakes of NetSuite and SuiteX unless NETSUITE_BASE_URL / SUITEX_BASE_URL are set. Ctrl-C stops it.")
	envName := fs.String("env", "", "environment (default: BACKBONE_ENV, else sandbox)")
	port := fs.Int("port", 8080, "port of the functions (0: any free port)")
	psPort := fs.Int("pubsub-port", 8085, "port of the started Pub/Sub emulator (0: any)")
	emulator := fs.String("emulator", devstack.EmulatorPstest, "Pub/Sub emulator to start when PUBSUB_EMULATOR_HOST is unset: pstest (embedded) or gcloud")
	// The production policy (10s..600s) scaled down by five and ten: five
	// attempts on the retry subscription span about 30 s, so a 15-second
	// store outage exhausts nothing, and a nacked message is back in 2 s.
	minB := fs.Duration("min-backoff", 2*time.Second, "first redelivery delay (Pub/Sub: 10s)")
	maxB := fs.Duration("max-backoff", 60*time.Second, "longest redelivery delay (Pub/Sub: 600s)")
	debug := fs.Bool("debug", false, "log every delivery attempt")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("unexpected arguments %v", fs.Args())
	}
	if err := oneOf("--emulator", *emulator, devstack.EmulatorPstest, devstack.EmulatorGcloud); err != nil {
		return err
	}
	if *port < 0 || *port > 65535 || *psPort < 0 || *psPort > 65535 {
		return usagef("--port and --pubsub-port: want 0-65535")
	}
	e := *envName
	if e == "" {
		e = c.getenv("BACKBONE_ENV")
	}
	if e == "" {
		e = string(config.Sandbox)
	}
	env, err := config.ParseEnv(e)
	if err != nil {
		return usageError{err.Error()}
	}
	dsn := c.getenv("EVENT_STORE_DSN")
	if dsn == "" {
		dsn = devstack.DefaultDSN
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := logging.New(c.stderr, level)
	if *emulator == devstack.EmulatorGcloud && c.getenv("PUBSUB_EMULATOR_HOST") == "" {
		fmt.Fprintln(c.stdout, "starting the gcloud Pub/Sub emulator (a few seconds) ...")
	}
	d, err := startDev(ctx, devstack.Options{Env: env, DSN: dsn, Project: devProjectFrom(c.getenv), EmulatorHost: c.getenv("PUBSUB_EMULATOR_HOST"),
		Emulator: *emulator, PubSubPort: *psPort,
		FuncAddr: "127.0.0.1:" + strconv.Itoa(*port), NetSuiteURL: c.getenv("NETSUITE_BASE_URL"), SuiteXURL: c.getenv("SUITEX_BASE_URL"),
		MinBackoff: *minB, MaxBackoff: *maxB, Log: log, Getenv: c.getenv})
	if err != nil {
		return err
	}
	d.PrintBanner(c.stdout)
	<-ctx.Done()
	fmt.Fprintln(c.stdout, "\nstopping: finishing deliveries in flight ...")
	d.Stop()
	fmt.Fprintln(c.stdout, "stopped")
	return nil
}
