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

func run(ctx context.Context, c *cli, args []string) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(c.stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(c.stderr, "backbone: unknown verb %q\n\n", args[0])
		printUsage(c.stderr, cmds)
		return 2
	}
	err := cmd.run(ctx, c, args[1:])
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "backbone %s: %v (see: backbone %s --help)\n", args[0], err, args[0])
		return 2
	default:
		fmt.Fprintf(c.stderr, "backbone %s: %v\n", args[0], err)
		return 1
	}
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

// newFlags returns a flag set whose errors are usage errors.
func newFlags(c *cli, verb, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(verb, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {
		fmt.Fprintf(c.stderr, "usage: backbone %s %s\n", verb, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args, turning flag errors into usage errors.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	return nil
}
