// Package devstack runs the whole backbone on one machine (`backbone dev`,
// the end-to-end tests, the bench): the event store created and migrated,
// a Pub/Sub emulator with the topology provisioned, the target fakes unless
// real targets are given, the five functions and the console on one HTTP
// server, and the push bridge feeding them as Pub/Sub push would.
package devstack

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"cloud.google.com/go/pubsub/v2/pstest"

	"github.com/backbone-sync/backbone/internal/devstack/gcloudemu"
	"github.com/backbone-sync/backbone/internal/devstack/pushbridge"
	"github.com/backbone-sync/backbone/internal/fake/netsuitefake"
	"github.com/backbone-sync/backbone/internal/fake/suitexfake"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish/pubsub"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/topology"
)

// Defaults: everything on loopback.
const (
	Project    = "backbone-dev" // the Pub/Sub project when none is set
	DefaultDSN = "root@tcp(127.0.0.1:3306)/backbone_dev"
)

// The emulators the stack can start.
const (
	EmulatorPstest = "pstest"
	EmulatorGcloud = "gcloud"
)

// Wire builds the five functions on cfg, publishing through ps. It is the
// binary's wiring, exactly as `serve` uses it, passed in because a package
// cannot import the binary's.
type Wire func(ctx context.Context, cfg config.Config, ps *pubsub.Publisher, log *slog.Logger) (Functions, error)

// Functions are the wired functions: each one's handler by target, and the
// store they share (closed when the stack stops).
type Functions struct {
	Handlers map[string]message.Handler
	Store    store.Store
}

// Options configure the stack.
type Options struct {
	Env          config.Env
	DSN          string // privileged DSN of the dev database (created and migrated)
	Project      string // Pub/Sub project; empty: Project
	EmulatorHost string // use this Pub/Sub emulator instead of starting one
	Emulator     string // which one to start when EmulatorHost is empty: pstest (default) or gcloud
	PubSubPort   int    // port of the started emulator (0: any)
	FuncAddr     string // where the functions listen ("127.0.0.1:8080"; port 0: any)
	NetSuiteURL  string // real NetSuite base URL; empty: the local fake
	SuiteXURL    string
	MinBackoff   time.Duration
	MaxBackoff   time.Duration
	Log          *slog.Logger
	// Serve starts the functions' HTTP server; nil means the Functions
	// Framework, exactly as deployed. Tests pass an in-process server (the
	// framework's registry is process-global and cannot be reset).
	Serve func(handlers map[string]http.Handler, ln net.Listener) (stop func(), err error)
	// Getenv supplies the sink credentials when real targets are used.
	Getenv func(string) string
	// User is the console's identity (the local OS user); Operators may
	// redrive from it, nil: User.
	User      string
	Operators []string
}

// Stack is the running backbone.
type Stack struct {
	Config    config.Config
	Project   string
	Emulator  string // the Pub/Sub emulator's host:port
	DSN       string // the privileged DSN the stack was started on
	WorkerDSN string // the functions' least-privilege DSN
	FuncURL   string // the functions are at FuncURL/{Target}
	PubSub    *pubsub.Publisher
	Store     store.Store          // the functions' store
	NetSuite  *netsuitefake.Server // the local NetSuite; nil when a real one is used
	SuiteX    *suitexfake.Server
	Gcloud    *gcloudemu.Emulator // the gcloud emulator when the stack started it

	pstest    *pstest.Server
	changes   topology.Changes
	user      string
	stopFuncs []func()
	stopped   chan struct{}
	cancel    context.CancelFunc
}

// Start brings the stack up: database, Pub/Sub, target fakes, functions,
// topology, push bridge. wire builds the functions.
func Start(ctx context.Context, o Options, wire Wire) (_ *Stack, err error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Getenv == nil {
		o.Getenv = func(string) string { return "" }
	}
	s := &Stack{Project: o.Project, DSN: o.DSN, user: o.User, stopped: make(chan struct{})}
	if s.Project == "" {
		s.Project = Project
	}
	if s.user == "" {
		s.user = "local"
	}
	defer func() {
		if err != nil {
			s.close()
		}
	}()

	// 1. Database: create, migrate, and a least-privilege user for the
	// functions, so dev runs with the production grants.
	if s.WorkerDSN, err = PrepareDB(ctx, o.DSN); err != nil {
		return nil, err
	}
	// 2. Pub/Sub: embedded pstest, or the gcloud emulator, unless an
	// emulator is given.
	if err := s.startPubSub(ctx, o); err != nil {
		return nil, err
	}
	// 3. The target fakes unless real targets are given, and the
	// configuration the functions get.
	if s.Config, err = s.configure(o); err != nil {
		return nil, err
	}
	// 4. The five functions and the console.
	if err := s.serveFunctions(ctx, o, wire); err != nil {
		return nil, err
	}
	// 5. The topology, and push-style delivery where the emulator does not.
	bridged, err := s.provision(ctx, o.Env)
	if err != nil {
		return nil, err
	}
	s.startBridge(ctx, o, bridged)
	return s, nil
}

// startPubSub starts or reaches the emulator and opens the stack's client.
func (s *Stack) startPubSub(ctx context.Context, o Options) (err error) {
	s.Emulator = o.EmulatorHost
	switch {
	case s.Emulator != "":
	case o.Emulator == EmulatorGcloud:
		if s.Gcloud, err = gcloudemu.Start(ctx, o.PubSubPort); err != nil {
			return err
		}
		s.stopFuncs = append(s.stopFuncs, s.Gcloud.Stop)
		s.Emulator = s.Gcloud.Addr
	case o.Emulator == "" || o.Emulator == EmulatorPstest:
		if s.pstest, err = StartPstest(o.PubSubPort); err != nil {
			return err
		}
		s.stopFuncs = append(s.stopFuncs, func() { _ = s.pstest.Close() })
		s.Emulator = s.pstest.Addr
	default:
		return fmt.Errorf("emulator %q: want %s or %s", o.Emulator, EmulatorPstest, EmulatorGcloud)
	}
	if s.PubSub, err = pubsub.New(ctx, s.Project, s.Emulator); err != nil {
		return err
	}
	s.stopFuncs = append(s.stopFuncs, func() { _ = s.PubSub.Close() })
	return nil
}

// serveFunctions wires the functions and serves them, with the console, at
// FuncURL.
func (s *Stack) serveFunctions(ctx context.Context, o Options, wire Wire) error {
	fns, err := wire(ctx, s.Config, s.PubSub, o.Log)
	if err != nil {
		return err
	}
	s.Store = fns.Store
	s.stopFuncs = append(s.stopFuncs, func() { _ = s.Store.Close() })
	handlers := map[string]http.Handler{}
	for t, h := range fns.Handlers {
		handlers[t] = message.HTTP(o.Log.With("function", t), s.Project, h)
	}
	if handlers[consoleKey], err = s.newConsole(o); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.FuncAddr)
	if err != nil {
		return fmt.Errorf("the functions cannot listen on %s: %w (pass another --port, or 0 for any)", o.FuncAddr, err)
	}
	serve := o.Serve
	if serve == nil {
		serve = serveFramework
	}
	stop, err := serve(handlers, ln)
	if err != nil {
		return err
	}
	s.stopFuncs = append(s.stopFuncs, stop)
	s.FuncURL = "http://" + ln.Addr().String()
	return nil
}

// provision applies the topology with the code `provision` uses and
// returns the subscriptions the bridge must push. pstest never pushes: pull
// subscriptions, all bridged. The gcloud emulator pushes for real, except
// that on an ordered subscription it never forwards a dead letter
// (docs/emulators.md): Retry's subscription stays a pull one, bridged.
func (s *Stack) provision(ctx context.Context, env config.Env) (map[string]bool, error) {
	want, err := topology.Desired(env, nil, topology.Options{})
	if err != nil {
		return nil, err
	}
	bridged := map[string]bool{}
	for i, sub := range want.Subscriptions {
		if s.Gcloud != nil && sub.DeadLetter == nil {
			// The emulator neither checks nor sends the OIDC token.
			want.Subscriptions[i].Push = &topology.Push{Endpoint: s.FuncURL + "/" + sub.Target,
				ServiceAccount: "dev-invoker@" + s.Project + ".iam.gserviceaccount.com", Audience: s.FuncURL}
			continue
		}
		bridged[sub.Name] = true
	}
	if s.changes, err = topology.Apply(ctx, s.PubSub.Client(), want, topology.Mode{}); err != nil {
		return nil, fmt.Errorf("provision %s on the emulator %s (project %s): %w", env, s.Emulator, s.Project, err)
	}
	return bridged, nil
}

// startBridge pushes the bridged subscriptions to the functions until Stop.
func (s *Stack) startBridge(ctx context.Context, o Options, bridged map[string]bool) {
	var routes []pushbridge.Route
	for _, sub := range o.Env.Names().Subscriptions() {
		if bridged[sub.Name] {
			routes = append(routes, pushbridge.Route{Subscription: sub.Name, Endpoint: s.FuncURL + "/" + sub.Target})
		}
	}
	bridge := pushbridge.New(s.PubSub.Client(), s.Project, routes, pushbridge.Options{
		MinBackoff: o.MinBackoff, MaxBackoff: o.MaxBackoff, Log: o.Log, ForwardDeadLetters: s.Gcloud != nil})
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	go func() {
		_ = bridge.Run(bctx)
		close(s.stopped)
	}()
}

// Stop shuts down in order: the bridge stops pulling and settles every
// request in flight (nothing in flight is lost), then the servers, the
// clients and the emulator. A second Stop does nothing.
func (s *Stack) Stop() {
	if s.cancel != nil {
		s.cancel()
		<-s.stopped
	}
	s.close()
}

func (s *Stack) close() {
	for i := len(s.stopFuncs) - 1; i >= 0; i-- {
		s.stopFuncs[i]()
	}
	s.stopFuncs = nil
}
