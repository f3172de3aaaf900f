package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

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

// function is one row of the table of functions.
type function struct {
	// settings reports every missing setting the function needs beyond the
	// store, in one error; nil when it needs none.
	settings func(config.Config) error
	// uses names the functions whose parts this one shares (Retry re-runs
	// the sinks' deliveries), so that their settings are checked too.
	uses []string
	// build makes the handler; log is the function's own.
	build func(p *parts, log *slog.Logger) (message.Handler, error)
}

// functionTable is the table of the function targets (config.Targets): name
// → settings and constructor.
func functionTable() map[string]function {
	return map[string]function{
		mergefunc.Name: {build: func(p *parts, log *slog.Logger) (message.Handler, error) {
			return mergefunc.New(mergefunc.Deps{Engine: p.engine(), Reporter: p.reporter, Log: log})
		}},
		netsuitefunc.Name: sinkFunction(netsuitefunc.Name, config.Config.RequireNetSuite, netsuitefunc.Runner, netsuitefunc.New),
		suitexfunc.Name:   sinkFunction(suitexfunc.Name, config.Config.RequireSuiteX, suitexfunc.Runner, suitexfunc.New),
		retryfunc.Name: {uses: []string{netsuitefunc.Name, suitexfunc.Name}, build: func(p *parts, log *slog.Logger) (message.Handler, error) {
			ns, err := p.runner(netsuitefunc.Name, netsuitefunc.Runner)
			if err != nil {
				return nil, err
			}
			sx, err := p.runner(suitexfunc.Name, suitexfunc.Runner)
			if err != nil {
				return nil, err
			}
			return retryfunc.New(retryfunc.Deps{Env: p.cfg.Env, Engine: p.engine(), Runners: []*sink.Runner{ns, sx},
				Publisher: p.pub, Store: p.store, Log: log})
		}},
		dlqarchivefunc.Name: {build: func(p *parts, log *slog.Logger) (message.Handler, error) {
			return dlqarchivefunc.New(dlqarchivefunc.Deps{Store: p.store, Log: log, Env: p.cfg.Env})
		}},
	}
}

// runnerFunc builds a sink function's runner (netsuitefunc.Runner).
type runnerFunc func(config.Config, store.Store, *slog.Logger) (*sink.Runner, error)

// sinkFunction is the row of a sink function: newHandler over its target's
// runner, which Retry shares.
func sinkFunction(name string, settings func(config.Config) error, runner runnerFunc,
	newHandler func(sink.Deps) (message.Handler, error)) function {
	return function{settings: settings, build: func(p *parts, log *slog.Logger) (message.Handler, error) {
		r, err := p.runner(name, runner)
		if err != nil {
			return nil, err
		}
		return newHandler(sink.Deps{Runner: r, Reporter: p.reporter, Log: log})
	}}
}

// parts are what the functions of one process share, each built once, when
// a function first needs it.
type parts struct {
	cfg      config.Config
	log      *slog.Logger
	store    store.Store
	pub      publish.Publisher // guarded
	reporter *failure.Reporter // to events.error.{env}
	eng      *merge.Engine
	runners  map[string]*sink.Runner
}

// engine is the merge engine: Merge's, and Retry's re-run of a merge.
func (p *parts) engine() *merge.Engine {
	if p.eng == nil {
		p.eng = merge.New(p.store, p.pub, p.cfg.Env, p.cfg.Sources, p.log)
	}
	return p.eng
}

// runner is the sink function name's runner, built by build: the
// function's, and Retry's re-run of its deliveries.
func (p *parts) runner(name string, build runnerFunc) (*sink.Runner, error) {
	if r, ok := p.runners[name]; ok {
		return r, nil
	}
	r, err := build(p.cfg, p.store, p.log)
	if err != nil {
		return nil, err
	}
	p.runners[name] = r
	return r, nil
}

// wire validates what the targets need and builds their handlers. Every
// start-up error names the variable to fix.
func wire(ctx context.Context, cfg config.Config, targets []string, log *slog.Logger, o wireOptions) (*app, error) {
	table := functionTable()
	need := map[string]bool{}
	for _, t := range targets {
		f, ok := table[t]
		if !ok {
			return nil, fmt.Errorf("unknown function target %q: accepted values are %v", t, config.Targets)
		}
		need[t] = true
		for _, u := range f.uses {
			need[u] = true
		}
	}
	errs := []error{cfg.RequireStore()}
	for _, t := range config.Targets { // pipeline order: one stable message
		if f := table[t]; need[t] && f.settings != nil {
			errs = append(errs, f.settings(cfg))
		}
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
	pub := publish.Guard(cfg.Env, a.pubsub)
	p := &parts{cfg: cfg, log: log, store: a.store, pub: pub, reporter: failure.NewReporter(cfg.Env, pub), runners: map[string]*sink.Runner{}}
	for _, t := range targets {
		if a.handlers[t], err = table[t].build(p, log.With("function", t)); err != nil {
			_ = a.Close()
			return nil, err
		}
	}
	return a, nil
}
