package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/backbone-sync/backbone/shared/config"
)

// One way of parsing flags for every verb.

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
