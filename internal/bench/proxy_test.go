package bench

import (
	"context"
	"database/sql"
	"testing"
)

// TestProxyCountsWhatTheDriverSends checks the instrument against the real
// server: a READ COMMITTED transaction as the store runs it, a read-only
// transaction and an autocommit write, counted statement by statement.
func TestProxyCountsWhatTheDriverSends(t *testing.T) {
	t.Parallel()
	_, n, p := proxied(t)
	db, err := sql.Open("mysql", n)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	if err := db.PingContext(ctx); err != nil { // opens the connection (its SET time_zone is not counted below)
		t.Fatal(err)
	}
	before := p.Counts()

	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		t.Fatal(err)
	}
	var v sql.NullInt64
	if err := tx.QueryRowContext(ctx, "SELECT base_version FROM events WHERE record_type = ? AND record_id = ? ORDER BY base_version DESC LIMIT 1 FOR UPDATE", "t", "r").Scan(&v); err != sql.ErrNoRows {
		t.Fatalf("lock: %v", err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO events (id, record_type, record_id, source, `timestamp`, base_version, changes) VALUES ('00000000-0000-0000-0000-000000000001', 't', 'r', 's', NOW(6), 0, '{}')"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	// A read-only transaction commits nothing durable.
	ro, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var count int
	if err := ro.QueryRowContext(ctx, "SELECT COUNT(*) FROM events").Scan(&count); err != nil || count != 1 {
		t.Fatalf("count %d, %v", count, err)
	}
	if err := ro.Commit(); err != nil {
		t.Fatal(err)
	}
	// An autocommit write is a durable commit of its own.
	if _, err := db.ExecContext(ctx, "UPDATE events SET processed = 1 WHERE id = '00000000-0000-0000-0000-000000000001' AND processed = 0"); err != nil {
		t.Fatal(err)
	}

	got := p.Counts().Sub(before)
	want := map[string]int64{
		"SET TRANSACTION":     1,
		"START TRANSACTION":   2,
		"SELECT … FOR UPDATE": 1,
		"INSERT":              1,
		"COMMIT":              2,
		"SELECT":              1,
		"UPDATE":              1,
	}
	if got.Statements != 9 || got.Commits != 2 || got.Opaque != 0 {
		t.Errorf("statements %d (want 9), durable commits %d (want 2), opaque %d", got.Statements, got.Commits, got.Opaque)
	}
	for k, w := range want {
		if got.ByKind[k] != w {
			t.Errorf("%s: %d, want %d (all: %v)", k, got.ByKind[k], w, got.ByKind)
		}
	}
	for k := range got.ByKind {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %s: %d", k, got.ByKind[k])
		}
	}
}
