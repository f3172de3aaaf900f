package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/user"
	"strings"
	"time"

	"github.com/backbone-sync/backbone/internal/console"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/logging"
	"github.com/backbone-sync/backbone/shared/publish"
)

const consoleSynopsis = `[--addr 127.0.0.1:8090] [--identity iap|local] [--operators a@x,b@y] [status flags]

Serves the operators' web console at /console: health (the status figures, refreshing,
with a chart of the last hour), a record's timeline as trace shows it, and the dead
letters with a filter, one letter's detail and redrive (a dry-run preview, then a
confirmation). Read-only unless the caller is an operator: the identity is the IAP
header X-Goog-Authenticated-User-Email (--identity iap, the default when PORT is set,
as on Cloud Run) or the local OS user (--identity local); operators are --operators
or BACKBONE_CONSOLE_OPERATORS (comma-separated). BACKBONE_CONSOLE_SECRET keys the
confirmation tokens (default: random per process, so run one instance).

Needs EVENT_STORE_DSN (or CLOUD_SQL_INSTANCE) and BACKBONE_ENV; redrive also
GCP_PROJECT (PUBSUB_EMULATOR_HOST for an emulator).`

// consoleOperatorsVar names the operator allow-list's variable.
const consoleOperatorsVar = "BACKBONE_CONSOLE_OPERATORS"

// Identity modes.
const (
	identityIAP   = "iap"
	identityLocal = "local"
)

func runConsole(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "console", consoleSynopsis)
	sf := addStatusFlags(fs)
	addr := fs.String("addr", "", "listen address (default: :$PORT when PORT is set, else 127.0.0.1:8090)")
	identity := fs.String("identity", "", "who the caller is: iap (the IAP header) or local (this OS user); default iap when PORT is set, else local")
	operators := fs.String("operators", "", "comma-separated identities that may redrive (default: "+consoleOperatorsVar+")")
	refresh := fs.Duration("refresh", 15*time.Second, "how often the health figures are recomputed (and the outbox line logged)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("unexpected arguments %v", fs.Args())
	}
	port := c.getenv("PORT")
	if *addr == "" {
		*addr = "127.0.0.1:8090"
		if port != "" {
			*addr = ":" + port
		}
	}
	if *identity == "" {
		*identity = identityLocal
		if port != "" {
			*identity = identityIAP
		}
	}
	if err := oneOf("--identity", *identity, identityIAP, identityLocal); err != nil {
		return err
	}
	if *refresh <= 0 {
		return usagef("--refresh must be positive")
	}
	o, t, err := sf.options(c)
	if err != nil {
		return err
	}
	ops := *operators
	if ops == "" {
		ops = c.getenv(consoleOperatorsVar)
	}
	cfg, _ := config.Load(c.getenv) // the emulator and project only; the store is checked by storeFromEnv
	log := logging.New(c.stderr, nil)
	st, err := storeFromEnv(ctx, c, "")
	if err != nil {
		return err
	}
	defer st.Close()
	defer backlogSource(ctx, cfg, &o)()
	var pub publish.Publisher
	if project := projectOrDefault(cfg); project != "" {
		ps, err := openPubSub(ctx, cfg)
		if err != nil {
			return err
		}
		defer ps.Close()
		pub = publish.Guard(o.Env, ps)
	}
	idf := console.FromIAP
	if *identity == identityLocal {
		idf = console.Fixed(localUser())
	}
	con, err := console.New(console.Options{Env: o.Env, Store: st, Publisher: pub, Identity: idf, Operators: splitList(ops),
		Health: o, Thresholds: t, Refresh: *refresh, Secret: []byte(c.getenv("BACKBONE_CONSOLE_SECRET")), Log: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("the console cannot listen on %s: %w (pass another --addr)", *addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle(console.Prefix+"/", con)
	mux.Handle("/{$}", http.RedirectHandler(console.Prefix+"/", http.StatusFound))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go con.Run(ctx)
	fmt.Fprintf(c.stdout, "console on http://%s%s/ (%s identity; %d operator(s))\n", ln.Addr(), console.Prefix, *identity, len(splitList(ops)))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("console: %w", err)
		}
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}
	return nil
}

// localUser is this machine's user name: the operator identity in dev.
func localUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "local"
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
