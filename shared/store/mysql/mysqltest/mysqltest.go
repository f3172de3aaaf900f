// Package mysqltest gives each test its own database on the real MariaDB/MySQL
// server, migrated, and dropped when the test ends, so packages and tests run
// in parallel. A test that needs the database fails when the server is
// missing: a green run proves the real thing ran.
package mysqltest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/store/mysql"
)

// EnvServerDSN names the variable that points tests at another server.
const EnvServerDSN = "BACKBONE_TEST_MYSQL_DSN"

// DefaultServerDSN is the development machine's server: root, no password.
const DefaultServerDSN = "root@tcp(127.0.0.1:3306)/"

// DB is one test's private database.
type DB struct {
	Name    string
	DSN     string // privileged DSN on this database
	Root    *sql.DB
	Store   *mysql.Store
	Cfg     config.DB
	rootCfg *mysql.Config
}

// ServerDSN returns the privileged server DSN (no database).
func ServerDSN() string {
	if v := os.Getenv(EnvServerDSN); v != "" {
		return v
	}
	return DefaultServerDSN
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// New creates, migrates and registers cleanup of a fresh database.
func New(t testing.TB) *DB {
	t.Helper()
	d := Empty(t)
	m, err := mysql.NewMigrator(d.Root)
	if err != nil {
		t.Fatalf("mysqltest: %v", err)
	}
	if _, err := m.Up(context.Background()); err != nil {
		t.Fatalf("mysqltest: %v", err)
	}
	return d
}

// Empty creates a fresh database without running migrations.
func Empty(t testing.TB) *DB {
	t.Helper()
	ctx := context.Background()
	rc, err := mysql.ParseDSN(ServerDSN())
	if err != nil {
		t.Fatalf("mysqltest: %s is not a DSN: %v", EnvServerDSN, err)
	}
	name := "bbt_" + randomSuffix()
	server, err := sql.Open("mysql", rc.FormatDSN())
	if err != nil {
		t.Fatalf("mysqltest: %v", err)
	}
	defer server.Close()
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := server.PingContext(pingCtx); err != nil {
		t.Fatalf("mysqltest: the MySQL/MariaDB server at %s is not reachable (start it: make db): %v", rc.Addr, err)
	}
	if _, err := server.ExecContext(ctx, "CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		t.Fatalf("mysqltest: create database: %v", err)
	}
	dc := rc.Clone()
	dc.DBName = name
	d := &DB{Name: name, DSN: dc.FormatDSN(), rootCfg: rc}
	d.Cfg = config.DB{DSN: d.DSN, MaxOpenConns: 32}
	db, closeFn, err := mysql.Open(ctx, d.Cfg)
	if err != nil {
		t.Fatalf("mysqltest: %v", err)
	}
	d.Root = db
	d.Store = mysql.New(db, closeFn)
	t.Cleanup(func() {
		_ = d.Store.Close()
		drop, err := sql.Open("mysql", rc.FormatDSN())
		if err == nil {
			_, _ = drop.Exec("DROP DATABASE IF EXISTS `" + name + "`")
			// The worker user `backbone dev` creates for a database
			// (devstack.WorkerName: {database}_worker).
			_, _ = drop.Exec("DROP USER IF EXISTS '" + name + "_worker'@'%'")
			_ = drop.Close()
		}
	})
	return d
}

// Worker creates a sync_worker-style user with exactly the `backbone grants`
// set on this database and returns a store connected as that user. The user
// is dropped when the test ends (users are server-wide, so each test gets its
// own name).
func (d *DB) Worker(t testing.TB) (*mysql.Store, config.DB) {
	t.Helper()
	ctx := context.Background()
	user := "sw_" + randomSuffix()
	pass := randomSuffix()
	if err := mysql.ApplyGrants(ctx, d.Root, d.Name, user, "%", pass); err != nil {
		t.Fatalf("mysqltest: grants: %v", err)
	}
	t.Cleanup(func() {
		drop, err := sql.Open("mysql", d.rootCfg.FormatDSN())
		if err == nil {
			_, _ = drop.Exec(fmt.Sprintf("DROP USER IF EXISTS '%s'@'%%'", user))
			_ = drop.Close()
		}
	})
	wc := d.rootCfg.Clone()
	wc.User, wc.Passwd, wc.DBName = user, pass, d.Name
	cfg := config.DB{DSN: wc.FormatDSN(), MaxOpenConns: 16}
	db, closeFn, err := mysql.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("mysqltest: %v", err)
	}
	s := mysql.New(db, closeFn)
	t.Cleanup(func() { _ = s.Close() })
	return s, cfg
}
