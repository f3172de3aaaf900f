// Package console is the operators' web console (SPEC §8 `console`): the
// health figures with a chart of the last hour, a record's timeline as
// `trace` shows it, and the dead letters with redrive. It is server-rendered
// html/template over net/http, with no script at all. It is read-only
// unless the caller's identity is on the operator list; every change is a
// POST carrying a confirmation token bound to the caller and to exactly the
// dead letters previewed, and is audited with the caller's identity.
package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/backbone-sync/backbone/internal/health"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/store"
)

// Prefix is where the console is served.
const Prefix = "/console"

// HeaderIAPEmail is the identity header Identity-Aware Proxy sets.
const HeaderIAPEmail = "X-Goog-Authenticated-User-Email"

// Store is what the console reads and appends to.
type Store interface {
	store.Store
	DB() *sql.DB
}

// IdentityFunc says who is calling; "" is anonymous (read-only).
type IdentityFunc func(r *http.Request) string

// FromIAP reads the identity IAP asserts ("accounts.google.com:alice@x"
// becomes "alice@x"). Only trust it behind IAP or Cloud Run IAM, which
// strip a client's own copy of the header.
func FromIAP(r *http.Request) string {
	v := r.Header.Get(HeaderIAPEmail)
	if _, email, ok := strings.Cut(v, ":"); ok {
		return email
	}
	return v
}

// Fixed returns an IdentityFunc that is always user (the local OS user in
// dev).
func Fixed(user string) IdentityFunc { return func(*http.Request) string { return user } }

// Options configure a console.
type Options struct {
	Env   config.Env
	Store Store
	// Publisher, guarded for Env, puts redriven letters on the error topic;
	// nil makes redrive unavailable (previews still work).
	Publisher publish.Publisher
	Identity  IdentityFunc
	// Operators may redrive; everyone else reads.
	Operators []string
	// Health and Thresholds are the status figures' options.
	Health     health.Options
	Thresholds health.Thresholds
	// Refresh is how old the cached health snapshot may get (default 15s);
	// the health page refreshes itself at that pace.
	Refresh time.Duration
	// Secret keys the confirmation tokens; empty: a random one per process.
	Secret []byte
	Log    *slog.Logger
	Now    func() time.Time
}

// Console is the web console's handler.
type Console struct {
	o   Options
	mux *http.ServeMux

	mu       sync.Mutex
	snap     *health.Snapshot
	snapErr  error
	snapTime time.Time
	// running: Run refreshes the snapshot in the background, so a page
	// serves the last one whatever its age and never waits for the
	// figures (only the very first request can, before Run's first pass).
	running bool
}

// New builds the console.
func New(o Options) (*Console, error) {
	if o.Store == nil {
		return nil, fmt.Errorf("console: no store")
	}
	if _, err := config.ParseEnv(string(o.Env)); err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	if o.Identity == nil {
		o.Identity = func(*http.Request) string { return "" }
	}
	if o.Refresh <= 0 {
		o.Refresh = 15 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if len(o.Secret) == 0 {
		o.Secret = make([]byte, 32)
		if _, err := rand.Read(o.Secret); err != nil {
			return nil, fmt.Errorf("console: token secret: %w", err)
		}
	}
	o.Health.Env = o.Env
	c := &Console{o: o, mux: http.NewServeMux()}
	c.mux.HandleFunc("GET "+Prefix+"/{$}", c.healthPage)
	c.mux.HandleFunc("GET "+Prefix, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix+"/", http.StatusFound)
	})
	c.mux.HandleFunc("GET "+Prefix+"/health.json", c.healthJSON)
	c.mux.HandleFunc("GET "+Prefix+"/records", c.recordsPage)
	c.mux.HandleFunc("GET "+Prefix+"/dead-letters", c.deadLettersPage)
	c.mux.HandleFunc("GET "+Prefix+"/dead-letters/{ref}", c.deadLetterPage)
	c.mux.HandleFunc("GET "+Prefix+"/redrive", c.redrivePreview)
	c.mux.HandleFunc("POST "+Prefix+"/redrive", c.redrive)
	c.mux.HandleFunc(Prefix+"/", func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, http.StatusNotFound, "No such page", "There is no console page at "+r.URL.Path+".")
	})
	return c, nil
}

// ServeHTTP serves the console under Prefix.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// No framing, no sniffing, no referrer: the pages carry tokens and
	// record ids.
	h := w.Header()
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	c.mux.ServeHTTP(w, r)
}

// Run refreshes the health snapshot every Refresh until ctx ends and logs
// the outbox's figures in a structured line each time (the log-based metric
// backbone_outbox_unprocessed in deploy/monitoring reads it).
func (c *Console) Run(ctx context.Context) {
	c.mu.Lock()
	c.running = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running = false
		c.mu.Unlock()
	}()
	t := time.NewTicker(c.o.Refresh)
	defer t.Stop()
	for {
		if s, err := c.refresh(ctx); err == nil {
			LogOutbox(ctx, c.o.Log, s.Outbox)
		} else if ctx.Err() == nil {
			c.o.Log.WarnContext(ctx, "health snapshot failed", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// LogOutbox writes the outbox line the log-based metric counts.
func LogOutbox(ctx context.Context, log *slog.Logger, o health.Outbox) {
	log.InfoContext(ctx, "outbox backlog", "outbox_unprocessed", o.Unprocessed, "outbox_oldest_age_seconds", int64(o.OldestAgeSeconds))
}

// snapshot returns the cached snapshot, computing it when older than
// Refresh: the figures cost a bounded but real amount of queries, and many
// browsers refreshing must not multiply them.
func (c *Console) snapshot(ctx context.Context) (*health.Snapshot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snap != nil && (c.running || c.o.Now().Sub(c.snapTime) < c.o.Refresh) {
		return c.snap, nil
	}
	return c.takeLocked(ctx)
}

// refresh computes a snapshot outside the lock (pages keep serving the last
// one meanwhile) and then publishes it.
func (c *Console) refresh(ctx context.Context) (*health.Snapshot, error) {
	s, err := health.Take(ctx, c.o.Store, c.o.Health)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.snap, c.snapTime = s, c.o.Now()
	return s, nil
}

func (c *Console) takeLocked(ctx context.Context) (*health.Snapshot, error) {
	s, err := health.Take(ctx, c.o.Store, c.o.Health)
	if err != nil {
		return nil, err
	}
	c.snap, c.snapTime = s, c.o.Now()
	return s, nil
}

// caller is who is asking and whether they may change anything.
type caller struct {
	Identity string
	Operator bool
}

func (c *Console) caller(r *http.Request) caller {
	id := c.o.Identity(r)
	return caller{Identity: id, Operator: id != "" && slices.Contains(c.o.Operators, id)}
}

// tokenTTL is how long a confirmation stays valid.
const tokenTTL = 10 * time.Minute

// token binds a confirmation to the caller, the exact dead letters and
// an expiry: a forged or replayed-elsewhere POST has none that verifies.
func (c *Console) token(identity string, refs []string, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	m := hmac.New(sha256.New, c.o.Secret)
	m.Write([]byte("redrive\x00" + identity + "\x00" + e + "\x00" + strings.Join(refs, "\x00")))
	return e + "." + hex.EncodeToString(m.Sum(nil))
}

func (c *Console) checkToken(identity string, refs []string, tok string) error {
	e, _, ok := strings.Cut(tok, ".")
	if !ok || tok == "" {
		return fmt.Errorf("the request carries no confirmation token")
	}
	sec, err := strconv.ParseInt(e, 10, 64)
	if err != nil {
		return fmt.Errorf("the confirmation token is malformed")
	}
	exp := time.Unix(sec, 0)
	if !hmac.Equal([]byte(c.token(identity, refs, exp)), []byte(tok)) {
		return fmt.Errorf("the confirmation token does not match this operator and these dead letters")
	}
	if c.o.Now().After(exp) {
		return fmt.Errorf("the confirmation expired (after %s): preview the redrive again", tokenTTL)
	}
	return nil
}
