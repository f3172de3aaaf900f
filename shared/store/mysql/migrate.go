package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"strings"

	"github.com/pressly/goose/v3"

	"github.com/backbone-sync/backbone/migrations"
)

// Migrator runs the embedded migrations with goose. It needs a privileged
// connection (DDL and triggers), never the sync_worker one.
type Migrator struct {
	p  *goose.Provider
	db *sql.DB
}

// NewMigrator prepares the embedded migrations against db.
func NewMigrator(db *sql.DB) (*Migrator, error) {
	p, err := goose.NewProvider(goose.DialectMySQL, db, migrations.FS)
	if err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	return &Migrator{p: p, db: db}, nil
}

// Up applies every pending migration and returns how many ran.
func (m *Migrator) Up(ctx context.Context) (int, error) {
	res, err := m.p.Up(ctx)
	if err != nil {
		return len(res), fmt.Errorf("migrate up: %w", err)
	}
	return len(res), nil
}

// Down rolls back every migration. The first migration's down step does not
// recreate the legacy event_store table (a documented one-way step).
func (m *Migrator) Down(ctx context.Context) (int, error) {
	res, err := m.p.DownTo(ctx, 0)
	if err != nil {
		return len(res), fmt.Errorf("migrate down: %w", err)
	}
	return len(res), nil
}

// Status writes one line per migration: version, state, applied time, file.
func (m *Migrator) Status(ctx context.Context, w io.Writer) error {
	st, err := m.p.Status(ctx)
	if err != nil {
		return fmt.Errorf("migrate status: %w", err)
	}
	for _, s := range st {
		applied := "-"
		if !s.AppliedAt.IsZero() {
			applied = s.AppliedAt.UTC().Format("2006-01-02T15:04:05Z")
		}
		if _, err := fmt.Fprintf(w, "%05d  %-8s  %-20s  %s\n", s.Source.Version, s.State, applied, s.Source.Path); err != nil {
			return err
		}
	}
	return nil
}

// Version returns the current schema version (0 when nothing is applied).
func (m *Migrator) Version(ctx context.Context) (int64, error) {
	return m.p.GetDBVersion(ctx)
}

// TableRows is one table of the schema and how many rows it holds.
type TableRows struct {
	Table string
	Rows  int64
}

// Contents lists every table of the connected schema except goose's own
// bookkeeping, with an exact row count: what `migrate down` would drop.
func (m *Migrator) Contents(ctx context.Context) ([]TableRows, error) {
	rows, err := m.db.QueryContext(ctx,
		"SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' AND TABLE_NAME <> 'goose_db_version' ORDER BY TABLE_NAME")
	if err != nil {
		return nil, wrap(err, "list tables")
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, wrap(err, "list tables")
		}
		names = append(names, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, wrap(err, "list tables")
	}
	out := make([]TableRows, 0, len(names))
	for _, n := range names {
		t := TableRows{Table: n}
		// The name comes from information_schema; backquotes are doubled
		// all the same.
		q := "SELECT COUNT(*) FROM `" + strings.ReplaceAll(n, "`", "``") + "`"
		if err := m.db.QueryRowContext(ctx, q).Scan(&t.Rows); err != nil {
			return nil, wrap(err, "count rows of "+n)
		}
		out = append(out, t)
	}
	return out, nil
}
