// Command backbone is the one binary of the event backbone: the deployed
// function server (`serve`) and every operator and developer verb. main only
// parses and wires; the work lives in shared/ and functions/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/backbone-sync/backbone/shared/config"
)

// cli is what every verb gets: its streams and the environment.
type cli struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

type command struct {
	summary string
	run     func(ctx context.Context, c *cli, args []string) error
}

// commands is the verb table (SPEC §8). Each verb lives in its own file.
func commands() map[string]command {
	return map[string]command{
		"serve":     {"serve the function named by FUNCTION_TARGET on PORT (all five when unset)", runServe},
		"dev":       {"run the whole backbone on this machine", runDev},
		"migrate":   {"apply migrations: up, down, status", runMigrate},
		"grants":    {"print (or --apply) the least-privilege sync_worker grants", runGrants},
		"provision": {"create or update the Pub/Sub topology of --env", runProvision},
		"publish":   {"publish raw events from a JSON / JSON-lines file", runPublish},
		"stress":    {"verification run: privileges, concurrent appends, integrity, Pub/Sub probe", runStress},
		"bench":     {"throughput and latency beside the raw database limit", runBench},
		"dlq":       {"list, show, redrive dead letters", runDLQ},
		"outbox":    {"flush: republish events left unprocessed", runOutbox},
		"trace":     {"the full history of one record (record_type:record_id)", runTrace},
		"status":    {"health at a glance; exits 1 past thresholds", runStatus},
		"console":   {"the operators' web console (health, records, dead letters)", runConsole},
		"rebuild":   {"rebuild the projection tables from events and the audit log", runRebuild},
	}
}

// usageError makes the process exit 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, &cli{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, c *cli, args []string) (code int) {
	// No Go panic reaches the user (SPEC §8): one line, exit 1.
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(c.stderr, "backbone: internal error: %v\n", r)
			code = 1
		}
	}()
	cmds := commands()
	if len(args) == 0 {
		printUsage(c.stderr, cmds)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help":
		printUsage(c.stdout, cmds)
		return 0
	case "help":
		if len(args) == 1 {
			printUsage(c.stdout, cmds)
			return 0
		}
		// help VERB [COMMAND] is VERB [COMMAND] --help.
		args = append(append([]string(nil), args[1:]...), "--help")
	}
	verb := args[0]
	cmd, ok := cmds[verb]
	if !ok {
		fmt.Fprintf(c.stderr, "backbone: unknown verb %q\n\n", verb)
		printUsage(c.stderr, cmds)
		return 2
	}
	// One rule for every verb: an invalid BACKBONE_ENV is a usage error,
	// whether or not the verb needs the environment.
	if !helpRequested(args[1:]) {
		if v := c.getenv("BACKBONE_ENV"); v != "" {
			if _, err := config.ParseEnv(v); err != nil {
				fmt.Fprintf(c.stderr, "backbone %s: %v\n", verb, err)
				return 2
			}
		}
	}
	err := cmd.run(ctx, c, args[1:])
	var ue usageError
	var se settingError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "backbone %s: %v (see: backbone %s --help)\n", verb, oneLine(err), verb)
		return 2
	case errors.As(err, &se):
		fmt.Fprintf(c.stderr, "backbone %s: %v\n", verb, oneLine(explainPubSub(c, err)))
		return 2
	default:
		fmt.Fprintf(c.stderr, "backbone %s: %v\n", verb, oneLine(explainPubSub(c, err)))
		return 1
	}
}

// helpRequested reports whether args ask for help (before any "--").
func helpRequested(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// oneLine joins a multi-error's lines with "; ", so that every failure is
// one line (errors.Join separates with newlines).
func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}

// explainPubSub adds to a missing-topic error which project and emulator
// were used and how to reach the ones `dev` runs: the usual cause is a shell
// whose GCP_PROJECT differs from the dev stack's.
func explainPubSub(c *cli, err error) error {
	if status.Code(err) != codes.NotFound && !strings.Contains(err.Error(), "NotFound") {
		return err
	}
	if !strings.Contains(err.Error(), "topic") && !strings.Contains(err.Error(), "subscription") {
		return err
	}
	project := devProjectFrom(c.getenv)
	h := c.getenv("PUBSUB_EMULATOR_HOST")
	if h == "" {
		return fmt.Errorf("%w: project %s on real Pub/Sub (PUBSUB_EMULATOR_HOST is unset) has no such topic; provision it (backbone provision --env ENV --project %s), or set GCP_PROJECT to the project it was provisioned in", err, project, project)
	}
	return fmt.Errorf("%w: project %s on the emulator at %s has no such topic; run backbone dev (it provisions the topology) and use the export line its banner prints, which sets GCP_PROJECT and PUBSUB_EMULATOR_HOST", err, project, h)
}

func printUsage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: backbone VERB [flags]   (backbone VERB --help for a verb's flags)")
	fmt.Fprintln(w, "\nverbs:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
}

// newFlags returns a flag set whose errors are usage errors. Its help goes
// to standard output; errors are reported once, by run.
func newFlags(c *cli, verb, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(verb, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(c.stdout, "usage: backbone %s %s\n", verb, synopsis)
		fs.SetOutput(c.stdout)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// parse parses args the same way for every verb: flags may stand before or
// after the positional arguments (the standard flag package stops at the
// first positional one); everything after "--" is positional. Afterwards
// fs.Args() holds the positional arguments. -h, -help and --help print the
// verb's help to standard output and return flag.ErrHelp.
func parse(fs *flag.FlagSet, args []string) error {
	usage := fs.Usage
	fs.Usage = func() {} // the flag package calls it on every error too
	defer func() { fs.Usage = usage }()
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				usage()
				return err
			}
			return usageError{err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if i := len(args) - len(rest) - 1; i >= 0 && args[i] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	// Parse once more so that fs.Args() is exactly the positional ones.
	return fs.Parse(append([]string{"--"}, pos...))
}

// settingError is a missing or invalid setting (an environment variable):
// exit 2, like a bad flag (SPEC §8).
type settingError struct{ err error }

func (e settingError) Error() string { return e.err.Error() }
func (e settingError) Unwrap() error { return e.err }

// loadConfig reads the configuration; what it refuses is a setting error.
func loadConfig(c *cli) (config.Config, error) {
	cfg, err := config.Load(c.getenv)
	if err != nil {
		return cfg, settingError{err}
	}
	return cfg, nil
}

// oneOf checks an enumerated flag's value.
func oneOf(flagName, v string, allowed ...string) error {
	if v == "" || slices.Contains(allowed, v) {
		return nil
	}
	return usagef("%s %q: want one of %s", flagName, v, strings.Join(allowed, ", "))
}
