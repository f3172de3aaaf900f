package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/backbone-sync/backbone/functions/dlqarchive"
	"github.com/backbone-sync/backbone/functions/merge"
	"github.com/backbone-sync/backbone/functions/netsuite"
	"github.com/backbone-sync/backbone/functions/retry"
	"github.com/backbone-sync/backbone/functions/suitex"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/merge"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/publish/pubsub"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/store"
)

// app is the wired backbone: the shared clients and the handlers of the
// functions one process serves.
type app struct {
	handlers map[string]message.Handler
	store    store.Store
	pubsub   *pubsub.Publisher
	pub      publish.Publisher // guarded
	engine   *merge.Engine     // nil unless Merge or Retry is served
}

func (a *app) Close() error {
	var errs []error
	if a.pubsub != nil {
		errs = append(errs, a.pubsub.Close())
	}
	if a.store != nil {
		errs = append(errs, a.store.Close())
	}
	return errors.Join(errs...)
}

// wireOptions let dev and tests reach in without touching the environment.
type wireOptions struct {
	pubsub *pubsub.Publisher // reuse a client (dev); else one is opened
}

// wire validates what the targets need and builds their handlers. Every
// start-up error names the variable to fix.
func wire(ctx context.Context, cfg config.Config, targets []string, log *slog.Logger, o wireOptions) (*app, error) {
	need := func(t string) bool { return slices.Contains(targets, t) }
	var errs []error
	if err := cfg.RequireStore(); err != nil {
		errs = append(errs, err)
	}
	if need(config.TargetNetSuite) || need(config.TargetRetry) {
		errs = append(errs, cfg.RequireNetSuite())
	}
	if need(config.TargetSuiteX) || need(config.TargetRetry) {
		errs = append(errs, cfg.RequireSuiteX())
	}
	if err := errors.Join(errs...); err != nil {
		return nil, settingError{err}
	}
	a := &app{handlers: map[string]message.Handler{}}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	a.store = st
	a.pubsub = o.pubsub
	if a.pubsub == nil {
		if a.pubsub, err = pubsub.New(ctx, projectOrDefault(cfg), cfg.EmulatorHost); err != nil {
			_ = a.Close()
			return nil, err
		}
	}
	a.pub = publish.Guard(cfg.Env, a.pubsub)
	reporter := failure.NewReporter(cfg.Env, a.pub)

	if need(config.TargetMerge) || need(config.TargetRetry) {
		a.engine = merge.New(a.store, a.pub, cfg.Env, cfg.Sources, log)
	}
	runners := map[string]*sink.Runner{}
	if need(config.TargetNetSuite) || need(config.TargetRetry) {
		if runners[config.TargetNetSuite], err = netsuitefunc.Runner(cfg, a.store, log); err != nil {
			_ = a.Close()
			return nil, err
		}
	}
	if need(config.TargetSuiteX) || need(config.TargetRetry) {
		if runners[config.TargetSuiteX], err = suitexfunc.Runner(cfg, a.store, log); err != nil {
			_ = a.Close()
			return nil, err
		}
	}
	for _, t := range targets {
		flog := log.With("function", t)
		switch t {
		case config.TargetMerge:
			if a.handlers[t], err = mergefunc.New(mergefunc.Deps{Engine: a.engine, Reporter: reporter, Log: flog}); err != nil {
				_ = a.Close()
				return nil, err
			}
		case config.TargetNetSuite:
			if a.handlers[t], err = netsuitefunc.New(netsuitefunc.Deps{Runner: runners[t], Reporter: reporter, Log: flog}); err != nil {
				_ = a.Close()
				return nil, err
			}
		case config.TargetSuiteX:
			if a.handlers[t], err = suitexfunc.New(suitexfunc.Deps{Runner: runners[t], Reporter: reporter, Log: flog}); err != nil {
				_ = a.Close()
				return nil, err
			}
		case config.TargetRetry:
			if a.handlers[t], err = retryfunc.New(retryfunc.Deps{Env: cfg.Env, Engine: a.engine,
				Runners:   []*sink.Runner{runners[config.TargetNetSuite], runners[config.TargetSuiteX]},
				Publisher: a.pub, Store: a.store, Log: flog}); err != nil {
				_ = a.Close()
				return nil, err
			}
		case config.TargetDLQArchive:
			if a.handlers[t], err = dlqarchivefunc.New(dlqarchivefunc.Deps{Store: a.store, Log: flog, Env: cfg.Env}); err != nil {
				_ = a.Close()
				return nil, err
			}
		default:
			_ = a.Close()
			return nil, fmt.Errorf("unknown function target %q: accepted values are %v", t, config.Targets)
		}
	}
	return a, nil
}
