// Package netsuitefunc is the NetSuiteSink function: triggered by
// events.merged.{env}-netsuite-sub, it delivers merged changes to NetSuite
// (SPEC §7). shared/sink runs the delivery, shared/sink/netsuite speaks to
// NetSuite.
package netsuitefunc

import (
	"log/slog"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/sink/netsuite"
	"github.com/backbone-sync/backbone/shared/store"
)

// Name is the function target.
const Name = config.TargetNetSuite

// Deps is what the function is made of: the runner of Runner.
type Deps = sink.Deps

// New returns the NetSuiteSink handler.
func New(d Deps) (message.Handler, error) { return sink.NewHandler(d) }

// Runner checks the NetSuite settings and builds the runner: this
// function's, and Retry's.
func Runner(cfg config.Config, st store.Store, log *slog.Logger) (*sink.Runner, error) {
	return sink.RunnerFromConfig(cfg, st, log, Name, cfg.RequireNetSuite,
		func() (sink.Target, error) { return netsuite.New(cfg.NetSuite) })
}
