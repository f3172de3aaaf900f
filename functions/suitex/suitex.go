// Package suitexfunc is the SuiteXSink function: triggered by
// events.merged.{env}-suitex-sub, it delivers merged changes to SuiteX
// (SPEC §7). shared/sink runs the delivery, shared/sink/suitex speaks to
// SuiteX.
package suitexfunc

import (
	"log/slog"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/sink/suitex"
	"github.com/backbone-sync/backbone/shared/store"
)

// Name is the function target.
const Name = config.TargetSuiteX

// Deps is what the function is made of: the runner of Runner.
type Deps = sink.Deps

// New returns the SuiteXSink handler.
func New(d Deps) (message.Handler, error) { return sink.NewHandler(d) }

// Runner checks the SuiteX settings and builds the runner: this function's,
// and Retry's.
func Runner(cfg config.Config, st store.Store, log *slog.Logger) (*sink.Runner, error) {
	return sink.RunnerFromConfig(cfg, st, log, Name, cfg.RequireSuiteX,
		func() (sink.Target, error) { return suitex.New(cfg.SuiteX) })
}
