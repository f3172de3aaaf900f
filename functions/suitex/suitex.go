// Package suitexfunc is the SuiteXSink function: triggered by
// events.merged.{env}-suitex-sub, it delivers merged changes to SuiteX
// (SPEC §7). It is a thin handler over the sink machinery: shared/sink runs
// the delivery, shared/sink/suitex speaks to SuiteX.
package suitexfunc

import (
	"fmt"
	"log/slog"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/sink/suitex"
	"github.com/backbone-sync/backbone/shared/store"
)

// Name is the function target.
const Name = config.TargetSuiteX

// New returns the push handler: deliver; report a failure to
// events.error.{env} and ack; nack only if the report fails.
func New(r *sink.Runner, rep failure.Sender, log *slog.Logger) message.Handler {
	return sink.Handler(r, rep, log)
}

// Runner checks the SuiteX settings (one error naming every missing
// variable) and builds the sink runner: the function's own start-up, and
// Retry's, which re-runs deliveries.
func Runner(cfg config.Config, st store.Store, log *slog.Logger, opts ...suitex.Option) (*sink.Runner, error) {
	if err := cfg.RequireSuiteX(); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	t, err := suitex.New(cfg.SuiteX, opts...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	return sink.NewRunner(cfg.Env, t, st, log), nil
}

// FromConfig is the function's start-up: Runner, wired to the error topic.
// pub must be guarded (publish.Guard).
func FromConfig(cfg config.Config, st store.Store, pub publish.Publisher, log *slog.Logger, opts ...suitex.Option) (message.Handler, error) {
	r, err := Runner(cfg, st, log, opts...)
	if err != nil {
		return nil, err
	}
	return New(r, failure.NewReporter(cfg.Env, pub), log), nil
}
