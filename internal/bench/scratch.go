package bench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/store/mysql"
)

// Scratch owns the scratch databases of one run (bench_<run>_<name>) on a
// server reached with a privileged DSN, and drops them at the end together
// with the grants given on them.
type Scratch struct {
	RunID  string
	server *mysql.Config
	db     *sql.DB
	close  func() error

	mu     sync.Mutex
	names  []string
	grants map[string][]string // database -> GRANT statements to revoke
}

var identRE = regexp.MustCompile(`^[a-z0-9_]+$`)

// NewScratch connects to the server of serverDSN (its database part, if
// any, is ignored).
func NewScratch(ctx context.Context, serverDSN string) (*Scratch, error) {
	mc, err := mysql.ParseDSN(serverDSN)
	if err != nil {
		return nil, fmt.Errorf("EVENT_STORE_DSN is not a valid DSN: %w", err)
	}
	mc.DBName = ""
	db, closeDB, err := mysql.Open(ctx, config.DB{DSN: mc.FormatDSN(), MaxOpenConns: 2})
	if err != nil {
		return nil, err
	}
	if err := db.PingContext(ctx); err != nil {
		_ = closeDB()
		return nil, fmt.Errorf("the database server at %s is not reachable (start it: make db; or set EVENT_STORE_DSN to a privileged DSN): %w", mc.Addr, err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return &Scratch{RunID: hex.EncodeToString(b), server: mc, db: db, close: closeDB, grants: map[string][]string{}}, nil
}

// Addr is the server's host:port.
func (s *Scratch) Addr() string { return s.server.Addr }

// Server is the privileged connection to the server (no database).
func (s *Scratch) Server() *sql.DB { return s.db }

// Name registers a scratch database (dropped by Drop) and returns its
// privileged DSN; the caller creates it (so that it is created the way the
// code under test creates its databases).
func (s *Scratch) Name(name string) (db, dsn string, err error) {
	if !identRE.MatchString(name) {
		return "", "", fmt.Errorf("scratch database name %q: use [a-z0-9_]", name)
	}
	db = "bench_" + s.RunID + "_" + name
	s.mu.Lock()
	s.names = append(s.names, db)
	s.mu.Unlock()
	mc := s.server.Clone()
	mc.DBName = db
	return db, mc.FormatDSN(), nil
}

// Stale lists scratch databases of earlier runs still on the server (a run
// killed before its cleanup). They are not dropped here: another run may be
// using them.
func (s *Scratch) Stale(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, "SHOW DATABASES LIKE 'bench\\_%'")
	if err != nil {
		return nil, fmt.Errorf("list scratch databases: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// Granted records grant statements given on database, to revoke them in
// Drop (a dropped database keeps its grants otherwise).
func (s *Scratch) Granted(database string, grants []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grants[database] = append(s.grants[database], grants...)
}

// Drop revokes the recorded grants and drops every scratch database.
func (s *Scratch) Drop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, name := range s.names {
		for _, g := range s.grants[name] {
			if !strings.HasPrefix(g, "GRANT ") {
				continue
			}
			on, to, ok := strings.Cut(strings.TrimPrefix(g, "GRANT "), " TO ")
			if !ok {
				continue
			}
			// Revoking what was never granted (creation failed half-way) is
			// an error worth ignoring.
			_, _ = s.db.ExecContext(ctx, "REVOKE "+on+" FROM "+to)
		}
		if _, err := s.db.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`"); err != nil {
			errs = append(errs, fmt.Errorf("drop scratch database %s: %w", name, err))
		}
	}
	s.names = nil
	return errors.Join(errs...)
}

// Close drops (Drop) and closes the connection.
func (s *Scratch) Close(ctx context.Context) error {
	err := s.Drop(ctx)
	return errors.Join(err, s.close())
}

// ServerThreads returns a function listing the server threads (MariaDB's
// information_schema.PROCESSLIST.TID) of every connection to this run's
// scratch databases, or nil when the server does not report them (MySQL
// has no TID column there).
func (s *Scratch) ServerThreads(ctx context.Context) func() map[int64]int {
	pattern := "bench\\_" + s.RunID + "\\_%"
	q := "SELECT ID, TID FROM information_schema.PROCESSLIST WHERE DB LIKE ?"
	if _, err := s.db.ExecContext(ctx, "DO (SELECT COUNT(TID) FROM information_schema.PROCESSLIST)"); err != nil {
		return nil
	}
	return func() map[int64]int {
		out := map[int64]int{}
		rows, err := s.db.QueryContext(ctx, q, pattern)
		if err != nil {
			return out
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			var tid sql.NullInt64
			if rows.Scan(&id, &tid) == nil && tid.Valid {
				out[id] = int(tid.Int64)
			}
		}
		return out
	}
}

// WithAddr returns dsn pointed at another host:port (the counting proxy).
func WithAddr(dsn, addr string) (string, error) {
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", err
	}
	mc.Addr = addr
	return mc.FormatDSN(), nil
}

// Machine describes where the figures come from.
type Machine struct {
	NProc     int               `json:"nproc"`
	CPUModel  string            `json:"cpu_model"`
	MemoryMiB int               `json:"memory_mib"`
	GoVersion string            `json:"go_version"`
	OS        string            `json:"os"`
	LoadAvg   string            `json:"loadavg_at_start"`
	Server    string            `json:"db_server_version"`
	ServerVar map[string]string `json:"db_server_settings"`
}

// DescribeMachine reads the machine and the database server's version and
// the settings that bound commit throughput.
func DescribeMachine(ctx context.Context, db *sql.DB) Machine {
	m := Machine{NProc: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH, ServerVar: map[string]string{}}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.MemoryMiB = kb / 1024
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	_ = db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&m.Server)
	for _, v := range []string{"innodb_flush_log_at_trx_commit", "sync_binlog", "log_bin", "innodb_buffer_pool_size", "max_connections"} {
		var val sql.NullString
		if db.QueryRowContext(ctx, "SELECT @@"+v).Scan(&val) == nil {
			m.ServerVar[v] = val.String
		}
	}
	return m
}
