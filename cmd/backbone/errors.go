package main

import (
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The kinds of failure run tells apart (a usage or setting error exits 2,
// any other 1) and how it prints one: in one line.

// usageError makes the process exit 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// settingError is a missing or invalid setting (an environment variable):
// exit 2, like a bad flag (SPEC §8).
type settingError struct{ err error }

func (e settingError) Error() string { return e.err.Error() }
func (e settingError) Unwrap() error { return e.err }

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
