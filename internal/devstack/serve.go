package devstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"

	"github.com/backbone-sync/backbone/internal/console"
	"github.com/backbone-sync/backbone/internal/health"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/publish"
)

// consoleKey is the console's entry among the function server's handlers:
// served at /console/ and below.
const consoleKey = "console/"

// newConsole is the web console on the stack: User is the identity and,
// unless operators are given, an operator (it is their machine); redrive
// publishes through the stack's emulator.
func (s *Stack) newConsole(o Options) (*console.Console, error) {
	ops := o.Operators
	if ops == nil {
		ops = []string{s.user}
	}
	st, ok := s.Store.(console.Store)
	if !ok {
		return nil, fmt.Errorf("the console needs the MySQL store, got %T", s.Store)
	}
	return console.New(console.Options{Env: o.Env, Store: st, Publisher: publish.Guard(o.Env, s.PubSub),
		Identity: console.Fixed(s.user), Operators: ops, Refresh: 2 * time.Second, Log: o.Log,
		Thresholds: health.DefaultThresholds()})
}

// serveFramework registers the handlers with the Functions
// Framework and serves them at /{Name}, as Cloud Run does with
// FUNCTION_TARGET unset. They are registered by name (served at /{Name}),
// so that the framework's start-up lines name them.
func serveFramework(handlers map[string]http.Handler, ln net.Listener) (func(), error) {
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	_ = ln.Close() // the framework listens itself
	for _, name := range config.Targets {
		if h, ok := handlers[name]; ok {
			functions.HTTP(name, h.ServeHTTP)
		}
	}
	if h, ok := handlers[consoleKey]; ok {
		// Registered by name, so the framework names it at start-up (an
		// unnamed registration prints `Serving function: ""`); the name
		// "console/" is served at /console/ and everything below it.
		functions.HTTP(consoleKey, h.ServeHTTP)
	}
	errc := make(chan error, 1)
	go func() { errc <- funcframework.StartHostPort("127.0.0.1", port) }()
	// Wait until it answers (or failed to listen).
	for i := 0; i < 100; i++ {
		select {
		case err := <-errc:
			return nil, fmt.Errorf("functions framework: %w", err)
		default:
		}
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 100*time.Millisecond); err == nil {
			_ = c.Close()
			return func() {}, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, errors.New("functions framework did not start listening")
}

// ServeInProcess serves the handlers at /{Name} on ln with a plain HTTP
// server: for tests and the bench, which start several stacks in one
// process while the Functions Framework's registry is process-global. stop
// shuts it down, letting requests in flight finish.
func ServeInProcess(handlers map[string]http.Handler, ln net.Listener) (stop func(), err error) {
	mux := http.NewServeMux()
	for name, h := range handlers {
		mux.Handle("/"+name, h)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
