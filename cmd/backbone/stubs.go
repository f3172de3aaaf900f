package main

import (
	"context"
	"errors"
)

// Verbs not built yet. Each moves to its own file when it is.
var errNotBuilt = errors.New("not built yet")

func runProvision(ctx context.Context, c *cli, args []string) error { return errNotBuilt }
func runBench(ctx context.Context, c *cli, args []string) error     { return errNotBuilt }
func runOutbox(ctx context.Context, c *cli, args []string) error    { return errNotBuilt }
