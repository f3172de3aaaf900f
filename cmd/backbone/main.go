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
	"sort"
	"syscall"

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
