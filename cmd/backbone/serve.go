package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/logging"
	"github.com/backbone-sync/backbone/shared/message"
)

func runServe(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "serve", "\n\nServes the function named by FUNCTION_TARGET on PORT through the Functions Framework (the\ndeployed entry point). With FUNCTION_TARGET unset, serves all five at /{Name}.")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	log := logging.New(c.stderr, slog.LevelInfo)
	targets := config.Targets
	if cfg.FunctionTarget != "" {
		targets = []string{cfg.FunctionTarget}
	}
	a, err := wire(ctx, cfg, targets, log, wireOptions{})
	if err != nil {
		return err
	}
	defer a.Close()
	// The Functions Framework registry is the one global the backbone has:
	// it is how the framework finds FUNCTION_TARGET.
	for _, t := range targets {
		functions.HTTP(t, message.HTTP(log.With("function", t), cfg.Project, a.handlers[t]).ServeHTTP)
	}
	log.Info("serving", "targets", targets, "port", cfg.Port, "env", string(cfg.Env))
	// funcframework reads FUNCTION_TARGET from the process environment; keep
	// it in step with what was validated.
	if cfg.FunctionTarget != "" {
		if err := os.Setenv("FUNCTION_TARGET", cfg.FunctionTarget); err != nil {
			return err
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- funcframework.StartHostPort("", cfg.Port) }()
	select {
	case err := <-errc:
		return fmt.Errorf("functions framework: %w", err)
	case <-ctx.Done():
		// Cloud Run sends SIGTERM and waits; a request cut here is nacked
		// and redelivered (at-least-once), never lost.
		log.Info("shutting down")
		return nil
	}
}
