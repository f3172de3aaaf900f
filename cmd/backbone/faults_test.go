package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/internal/devstack"
	"github.com/backbone-sync/backbone/internal/fake/netsuitefake"
	"github.com/backbone-sync/backbone/internal/fake/suitexfake"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/publish/pubsub"
	"github.com/backbone-sync/backbone/shared/record"
	"github.com/backbone-sync/backbone/shared/sink/netsuite"
	"github.com/backbone-sync/backbone/shared/store/mysql"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// The fault-injection suite (issue: nothing lost under faults): the dev
// stack's wiring with its own pstest, database and target fakes, against
// faults made on purpose — a database cut by a proxy the test owns, a
// SIGKILL mid-load, a target down longer than Retry waits, a SIGTERM with
// requests in flight.

var faultsLong = flag.Bool("faults.long", false, "also cut the database for 3 minutes")

// cutProxy is a TCP proxy to the database that the test can cut: every
// open connection is closed and new ones are refused until Restore.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { _ = ln.Close(); p.Cut() })
	go p.accept()
	return p
}

func (p *cutProxy) Addr() string { return p.ln.Addr().String() }

func (p *cutProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			_ = c.Close() // refused: the server is "down"
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[s] = true, true
		p.mu.Unlock()
		go p.pipe(c, s)
		go p.pipe(s, c)
	}
}

func (p *cutProxy) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// Cut closes every connection and refuses new ones.
func (p *cutProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		_ = c.Close()
	}
}

// Restore accepts connections again.
func (p *cutProxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// Credentials of the target fakes.
const (
	fAccount      = "123456_SB1"
	fCK, fCS      = "ck-faults", "cs-faults-secret"
	fTK, fTS      = "tk-faults", "ts-faults-secret"
	fSuiteXSecret = "sx-faults-secret"
)

// faultTargets are the two fakes, with their copy of every record. A
// source's own change is made on the base it names, so it enters that
// system's copy once the system holds that version: when a delivery of that
// version or a later one is applied, or, if none comes, at the end.
type faultTargets struct {
	ns    *netsuitefake.Server
	sx    *suitexfake.Server
	nsURL string
	sxURL string
	// before, when set, runs first for every request (failure injection,
	// observation); a non-zero status answers without applying.
	before func(system, rid string, version uint64) int

	mu      sync.Mutex
	pending map[string][]ownEdit // system + "/" + record, in base order
	holds   map[string]uint64    // the newest version the system holds
}

type ownEdit struct {
	base    uint64
	changes map[string]json.RawMessage
}

func newFaultTargets(t *testing.T) *faultTargets {
	ft := &faultTargets{
		ns:      &netsuitefake.Server{Account: fAccount, ConsumerKey: fCK, ConsumerSecret: fCS, TokenID: fTK, TokenSecret: fTS},
		sx:      &suitexfake.Server{Secret: fSuiteXSecret},
		pending: map[string][]ownEdit{},
		holds:   map[string]uint64{},
	}
	ft.ns.Hook = func(req netsuitefake.Request, apply func()) (int, string) {
		v, _ := strconv.ParseUint(req.Header.Get(netsuite.HeaderVersion), 10, 64)
		return ft.serve("netsuite", req.ExternalID, v, apply)
	}
	ft.sx.Hook = func(req suitexfake.Request, apply func()) (int, string) {
		var ev struct {
			RecordID string `json:"record_id"`
			Version  uint64 `json:"version"`
		}
		_ = json.Unmarshal(req.Body, &ev)
		return ft.serve("suitex", ev.RecordID, ev.Version, apply)
	}
	ft.nsURL, ft.sxURL = ft.ns.Start(t).URL, ft.sx.Start(t).URL
	return ft
}

func (ft *faultTargets) serve(system, rid string, version uint64, apply func()) (int, string) {
	if ft.before != nil {
		if status := ft.before(system, rid, version); status != 0 {
			return status, `{"error":"injected"}`
		}
	}
	// Own changes made on a base below this version were made before the
	// system received it (it cannot have made them after): they come first.
	ft.catchUp(system, rid, version-1)
	apply()
	ft.catchUp(system, rid, version)
	return 0, ""
}

// own records a change system made itself on base.
func (ft *faultTargets) own(system, rid string, base uint64, changes map[string]json.RawMessage) {
	ft.mu.Lock()
	k := system + "/" + rid
	ft.pending[k] = append(ft.pending[k], ownEdit{base: base, changes: changes})
	ft.mu.Unlock()
	ft.catchUp(system, rid, 0)
}

// catchUp notes that system applied version, then applies its own changes
// made on a version it now holds, in order; each creates the next version,
// which the system then holds too.
func (ft *faultTargets) catchUp(system, rid string, version uint64) {
	k := system + "/" + rid
	for {
		ft.mu.Lock()
		ft.holds[k] = max(ft.holds[k], version)
		q := ft.pending[k]
		if len(q) == 0 || q[0].base > ft.holds[k] {
			ft.mu.Unlock()
			return
		}
		e := q[0]
		ft.pending[k] = q[1:]
		ft.holds[k] = max(ft.holds[k], e.base+1)
		ft.mu.Unlock()
		ft.edit(system, rid, e.changes)
	}
}

func (ft *faultTargets) edit(system, rid string, changes map[string]json.RawMessage) {
	if system == "netsuite" {
		ft.ns.Edit("customer", rid, changes)
	} else {
		ft.sx.Edit("customer", rid, changes)
	}
}

// startDevWith runs the dev stack in process on dsn against the fakes ft,
// with the given redelivery backoff; it stops when the test ends. It also
// returns the sources' guarded publisher to events.raw.
func startDevWith(t *testing.T, dsn string, ft *faultTargets, minBackoff, maxBackoff time.Duration) (*devstack.Stack, publish.Publisher) {
	t.Helper()
	d, err := startDev(context.Background(), devstack.Options{Env: config.Sandbox, DSN: dsn, FuncAddr: "127.0.0.1:0",
		NetSuiteURL: ft.nsURL, SuiteXURL: ft.sxURL, Getenv: func(k string) string { return ft.env()[k] },
		MinBackoff: minBackoff, MaxBackoff: maxBackoff, Serve: devstack.ServeInProcess, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	return d, publish.Guard(config.Sandbox, d.PubSub)
}

// failSuiteX makes the SuiteX fake answer 503 while the returned flag is
// set.
func (ft *faultTargets) failSuiteX() *atomic.Bool {
	var down atomic.Bool
	ft.before = func(system, _ string, _ uint64) int {
		if system == "suitex" && down.Load() {
			return http.StatusServiceUnavailable
		}
		return 0
	}
	return &down
}

func (ft *faultTargets) env() map[string]string {
	return map[string]string{
		"NETSUITE_BASE_URL": ft.nsURL, "NETSUITE_ACCOUNT_ID": fAccount, "NETSUITE_CONSUMER_KEY": fCK,
		"NETSUITE_CONSUMER_SECRET": fCS, "NETSUITE_TOKEN_ID": fTK, "NETSUITE_TOKEN_SECRET": fTS,
		"SUITEX_BASE_URL": ft.sxURL, "SUITEX_SIGNING_SECRET": fSuiteXSecret,
	}
}

// chain is the load: records × versions, each version from the other
// source than the one before, each on the base the one before created.
type chain struct {
	prefix   string
	records  int
	versions int
	targets  *faultTargets // the sources' own copies
	sent     atomic.Int64
}

func (c *chain) rid(r int) string { return fmt.Sprintf("%s-%02d", c.prefix, r) }

// publishVersions publishes versions [from, to) of every record, each a
// change its source made itself (so it is in that source's copy too).
func (c *chain) publishVersions(t *testing.T, pub publish.Publisher, env config.Env, from, to int) {
	t.Helper()
	ts := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for v := from; v < to; v++ {
		src := "netsuite"
		if v%2 == 1 {
			src = "suitex"
		}
		for r := 0; r < c.records; r++ {
			changes := map[string]json.RawMessage{"n": json.RawMessage(strconv.Itoa(v)), "by" + src: json.RawMessage(strconv.Itoa(v))}
			if c.targets != nil {
				c.targets.own(src, c.rid(r), uint64(v), changes)
			}
			data, err := json.Marshal(event.Raw{ID: uuid.NewString(), RecordType: "customer", RecordID: c.rid(r), Source: src,
				Timestamp: event.NewTime(ts.Add(time.Duration(v) * time.Second)), BaseVersion: uint64(v), Changes: changes})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pub.Publish(context.Background(), env.Names().RawTopic,
				publish.Message{Data: data, OrderingKey: publish.OrderingKey("customer", c.rid(r))}); err != nil {
				t.Fatalf("publish: %v", err)
			}
			c.sent.Add(1)
		}
	}
}

// convergence says what is still wrong, "" when every record is complete
// (every version stored, gap-free, published) and both targets hold the
// store's value of every field.
func (c *chain) convergence(ctx context.Context, db *mysqltest.DB, ft *faultTargets) string {
	for r := 0; r < c.records; r++ {
		rid := c.rid(r)
		evs, err := db.Store.History(ctx, "customer", rid)
		if err != nil {
			return err.Error()
		}
		if len(evs) != c.versions {
			return fmt.Sprintf("%s has %d of %d versions", rid, len(evs), c.versions)
		}
		for i, e := range evs {
			if e.BaseVersion != uint64(i) {
				return fmt.Sprintf("%s: gap at %d", rid, i)
			}
			if !e.Processed {
				return fmt.Sprintf("%s v%d is processed = 0", rid, e.Version())
			}
		}
		st, err := record.Fold(evs)
		if err != nil {
			return err.Error()
		}
		want := map[string]string{}
		for f, fs := range st.Fields {
			want[f] = string(fs.Value)
		}
		for name, got := range map[string]map[string]json.RawMessage{
			"netsuite": ft.ns.Record("customer", rid), "suitex": ft.sx.Record("customer", rid),
		} {
			if len(got) != len(want) {
				return fmt.Sprintf("%s: %s holds %d fields, the store %d", rid, name, len(got), len(want))
			}
			for f, v := range got {
				c, _ := event.Canonical(v)
				if want[f] != string(c) {
					return fmt.Sprintf("%s: %s holds %s=%s, the store %s", rid, name, f, c, want[f])
				}
			}
		}
	}
	return ""
}

func (c *chain) waitConverged(t *testing.T, db *mysqltest.DB, ft *faultTargets, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		why := c.convergence(context.Background(), db, ft)
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			rid, _, _ := strings.Cut(why, ":")
			t.Fatalf("not converged within %s: %s\n%s", within, why, auditDump(t, db, rid))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// viaProxy rewrites dsn's address to the proxy's.
func viaProxy(t *testing.T, dsn, addr string) string {
	t.Helper()
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	mc.Addr = addr
	return mc.FormatDSN()
}

func deadLetterCount(t *testing.T, db *mysqltest.DB, where string) int {
	t.Helper()
	var n int
	if err := db.Root.QueryRow("SELECT COUNT(*) FROM dead_letters " + where).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFaultDatabaseOutage cuts the database for 15 s, or for 3 minutes with
// -faults.long.
func TestFaultDatabaseOutage(t *testing.T) {
	t.Parallel()
	cut := 15 * time.Second
	if *faultsLong {
		cut = 3 * time.Minute
	}
	databaseOutage(t, cut)
}

// databaseOutage cuts the database for cut in the middle of a load of 30
// records × 6 chained versions from both sources, then restores it: every
// chain ends complete and gap-free, everything published, both targets
// equal to the store, and nothing in dead_letters.
func databaseOutage(t *testing.T, cut time.Duration) {
	db := mysqltest.Empty(t)
	mc, _ := mysql.ParseDSN(db.DSN)
	proxy := startCutProxy(t, mc.Addr)
	ft := newFaultTargets(t)
	_, pub := startDevWith(t, viaProxy(t, db.DSN, proxy.Addr()), ft, 200*time.Millisecond, 2*time.Second)
	c := &chain{prefix: "out" + strconv.Itoa(int(cut.Seconds())), records: 30, versions: 6, targets: ft}
	c.publishVersions(t, pub, config.Sandbox, 0, 2)
	time.Sleep(300 * time.Millisecond) // the load is under way
	proxy.Cut()
	c.publishVersions(t, pub, config.Sandbox, 2, c.versions) // published while the database is down
	time.Sleep(cut)
	proxy.Restore()
	c.waitConverged(t, db, ft, 2*time.Minute)
	if n := deadLetterCount(t, db, ""); n != 0 {
		t.Fatalf("%d dead letters after a %s outage, want none", n, cut)
	}
	var deferred int
	if err := db.Root.QueryRow("SELECT COUNT(*) FROM event_audit_log WHERE processing_outcome = 'deferred'").Scan(&deferred); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d versions converged after a %s cut; %d merges deferred on a gap", c.sent.Load(), cut, deferred)
}

// TestFaultTargetOutageLongerThanRetry: SuiteX answers 503 until Retry
// dead-letters the deliveries; then it heals and `dlq redrive --retryable`
// brings every record to SuiteX, audited, while a permanent rejection in
// the same archive stays where it is.
func TestFaultTargetOutageLongerThanRetry(t *testing.T) {
	t.Parallel()
	db := mysqltest.Empty(t)
	ft := newFaultTargets(t)
	down := ft.failSuiteX()
	down.Store(true)
	ctx := context.Background()
	d, pub := startDevWith(t, db.DSN, ft, 50*time.Millisecond, 200*time.Millisecond)
	c := &chain{prefix: "tout", records: 8, versions: 1, targets: ft}
	c.publishVersions(t, pub, config.Sandbox, 0, 1) // from NetSuite: SuiteX is the target
	// A permanent rejection in the same archive.
	if _, err := pub.Publish(ctx, config.Sandbox.Names().RawTopic, publish.Message{Data: []byte(`{not json`), OrderingKey: "poison"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for deadLetterCount(t, db, "WHERE stage = 'suitex'") < c.records || deadLetterCount(t, db, "WHERE stage = 'merge'") < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("deliveries not dead-lettered: %d suitex, %d merge", deadLetterCount(t, db, "WHERE stage = 'suitex'"), deadLetterCount(t, db, "WHERE stage = 'merge'"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	down.Store(false)
	env := map[string]string{"BACKBONE_ENV": "sandbox", "EVENT_STORE_DSN": d.WorkerDSN, "PUBSUB_EMULATOR_HOST": d.Emulator,
		"GCP_PROJECT": d.Project}
	for k, v := range ft.env() {
		env[k] = v
	}
	code, stdout, stderr := dlqRun(t, env, "dlq", "redrive", "--retryable")
	if code != 0 {
		t.Fatalf("dlq redrive --retryable: exit %d\n%s\n%s", code, stdout, stderr)
	}
	c.waitConverged(t, db, ft, time.Minute)
	var redriven int
	if err := db.Root.QueryRow("SELECT COUNT(*) FROM event_audit_log WHERE processing_outcome = 'redriven' AND record_id LIKE 'tout-%'").Scan(&redriven); err != nil {
		t.Fatal(err)
	}
	if redriven < c.records {
		t.Fatalf("%d redrives audited for %d records", redriven, c.records)
	}
	tl, err := timeline(ctx, d.Store, "customer", c.rid(0))
	if err != nil {
		t.Fatal(err)
	}
	sawRedrive := false
	for _, e := range tl {
		sawRedrive = sawRedrive || e.Outcome == "redriven"
	}
	if !sawRedrive {
		t.Fatalf("trace of %s shows no redrive: %+v", c.rid(0), tl)
	}
	var poisonRedriven int
	if err := db.Root.QueryRow("SELECT COUNT(*) FROM event_audit_log WHERE processing_outcome = 'redriven' AND stage = 'redrive' AND record_id NOT LIKE 'tout-%'").Scan(&poisonRedriven); err != nil {
		t.Fatal(err)
	}
	if poisonRedriven != 0 {
		t.Fatalf("the permanent rejection was redriven")
	}
}

// TestFaultCrashMidLoad: SIGKILL to the process running the functions
// while a stream is published; restarted on the same database and pstest,
// then one `backbone outbox flush`: nothing unpublished, every raw event
// stored, both targets equal to the store, and no target ever sent an
// older version after a newer one.
func TestFaultCrashMidLoad(t *testing.T) {
	t.Parallel()
	db := mysqltest.Empty(t)
	ft := newFaultTargets(t)
	var (
		mu   sync.Mutex
		last = map[string]uint64{}
		regr []string
	)
	seen := func(target, rid string, v uint64) {
		mu.Lock()
		defer mu.Unlock()
		if v < last[target+rid] {
			regr = append(regr, fmt.Sprintf("%s %s: v%d after v%d", target, rid, v, last[target+rid]))
		}
		last[target+rid] = max(last[target+rid], v)
	}
	ft.before = func(system, rid string, v uint64) int {
		seen(system, rid, v)
		return 0
	}
	ps, err := devstack.StartPstest(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ps.Close() })
	env := ft.env()
	env["BACKBONE_ENV"], env["EVENT_STORE_DSN"], env["PUBSUB_EMULATOR_HOST"], env["GCP_PROJECT"] = "sandbox", db.DSN, ps.Addr, devstack.Project
	args := []string{"--min-backoff", "200ms", "--max-backoff", "2s"}
	first := startDevProcess(t, env, args...)
	client, err := pubsub.New(context.Background(), devstack.Project, ps.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	pub := publish.Guard(config.Sandbox, client)
	c := &chain{prefix: "crash", records: 20, versions: 6, targets: ft}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.publishVersions(t, pub, config.Sandbox, 0, c.versions)
	}()
	// Kill once the stream is under way and some of it is merged.
	deadline := time.Now().Add(60 * time.Second)
	for {
		var n int
		_ = db.Root.QueryRow("SELECT COUNT(*) FROM events").Scan(&n)
		if n >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing merged within 60s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Kill(-first.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = first.cmd.Process.Wait()
	<-done
	second := startDevProcess(t, env, args...)
	// outbox flush with the worker DSN the restarted dev prints.
	flushEnv := map[string]string{"BACKBONE_ENV": "sandbox", "PUBSUB_EMULATOR_HOST": ps.Addr, "GCP_PROJECT": devstack.Project,
		"EVENT_STORE_DSN": second.exports["EVENT_STORE_DSN"]}
	if flushEnv["EVENT_STORE_DSN"] == "" {
		flushEnv["EVENT_STORE_DSN"] = db.DSN
	}
	out, err := runBinary(t, flushEnv, "outbox", "flush", "--older-than", "0s")
	if err != nil {
		t.Fatalf("outbox flush: %v\n%s", err, out)
	}
	// Messages the killed process had pulled come back after their ack
	// deadline (60 s).
	c.waitConverged(t, db, ft, 3*time.Minute)
	var published int64
	if err := db.Root.QueryRow("SELECT COUNT(*) FROM events").Scan(&published); err != nil {
		t.Fatal(err)
	}
	if published != c.sent.Load() {
		t.Fatalf("%d raw events published, %d stored", c.sent.Load(), published)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(regr) > 0 {
		t.Fatalf("targets regressed: %v", regr)
	}
}

// runBinary runs the built backbone with env (added to a minimal one).
func runBinary(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, backboneBinary(t), args...)
	cmd.Env = minimalEnv(env)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestFaultGracefulShutdown: SIGTERM to `serve` with 100 requests in
// flight. Each request either finishes (2xx: its change is stored and
// published) or is nacked (anything else, or a cut connection: Pub/Sub
// redelivers it); none is acked unfinished.
func TestFaultGracefulShutdown(t *testing.T) {
	t.Parallel()
	db := mysqltest.New(t)
	_, worker := db.Worker(t)
	ps, err := devstack.StartPstest(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ps.Close() })
	client, err := pubsub.New(context.Background(), devstack.Project, ps.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Client().TopicAdminClient.CreateTopic(context.Background(), topicReq(devstack.Project, config.Sandbox.Names().MergedTopic)); err != nil {
		t.Fatal(err)
	}
	port := unusedPort(t)
	cmd := exec.Command(backboneBinary(t), "serve")
	cmd.Env = minimalEnv(map[string]string{"BACKBONE_ENV": "sandbox", "FUNCTION_TARGET": "Merge", "PORT": port,
		"EVENT_STORE_DSN": worker.DSN, "PUBSUB_EMULATOR_HOST": ps.Addr, "GCP_PROJECT": devstack.Project, "DB_MAX_OPEN_CONNS": "4"})
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	url := "http://127.0.0.1:" + port + "/"
	waitListening(t, "127.0.0.1:"+port)
	const n = 100
	type result struct {
		id     string
		status int
	}
	results := make(chan result, n)
	var started sync.WaitGroup
	hc := &http.Client{Timeout: 30 * time.Second}
	for i := 0; i < n; i++ {
		started.Add(1)
		go func() {
			id := uuid.NewString()
			raw, _ := json.Marshal(event.Raw{ID: id, RecordType: "customer", RecordID: fmt.Sprintf("gs-%03d", i), Source: "netsuite",
				Timestamp: event.NewTime(time.Now()), Changes: map[string]json.RawMessage{"a": json.RawMessage("1")}})
			body, _ := json.Marshal(map[string]any{"message": map[string]any{"data": raw, "messageId": "m-" + id,
				"attributes": map[string]string{"env": "sandbox"}}, "subscription": "projects/" + devstack.Project + "/subscriptions/" + config.Sandbox.Names().MergeSub})
			started.Done()
			resp, err := hc.Post(url, "application/json", strings.NewReader(string(body)))
			if err != nil {
				results <- result{id: id}
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			results <- result{id: id, status: resp.StatusCode}
		}()
	}
	started.Wait()
	time.Sleep(30 * time.Millisecond) // requests in flight
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err := <-waitErr:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("serve did not stop within 30 s of SIGTERM")
	}
	acked, nacked := 0, 0
	for i := 0; i < n; i++ {
		r := <-results
		if r.status >= 200 && r.status < 300 {
			acked++
			ev, err := db.Store.EventByID(context.Background(), r.id)
			if err != nil || !ev.Processed {
				t.Errorf("request for %s was acked (%d) but its event is %+v, %v: acked unfinished", r.id, r.status, ev, err)
			}
			continue
		}
		nacked++
	}
	t.Logf("SIGTERM with %d requests in flight: %d finished and acked, %d nacked (redelivered by Pub/Sub)", n, acked, nacked)
	if acked+nacked != n {
		t.Fatalf("%d results", acked+nacked)
	}
}

func topicReq(project, topic string) *pubsubpb.Topic {
	return &pubsubpb.Topic{Name: "projects/" + project + "/topics/" + topic}
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s within 30 s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// auditDump renders a record's audit trail for a failure message.
func auditDump(t *testing.T, db *mysqltest.DB, rid string) string {
	trail, err := db.Store.AuditTrail(context.Background(), "customer", rid)
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, a := range trail {
		var fields []string
		if a.Fields != nil {
			for f, d := range a.Fields.Fields {
				fields = append(fields, f+"="+d[:6])
			}
		}
		fmt.Fprintf(&b, "%s %-8s %-12s v%-2d src=%-8s %v %s\n", a.CreatedAt.Format("15:04:05.000000"), a.Stage, a.Outcome, a.Version, a.Source, fields, a.Detail)
	}
	return b.String()
}
