package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/store"
)

// RunnerFromConfig is a sink function's start-up, and Retry's, which re-runs
// deliveries: check the target's settings with require (one error naming
// every missing variable), build its client with newTarget, and its Runner.
// function names the function target in the errors.
func RunnerFromConfig(cfg config.Config, st store.Store, log *slog.Logger, function string,
	require func() error, newTarget func() (Target, error)) (*Runner, error) {
	if err := require(); err != nil {
		return nil, fmt.Errorf("%s: %w", function, err)
	}
	t, err := newTarget()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", function, err)
	}
	return NewRunner(cfg.Env, t, st, log), nil
}

// Handle is Deliver as a message.Handler: the core of a sink function, and
// Retry's re-run of a delivery. It returns nil or a *failure.Failure.
func (r *Runner) Handle(ctx context.Context, m message.Message) error {
	_, err := r.Deliver(ctx, m)
	if err == nil {
		return nil
	}
	if _, ok := failure.As(err); !ok {
		// Deliver returns only failures; keep the contract if that changes.
		return failure.Retryable(r.Target(), failure.ReasonInternal, err.Error())
	}
	return err
}

// Deps is what a sink function (NetSuiteSink, SuiteXSink) is made of.
type Deps struct {
	Runner   *Runner        // the target's; Retry shares it
	Reporter failure.Sender // to events.error.{env}
	Log      *slog.Logger   // nil discards
}

// NewHandler returns a sink function's handler: Runner.Handle, under Park
// and Recover (shared/failure), the ack/nack contract every function shares.
func NewHandler(d Deps) (message.Handler, error) {
	if d.Runner == nil || d.Reporter == nil {
		return nil, errors.New("sink function: Runner and Reporter are required")
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("target", d.Runner.Target())
	return failure.Park(d.Reporter, log)(failure.Recover(d.Runner.Target(), log)(d.Runner.Handle)), nil
}
