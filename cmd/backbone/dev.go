package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"
	gomysql "github.com/go-sql-driver/mysql"

	"github.com/backbone-sync/backbone/internal/console"
	"github.com/backbone-sync/backbone/internal/devstack/gcloudemu"
	"github.com/backbone-sync/backbone/internal/devstack/pushbridge"
	"github.com/backbone-sync/backbone/internal/fake/netsuitefake"
	"github.com/backbone-sync/backbone/internal/fake/suitexfake"
	"github.com/backbone-sync/backbone/internal/health"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/logging"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/store/mysql"
	"github.com/backbone-sync/backbone/shared/topology"
)

// Dev defaults: everything on loopback, credentials that only the local
// fakes accept.
const (
	devDefaultDSN      = "root@tcp(127.0.0.1:3306)/backbone_dev"
	devProject         = "backbone-dev"
	devWorkerPassword  = "backbone-dev-only"
	devSuiteXSecret    = "dev-suitex-signing-secret"
	devNetSuiteAccount = "DEV_ACCOUNT"
	devConsumerKey     = "dev-consumer-key"
	devConsumerSecret  = "dev-consumer-secret"
	devTokenID         = "dev-token-id"
	devTokenSecret     = "dev-token-secret"
)

// devOptions configure the local stack.
type devOptions struct {
	env          config.Env
	dsn          string // privileged DSN of the dev database (created and migrated)
	project      string // Pub/Sub project (devProjectFrom); empty: backbone-dev
	emulatorHost string // use this Pub/Sub emulator instead of embedded pstest
	emulator     string // which one to start when emulatorHost is empty: pstest (default) or gcloud
	pubsubPort   int    // port of the started emulator (0: any)
	funcAddr     string // where the functions listen ("127.0.0.1:8080"; port 0: any)
	netsuiteURL  string // real NetSuite base URL; empty: the local fake
	suitexURL    string
	minBackoff   time.Duration
	maxBackoff   time.Duration
	log          *slog.Logger
	// serve starts the functions' HTTP server; nil means the Functions
	// Framework, exactly as deployed. Tests pass an in-process server (the
	// framework's registry is process-global and cannot be reset).
	serve func(handlers map[string]http.Handler, ln net.Listener) (stop func(), err error)
	// getenv supplies the sink credentials when real targets are used.
	getenv func(string) string
	// operators may redrive from the console; nil: the local OS user.
	operators []string
}

// devStack is the running backbone.
type devStack struct {
	cfg       config.Config
	app       *app
	pstest    *pstest.Server
	gcloud    *gcloudemu.Emulator
	project   string
	workerDSN string
	pubsub    *publish.PubSub
	bridge    *pushbridge.Bridge
	netsuite  *netsuitefake.Server // nil when a real NetSuite is used
	suitex    *suitexfake.Server
	funcURL   string
	emulator  string
	changes   topology.Changes
	console   *console.Console
	stopFuncs []func()
	stopped   chan struct{}
	cancel    context.CancelFunc
}

// startDev brings the stack up: database, Pub/Sub, topology, target fakes,
// functions, push bridge.
func startDev(ctx context.Context, o devOptions) (_ *devStack, err error) {
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if o.getenv == nil {
		o.getenv = func(string) string { return "" }
	}
	d := &devStack{stopped: make(chan struct{})}
	defer func() {
		if err != nil {
			d.close()
		}
	}()

	d.project = o.project
	if d.project == "" {
		d.project = devProject
	}

	// 1. Database: create, migrate, and a least-privilege user for the
	// functions, so dev runs with the production grants.
	workerDSN, err := prepareDevDB(ctx, o.dsn)
	if err != nil {
		return nil, err
	}
	d.workerDSN = workerDSN

	// 2. Pub/Sub: embedded pstest, or the gcloud emulator, unless an
	// emulator is given.
	d.emulator = o.emulatorHost
	switch {
	case d.emulator != "":
	case o.emulator == emulatorGcloud:
		if d.gcloud, err = gcloudemu.Start(ctx, o.pubsubPort); err != nil {
			return nil, err
		}
		d.stopFuncs = append(d.stopFuncs, d.gcloud.Stop)
		d.emulator = d.gcloud.Addr
	case o.emulator == "" || o.emulator == emulatorPstest:
		if d.pstest, err = startPstest(o.pubsubPort); err != nil {
			return nil, err
		}
		d.stopFuncs = append(d.stopFuncs, func() { _ = d.pstest.Close() })
		d.emulator = d.pstest.Addr
	default:
		return nil, usagef("--emulator %q: want %s or %s", o.emulator, emulatorPstest, emulatorGcloud)
	}
	if d.pubsub, err = publish.NewPubSub(ctx, d.project, d.emulator); err != nil {
		return nil, err
	}
	d.stopFuncs = append(d.stopFuncs, func() { _ = d.pubsub.Close() })

	// 4. The target fakes unless real targets are given.
	vars := map[string]string{
		"BACKBONE_ENV":         string(o.env),
		"GCP_PROJECT":          d.project,
		"PUBSUB_EMULATOR_HOST": d.emulator,
		"EVENT_STORE_DSN":      workerDSN,
	}
	if o.netsuiteURL == "" {
		d.netsuite = &netsuitefake.Server{Account: devNetSuiteAccount, ConsumerKey: devConsumerKey, ConsumerSecret: devConsumerSecret,
			TokenID: devTokenID, TokenSecret: devTokenSecret, Log: o.log}
		url, stop, err := listenLocal(d.netsuite)
		if err != nil {
			return nil, err
		}
		d.stopFuncs = append(d.stopFuncs, stop)
		for k, v := range map[string]string{"NETSUITE_BASE_URL": url, "NETSUITE_ACCOUNT_ID": devNetSuiteAccount,
			"NETSUITE_CONSUMER_KEY": devConsumerKey, "NETSUITE_CONSUMER_SECRET": devConsumerSecret,
			"NETSUITE_TOKEN_ID": devTokenID, "NETSUITE_TOKEN_SECRET": devTokenSecret} {
			vars[k] = v
		}
	} else {
		vars["NETSUITE_BASE_URL"] = o.netsuiteURL
		for _, k := range []string{"NETSUITE_ACCOUNT_ID", "NETSUITE_AUTH", "NETSUITE_CONSUMER_KEY", "NETSUITE_CONSUMER_SECRET", "NETSUITE_TOKEN_ID",
			"NETSUITE_TOKEN_SECRET", "NETSUITE_CLIENT_ID", "NETSUITE_CERTIFICATE_ID", "NETSUITE_PRIVATE_KEY", "NETSUITE_RECORD_MAPPING"} {
			vars[k] = o.getenv(k)
		}
	}
	if o.suitexURL == "" {
		d.suitex = &suitexfake.Server{Secret: devSuiteXSecret, Log: o.log}
		url, stop, err := listenLocal(d.suitex)
		if err != nil {
			return nil, err
		}
		d.stopFuncs = append(d.stopFuncs, stop)
		vars["SUITEX_BASE_URL"], vars["SUITEX_SIGNING_SECRET"] = url, devSuiteXSecret
	} else {
		vars["SUITEX_BASE_URL"], vars["SUITEX_SIGNING_SECRET"] = o.suitexURL, o.getenv("SUITEX_SIGNING_SECRET")
	}
	vars["NETSUITE_TIMEOUT"], vars["SUITEX_TIMEOUT"] = "10s", "10s"
	if d.cfg, err = config.Load(func(k string) string { return vars[k] }); err != nil {
		return nil, err
	}
	d.cfg.DB.MaxOpenConns = 32

	// 5. The five functions.
	if d.app, err = wire(ctx, d.cfg, config.Targets, o.log, wireOptions{pubsub: d.pubsub}); err != nil {
		return nil, err
	}
	d.stopFuncs = append(d.stopFuncs, func() { _ = d.app.store.Close() })
	handlers := map[string]http.Handler{}
	for t, h := range d.app.handlers {
		handlers[t] = message.HTTP(o.log.With("function", t), d.project, h)
	}
	if d.console, err = devConsole(o, d); err != nil {
		return nil, err
	}
	handlers[devConsoleKey] = d.console
	ln, err := net.Listen("tcp", o.funcAddr)
	if err != nil {
		return nil, fmt.Errorf("the functions cannot listen on %s: %w (pass another --port, or 0 for any)", o.funcAddr, err)
	}
	serve := o.serve
	if serve == nil {
		serve = serveFunctionsFramework
	}
	stopServe, err := serve(handlers, ln)
	if err != nil {
		return nil, err
	}
	d.stopFuncs = append(d.stopFuncs, stopServe)
	d.funcURL = "http://" + ln.Addr().String()

	// 6. Topology, with the code `provision` uses. pstest never pushes: pull
	// subscriptions, and the bridge below pushes. The gcloud emulator pushes
	// for real, except that on an ordered subscription it never forwards a
	// dead letter (docs/emulators.md): Retry's subscription stays a pull
	// one, bridged.
	want, err := topology.Desired(o.env, nil, topology.Options{})
	if err != nil {
		return nil, err
	}
	bridged := map[string]bool{}
	for i, s := range want.Subscriptions {
		if d.gcloud != nil && s.DeadLetter == nil {
			// The emulator neither checks nor sends the OIDC token.
			want.Subscriptions[i].Push = &topology.Push{Endpoint: d.funcURL + "/" + s.Target,
				ServiceAccount: "dev-invoker@" + d.project + ".iam.gserviceaccount.com", Audience: d.funcURL}
			continue
		}
		bridged[s.Name] = true
	}
	if d.changes, err = topology.Apply(ctx, d.pubsub.Client(), want, topology.Mode{}); err != nil {
		return nil, fmt.Errorf("provision %s on the emulator %s (project %s): %w", o.env, d.emulator, d.project, err)
	}

	// 7. Push-style delivery to the functions, where the emulator does not.
	var routes []pushbridge.Route
	for _, s := range o.env.Names().Subscriptions() {
		if bridged[s.Name] {
			routes = append(routes, pushbridge.Route{Subscription: s.Name, Endpoint: d.funcURL + "/" + s.Target})
		}
	}
	d.bridge = pushbridge.New(d.pubsub.Client(), d.project, routes, pushbridge.Options{
		MinBackoff: o.minBackoff, MaxBackoff: o.maxBackoff, Log: o.log, ForwardDeadLetters: d.gcloud != nil})
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.cancel = cancel
	go func() {
		_ = d.bridge.Run(bctx)
		close(d.stopped)
	}()
	return d, nil
}

// stop shuts down in order: the bridge stops pulling and settles every
// request in flight (nothing in flight is lost), then the servers, the
// clients and the emulator.
func (d *devStack) stop() {
	if d.cancel != nil {
		d.cancel()
		<-d.stopped
	}
	d.close()
}

func (d *devStack) close() {
	for i := len(d.stopFuncs) - 1; i >= 0; i-- {
		d.stopFuncs[i]()
	}
	d.stopFuncs = nil
}

// prepareDevDB creates and migrates the database of dsn and returns the DSN
// of a least-privilege user on it (the production grant set).
func prepareDevDB(ctx context.Context, dsn string) (string, error) {
	mc, err := gomysql.ParseDSN(dsn)
	if err != nil {
		return "", fmt.Errorf("EVENT_STORE_DSN is not a valid DSN: %w", err)
	}
	if mc.DBName == "" {
		return "", errors.New("EVENT_STORE_DSN names no database")
	}
	server := mc.Clone()
	server.DBName = ""
	sdb, closeS, err := mysql.Open(ctx, config.DB{DSN: server.FormatDSN(), MaxOpenConns: 2})
	if err != nil {
		return "", err
	}
	defer closeS()
	if err := sdb.PingContext(ctx); err != nil {
		return "", fmt.Errorf("the database server at %s is not reachable (start MariaDB/MySQL, or set EVENT_STORE_DSN): %w", mc.Addr, err)
	}
	if _, err := sdb.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS `"+mc.DBName+"` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		return "", fmt.Errorf("create database %s: %w", mc.DBName, err)
	}
	db, closeDB, err := mysql.Open(ctx, config.DB{DSN: mc.FormatDSN(), MaxOpenConns: 2})
	if err != nil {
		return "", err
	}
	defer closeDB()
	m, err := mysql.NewMigrator(db)
	if err != nil {
		return "", err
	}
	if _, err := m.Up(ctx); err != nil {
		return "", err
	}
	// Recreated, so that its grants are exactly the sync_worker set on this
	// one database, whatever an earlier run left (stress checks that).
	user := devWorkerName(mc.DBName)
	if _, err := db.ExecContext(ctx, "DROP USER IF EXISTS '"+user+"'@'%'"); err != nil {
		return "", fmt.Errorf("reset the dev worker user %s: %w", user, err)
	}
	if err := mysql.ApplyGrants(ctx, db, mc.DBName, user, "%", devWorkerPassword); err != nil {
		return "", err
	}
	// A user left from an earlier run keeps its password: set it again.
	if _, err := db.ExecContext(ctx, "ALTER USER '"+user+"'@'%' IDENTIFIED BY '"+devWorkerPassword+"'"); err != nil {
		return "", fmt.Errorf("set the dev worker password: %w", err)
	}
	wc := mc.Clone()
	wc.User, wc.Passwd = user, devWorkerPassword
	return wc.FormatDSN(), nil
}

// The emulators dev can start.
const (
	emulatorPstest = "pstest"
	emulatorGcloud = "gcloud"
)

// devProjectFrom is the Pub/Sub project of dev and of every verb run from
// its shell: GCP_PROJECT, then GOOGLE_CLOUD_PROJECT, then backbone-dev, so
// that an exported project in a Google Cloud shell cannot split them.
func devProjectFrom(getenv func(string) string) string {
	for _, k := range []string{"GCP_PROJECT", "GOOGLE_CLOUD_PROJECT"} {
		if v := getenv(k); v != "" {
			return v
		}
	}
	return devProject
}

// startPstest starts the embedded emulator on 127.0.0.1:port. pstest
// panics when it cannot listen, so the port is checked first and a panic
// that still gets through (a race for the port) becomes an error.
func startPstest(port int) (srv *pstest.Server, err error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if port != 0 {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("the Pub/Sub emulator cannot listen on %s: %w (pass another --pubsub-port, or 0 for any)", addr, err)
		}
		_ = ln.Close()
	}
	defer func() {
		if r := recover(); r != nil {
			srv, err = nil, fmt.Errorf("the Pub/Sub emulator cannot listen on %s: %v (pass another --pubsub-port, or 0 for any)", addr, r)
		}
	}()
	return pstest.NewServerWithAddress(addr), nil
}

// devWorkerName is the functions' database user on one dev database: one
// user per database (MySQL user names have at most 32 characters).
func devWorkerName(database string) string {
	if n := database + "_worker"; len(n) <= 32 {
		return n
	}
	sum := sha256.Sum256([]byte(database))
	return "bbw_" + hex.EncodeToString(sum[:8])
}

// listenLocal serves h on a free loopback port.
func listenLocal(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// serveFunctionsFramework registers the handlers with the Functions
// Framework and serves them at /{Name}, as Cloud Run does with
// FUNCTION_TARGET unset. They are registered by name (served at /{Name}),
// so that the framework's start-up lines name them.
func serveFunctionsFramework(handlers map[string]http.Handler, ln net.Listener) (func(), error) {
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	_ = ln.Close() // the framework listens itself
	for _, name := range config.Targets {
		if h, ok := handlers[name]; ok {
			functions.HTTP(name, h.ServeHTTP)
		}
	}
	if h, ok := handlers[devConsoleKey]; ok {
		// Registered by name, so the framework names it at start-up (an
		// unnamed registration prints `Serving function: ""`); the name
		// "console/" is served at /console/ and everything below it.
		functions.HTTP(devConsoleKey, h.ServeHTTP)
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

func runDev(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "dev", "[--env sandbox] [--port 8080] [--pubsub-port 8085] [--emulator pstest|gcloud] [--min-backoff 2s] [--max-backoff 60s] [--debug]\n\n"+
		"Runs the whole backbone on this machine: an embedded Pub/Sub emulator (pstest; --emulator gcloud starts Google's,\n"+
		"which needs Java and the "+gcloudemu.Package+" package) unless PUBSUB_EMULATOR_HOST is set, in project\n"+
		"GCP_PROJECT (then GOOGLE_CLOUD_PROJECT, then "+devProject+"); the event store at EVENT_STORE_DSN (default "+devDefaultDSN+",\n"+
		"created and migrated); the topology provisioned; the five functions served by the Functions Framework and fed\n"+
		"push-style; local fakes of NetSuite and SuiteX unless NETSUITE_BASE_URL / SUITEX_BASE_URL are set. Ctrl-C stops it.")
	envName := fs.String("env", "", "environment (default: BACKBONE_ENV, else sandbox)")
	port := fs.Int("port", 8080, "port of the functions (0: any free port)")
	psPort := fs.Int("pubsub-port", 8085, "port of the started Pub/Sub emulator (0: any)")
	emulator := fs.String("emulator", emulatorPstest, "Pub/Sub emulator to start when PUBSUB_EMULATOR_HOST is unset: pstest (embedded) or gcloud")
	// The production policy (10s..600s) scaled down by five and ten: five
	// attempts on the retry subscription span about 30 s, so a 15-second
	// store outage exhausts nothing, and a nacked message is back in 2 s.
	minB := fs.Duration("min-backoff", 2*time.Second, "first redelivery delay (Pub/Sub: 10s)")
	maxB := fs.Duration("max-backoff", 60*time.Second, "longest redelivery delay (Pub/Sub: 600s)")
	debug := fs.Bool("debug", false, "log every delivery attempt")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("unexpected arguments %v", fs.Args())
	}
	if err := oneOf("--emulator", *emulator, emulatorPstest, emulatorGcloud); err != nil {
		return err
	}
	if *port < 0 || *port > 65535 || *psPort < 0 || *psPort > 65535 {
		return usagef("--port and --pubsub-port: want 0-65535")
	}
	e := *envName
	if e == "" {
		e = c.getenv("BACKBONE_ENV")
	}
	if e == "" {
		e = string(config.Sandbox)
	}
	env, err := config.ParseEnv(e)
	if err != nil {
		return usageError{err.Error()}
	}
	dsn := c.getenv("EVENT_STORE_DSN")
	if dsn == "" {
		dsn = devDefaultDSN
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := logging.New(c.stderr, level)
	if *emulator == emulatorGcloud && c.getenv("PUBSUB_EMULATOR_HOST") == "" {
		fmt.Fprintln(c.stdout, "starting the gcloud Pub/Sub emulator (a few seconds) ...")
	}
	d, err := startDev(ctx, devOptions{env: env, dsn: dsn, project: devProjectFrom(c.getenv), emulatorHost: c.getenv("PUBSUB_EMULATOR_HOST"),
		emulator: *emulator, pubsubPort: *psPort,
		funcAddr: "127.0.0.1:" + strconv.Itoa(*port), netsuiteURL: c.getenv("NETSUITE_BASE_URL"), suitexURL: c.getenv("SUITEX_BASE_URL"),
		minBackoff: *minB, maxBackoff: *maxB, log: log, getenv: c.getenv})
	if err != nil {
		return err
	}
	d.printBanner(c.stdout, dsn)
	<-ctx.Done()
	fmt.Fprintln(c.stdout, "\nstopping: finishing deliveries in flight ...")
	d.stop()
	fmt.Fprintln(c.stdout, "stopped")
	return nil
}

func (d *devStack) printBanner(w io.Writer, dsn string) {
	env := d.cfg.Env
	fmt.Fprintf(w, "backbone dev is running (%s)\n\n", env)
	made := d.changes.Count(topology.ActionCreate) + d.changes.Count(topology.ActionUpdate) + d.changes.Count(topology.ActionRecreate)
	kind := "external emulator"
	switch {
	case d.pstest != nil:
		kind = "pstest, bridged push"
	case d.gcloud != nil:
		kind = "gcloud emulator, real push; Retry's subscription bridged"
	}
	fmt.Fprintf(w, "  Pub/Sub emulator   %s  (%s; project %s; topology provisioned: %d topics/subscriptions created or repaired)\n", d.emulator, kind, d.project, made)
	worker := "the worker user"
	if mc, err := gomysql.ParseDSN(d.workerDSN); err == nil {
		worker = mc.User
	}
	fmt.Fprintf(w, "  event store        %s  (functions connect as %s, with the sync_worker grants)\n", dsn, worker)
	fmt.Fprintf(w, "  functions          %s/{Merge,NetSuiteSink,SuiteXSink,Retry,DLQArchive}\n", d.funcURL)
	fmt.Fprintf(w, "  console            %s%s/  (you are an operator as %s)\n", d.funcURL, console.Prefix, localUser())
	fmt.Fprintf(w, "  NetSuite           %s%s\n", d.cfg.NetSuite.BaseURL, fakeNote(d.netsuite != nil))
	fmt.Fprintf(w, "  SuiteX             %s%s\n", d.cfg.SuiteX.BaseURL, fakeNote(d.suitex != nil))
	fmt.Fprintf(w, "\nFrom another shell (make build first; go run hides exit codes):\n\n")
	fmt.Fprintf(w, "  export BACKBONE_ENV=%s GCP_PROJECT=%s PUBSUB_EMULATOR_HOST=%s EVENT_STORE_DSN='%s'\n", env, d.project, d.emulator, dsn)
	fmt.Fprintf(w, "  export WORKER_DSN='%s'   # least privilege: the functions' user\n", d.workerDSN)
	fmt.Fprintf(w, "  bin/backbone publish examples/customer-create.json\n")
	fmt.Fprintf(w, "  bin/backbone trace customer:C-1001\n")
	fmt.Fprintf(w, "  bin/backbone dlq list\n")
	fmt.Fprintf(w, "  bin/backbone stress --dsn \"$WORKER_DSN\" --n 200\n\nCtrl-C stops it.\n")
}

func fakeNote(local bool) string {
	if local {
		return "  (local fake: logs what it receives)"
	}
	return ""
}

// devConsoleKey is the console's entry among the dev server's handlers:
// served at /console/ and below.
const devConsoleKey = "console/"

// devConsole is the web console on the dev stack: the local OS user is the
// identity and, unless operators are given, an operator (it is their
// machine); redrive publishes through the stack's emulator.
func devConsole(o devOptions, d *devStack) (*console.Console, error) {
	me := localUser()
	ops := o.operators
	if ops == nil {
		ops = []string{me}
	}
	st, ok := d.app.store.(console.Store)
	if !ok {
		return nil, fmt.Errorf("the console needs the MySQL store, got %T", d.app.store)
	}
	return console.New(console.Options{Env: o.env, Store: st, Publisher: publish.Guard(o.env, d.pubsub),
		Identity: console.Fixed(me), Operators: ops, Refresh: 2 * time.Second, Log: o.log,
		Thresholds: health.DefaultThresholds()})
}
