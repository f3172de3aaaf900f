// Package netsuite is the NetSuiteSink function: triggered by
// events.merged.{env}-netsuite-sub, it delivers merged changes to NetSuite
// (SPEC §7). It is a thin handler over the sink machinery: shared/sink runs
// the delivery, shared/sink/netsuite speaks to NetSuite.
package netsuite

import (
	"fmt"
	"log/slog"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/sink"
	nssink "github.com/backbone-sync/backbone/shared/sink/netsuite"
	"github.com/backbone-sync/backbone/shared/store"
)

// Name is the function target.
const Name = config.TargetNetSuite

// New returns the push handler: deliver; report a failure to
// events.error.{env} and ack; nack only if the report fails.
func New(r *sink.Runner, rep sink.Reporter, log *slog.Logger) message.Handler {
	return sink.Handler(r, rep, log)
}

// FromConfig is the function's start-up: it checks every NetSuite setting
// (one error naming all missing variables), builds the target, and wires it
// to the store and the error topic. pub must be guarded (publish.Guard).
func FromConfig(cfg config.Config, st store.Store, pub publish.Publisher, log *slog.Logger, opts ...nssink.Option) (message.Handler, error) {
	if err := cfg.RequireNetSuite(); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	t, err := nssink.New(cfg.NetSuite, opts...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	r := sink.NewRunner(cfg.Env, t, st, log)
	return New(r, failure.NewReporter(cfg.Env, pub), log), nil
}
