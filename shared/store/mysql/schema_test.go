package mysql_test

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"testing"

	"github.com/backbone-sync/backbone/migrations"
	"github.com/backbone-sync/backbone/shared/store/mysql"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
	"github.com/backbone-sync/backbone/shared/store/storetest"
)

type column struct {
	name, typ, nullable, def, collation string
}

func columns(t *testing.T, db *sql.DB, schema, table string) []column {
	t.Helper()
	rows, err := db.Query(`SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COALESCE(COLUMN_DEFAULT, 'NULL'), COALESCE(COLLATION_NAME, '')
		FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`, schema, table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []column
	for rows.Next() {
		var c column
		if err := rows.Scan(&c.name, &c.typ, &c.nullable, &c.def, &c.collation); err != nil {
			t.Fatal(err)
		}
		c.typ = strings.ToLower(c.typ)
		c.def = strings.ToLower(c.def)
		out = append(out, c)
	}
	return out
}

// jsonType is how information_schema reports a JSON column: 'json' on
// MySQL 8, 'longtext' on MariaDB (where JSON is an alias with a json_valid
// CHECK constraint).
func isJSONType(typ string) bool { return typ == "json" || typ == "longtext" }

func TestSchemaMatchesSpec(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	type want struct{ name, typ, nullable, def string }
	specs := map[string][]want{
		// SPEC §4, events: exactly these columns.
		"events": {
			{"id", "char(36)", "NO", "null"},
			{"record_type", "varchar(64)", "NO", "null"},
			{"record_id", "varchar(191)", "NO", "null"},
			{"source", "varchar(64)", "NO", "null"},
			{"timestamp", "datetime(6)", "NO", "null"},
			{"base_version", "bigint(20) unsigned", "NO", "null"},
			{"changes", "json", "NO", "null"},
			{"full_snapshot_ref", "varchar(1024)", "YES", "null"},
			{"processed", "tinyint(4)", "NO", "0"},
			{"created_at", "datetime(6)", "NO", "current_timestamp(6)"},
		},
		// V10 columns first, then the documented additions.
		"event_audit_log": {
			{"id", "char(36)", "NO", "null"},
			{"event_id", "char(36)", "YES", "null"},
			{"fingerprint", "char(64)", "NO", "null"},
			{"record_type", "varchar(64)", "NO", "null"},
			{"record_id", "varchar(191)", "NO", "null"},
			{"processing_outcome", "varchar(32)", "YES", "null"},
			{"created_at", "datetime(6)", "NO", "current_timestamp(6)"},
			{"stage", "varchar(32)", "YES", "null"},
			{"message_id", "varchar(255)", "YES", "null"},
			{"version", "bigint(20) unsigned", "YES", "null"},
			{"detail", "text", "YES", "null"},
			{"state", "mediumblob", "YES", "null"},
			{"source", "varchar(64)", "YES", "null"},
			{"fields", "mediumblob", "YES", "null"},
		},
	}
	for table, wantCols := range specs {
		got := columns(t, d.Root, d.Name, table)
		if len(got) != len(wantCols) {
			t.Errorf("%s has %d columns, want %d: %+v", table, len(got), len(wantCols), got)
			continue
		}
		for i, w := range wantCols {
			g := got[i]
			typ := g.typ
			// MySQL 8 drops integer display widths.
			typ = strings.Replace(typ, "bigint unsigned", "bigint(20) unsigned", 1)
			if typ == "tinyint" {
				typ = "tinyint(4)"
			}
			if w.typ == "json" && isJSONType(typ) {
				typ = "json"
			}
			def := strings.Trim(g.def, "'")
			if g.name != w.name || typ != w.typ || g.nullable != w.nullable || def != w.def {
				t.Errorf("%s column %d = %+v, want %+v", table, i, g, w)
			}
			if strings.HasPrefix(typ, "char") || strings.HasPrefix(typ, "varchar") {
				if !noPad(g.collation) {
					t.Errorf("%s.%s collation %q, want a NO PAD binary collation (exact identity)", table, g.name, g.collation)
				}
			}
		}
	}
	// Engine and charset of the three tables.
	for _, table := range mysql.Tables {
		var engine, collation string
		if err := d.Root.QueryRow(`SELECT ENGINE, TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?`, d.Name, table).Scan(&engine, &collation); err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		if engine != "InnoDB" || !noPad(collation) {
			t.Errorf("%s: engine %s collation %s", table, engine, collation)
		}
	}
	// Primary key is id alone, no auto-increment.
	var extra string
	if err := d.Root.QueryRow(`SELECT EXTRA FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'events' AND COLUMN_NAME = 'id'`, d.Name).Scan(&extra); err != nil || strings.Contains(extra, "auto_increment") {
		t.Errorf("events.id extra %q, %v", extra, err)
	}
}

type index struct {
	unique bool
	cols   string
}

func indexes(t *testing.T, db *sql.DB, schema, table string) map[string]index {
	t.Helper()
	rows, err := db.Query(`SELECT INDEX_NAME, NON_UNIQUE, GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX)
		FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? GROUP BY INDEX_NAME, NON_UNIQUE`, schema, table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]index{}
	for rows.Next() {
		var name, cols string
		var nonUnique int
		if err := rows.Scan(&name, &nonUnique, &cols); err != nil {
			t.Fatal(err)
		}
		out[name] = index{unique: nonUnique == 0, cols: cols}
	}
	return out
}

func TestIndexesMatchSpec(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	want := map[string]map[string]index{
		"events": {
			"PRIMARY":                {true, "id"},
			"idx_events_aggregate":   {true, "record_type,record_id,base_version"},
			"idx_events_unprocessed": {false, "processed,created_at"},
			"idx_events_source_time": {false, "source,timestamp"},
		},
		"event_audit_log": {
			"PRIMARY":               {true, "id"},
			"idx_audit_fingerprint": {false, "fingerprint"},
			"idx_audit_record":      {false, "record_type,record_id,version"},
			"idx_audit_event":       {false, "event_id"},
		},
	}
	for table, w := range want {
		got := indexes(t, d.Root, d.Name, table)
		if fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("%s indexes = %v, want exactly %v (three named indexes plus the primary key)", table, got, w)
		}
	}
	dl := indexes(t, d.Root, d.Name, "dead_letters")
	if p := dl["PRIMARY"]; !p.unique || p.cols != "message_id,content_digest" {
		t.Errorf("dead_letters primary key %+v, want message_id,content_digest (one row per Pub/Sub message and content)", p)
	}
}

// exec runs a statement and reports whether the server refused it.
func refused(db *sql.DB, q string, args ...any) bool {
	_, err := db.Exec(q, args...)
	return err != nil
}

func TestAppendOnlyEnforcedByTheDatabase(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	worker, _ := d.Worker(t)
	for name, db := range map[string]*sql.DB{"root": d.Root, "sync_worker": worker.DB()} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			e := storetest.NewEvent("customer", "AO-"+name, 0, `{"a":1}`)
			if err := d.Store.AppendEvent(ctx, e, auditFor(e)); err != nil {
				t.Fatal(err)
			}
			if _, err := d.Store.AppendDeadLetter(ctx, deadLetterFor(e)); err != nil {
				t.Fatal(err)
			}
			for col, val := range map[string]any{
				"id": "x", "record_type": "other", "record_id": "other", "source": "suitex",
				"`timestamp`": "2020-01-01 00:00:00", "base_version": 9, "changes": `{"b":2}`,
				"full_snapshot_ref": "gs://x", "created_at": "2020-01-01 00:00:00",
			} {
				if !refused(db, "UPDATE events SET "+col+" = ? WHERE id = ?", val, e.ID) {
					t.Errorf("UPDATE events.%s succeeded", col)
				}
				// Even together with the allowed flag change.
				if !refused(db, "UPDATE events SET processed = 1, "+col+" = ? WHERE id = ?", val, e.ID) {
					t.Errorf("UPDATE events.%s with processed succeeded", col)
				}
			}
			for _, table := range mysql.Tables {
				if !refused(db, "DELETE FROM "+table) {
					t.Errorf("DELETE FROM %s succeeded", table)
				}
			}
			if !refused(db, "UPDATE event_audit_log SET processing_outcome = 'x' WHERE event_id = ?", e.ID) {
				t.Error("UPDATE of an audit row succeeded")
			}
			if !refused(db, "UPDATE dead_letters SET reason = 'x' WHERE message_id = ?", "dl-"+e.ID) {
				t.Error("UPDATE of a dead-letter row succeeded")
			}
			res, err := db.Exec("UPDATE events SET processed = 1 WHERE id = ?", e.ID)
			if err != nil {
				t.Fatalf("processed 0 -> 1 refused: %v", err)
			}
			if n, _ := res.RowsAffected(); n != 1 {
				t.Errorf("processed 0 -> 1 changed %d rows", n)
			}
			if !refused(db, "UPDATE events SET processed = 0 WHERE id = ?", e.ID) {
				t.Error("processed 1 -> 0 succeeded")
			}
			got, err := d.Store.EventByID(ctx, e.ID)
			if err != nil || !got.Processed || string(got.Changes) != `{"a":1}` || got.RecordID != e.RecordID {
				t.Errorf("event after the attempts: %+v, %v", got, err)
			}
			var n int
			for _, table := range mysql.Tables {
				if err := d.Root.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil || n == 0 {
					t.Errorf("%s lost rows: %d, %v", table, n, err)
				}
			}
		})
	}
}

func TestSyncWorkerHasNoOtherAccess(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	other := mysqltest.New(t) // another schema on the same server
	worker, _ := d.Worker(t)
	db := worker.DB()
	for _, q := range []string{
		"SELECT COUNT(*) FROM `" + other.Name + "`.events",
		"INSERT INTO `" + other.Name + "`.event_audit_log (id, fingerprint, record_type, record_id) VALUES ('x', 'f', 't', 'r')",
		"SELECT COUNT(*) FROM mysql.user",
		"SELECT COUNT(*) FROM goose_db_version",
		"CREATE TABLE scratch (a INT)",
		"DROP TABLE events",
		"ALTER TABLE events ADD COLUMN x INT",
		"DROP TRIGGER events_append_only_delete",
		"TRUNCATE TABLE events",
		"UPDATE events SET source = 'x'",
		"CREATE DATABASE `" + d.Name + "_x`",
		// The projection may be updated, never emptied.
		"DELETE FROM record_heads",
		"TRUNCATE TABLE record_heads",
		"DROP TABLE record_heads",
	} {
		if !refused(db, q) {
			t.Errorf("sync_worker could run %q", q)
		}
	}
	rows, err := db.Query("SHOW GRANTS")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var grants []string
	for rows.Next() {
		var g string
		_ = rows.Scan(&g)
		grants = append(grants, g)
	}
	joined := strings.Join(grants, "\n")
	for _, bad := range []string{"DELETE", "ALL PRIVILEGES", "DROP", "ALTER", "CREATE"} {
		if strings.Contains(joined, bad) {
			t.Errorf("sync_worker grants contain %s:\n%s", bad, joined)
		}
	}
}

func TestMigrateUpDownUp(t *testing.T) {
	t.Parallel()
	d := mysqltest.Empty(t)
	ctx := context.Background()
	if _, err := d.Root.Exec("CREATE TABLE event_store (id BIGINT AUTO_INCREMENT PRIMARY KEY, event_id CHAR(36), payload JSON)"); err != nil {
		t.Fatal(err)
	}
	m, err := mysql.NewMigrator(d.Root)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := m.Up(ctx); err != nil || n != migrationCount(t) {
		t.Fatalf("up: %d, %v", n, err)
	}
	if tables(t, d) != "dead_letters,event_audit_log,events,goose_db_version,record_heads" {
		t.Errorf("after up: %s (legacy event_store must be gone)", tables(t, d))
	}
	schemaAfterFirstUp := schemaDump(t, d)
	if n, err := m.Up(ctx); err != nil || n != 0 {
		t.Errorf("second up: %d, %v; want nothing to do", n, err)
	}
	if schemaDump(t, d) != schemaAfterFirstUp {
		t.Error("second up changed the schema")
	}
	if n, err := m.Down(ctx); err != nil || n != migrationCount(t) {
		t.Fatalf("down: %d, %v", n, err)
	}
	// The documented one-way step: event_store is not recreated.
	if got := tables(t, d); got != "goose_db_version" {
		t.Errorf("after down: %s", got)
	}
	if n, err := m.Up(ctx); err != nil || n != migrationCount(t) {
		t.Fatalf("up again: %d, %v", n, err)
	}
	if schemaDump(t, d) != schemaAfterFirstUp {
		t.Error("up, down, up does not give the same schema")
	}
}

// migrationCount is the number of embedded migration files, so adding one
// does not break the up/down round trip.
func migrationCount(t *testing.T) int {
	t.Helper()
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("embedded migrations: %v, %d files", err, len(files))
	}
	return len(files)
}

func tables(t *testing.T, d *mysqltest.DB) string {
	t.Helper()
	var s sql.NullString
	if err := d.Root.QueryRow("SELECT GROUP_CONCAT(TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?", d.Name).Scan(&s); err != nil {
		t.Fatal(err)
	}
	names := strings.Split(s.String, ",")
	sort.Strings(names)
	return strings.Join(names, ",")
}

// schemaDump is every column, index and trigger of the backbone tables.
func schemaDump(t *testing.T, d *mysqltest.DB) string {
	t.Helper()
	var b strings.Builder
	for _, table := range mysql.Tables {
		fmt.Fprintln(&b, table, columns(t, d.Root, d.Name, table), indexes(t, d.Root, d.Name, table))
	}
	rows, err := d.Root.Query("SELECT TRIGGER_NAME, EVENT_MANIPULATION, EVENT_OBJECT_TABLE, ACTION_TIMING FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY TRIGGER_NAME", d.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var a, b2, c, e string
		_ = rows.Scan(&a, &b2, &c, &e)
		fmt.Fprintln(&b, a, b2, c, e)
		n++
	}
	if n != 6 {
		t.Errorf("%d triggers, want 6", n)
	}
	return b.String()
}

func TestGrantStatementsAreExactlyTheSpecSet(t *testing.T) {
	t.Parallel()
	got := strings.Join(mysql.GrantStatements("bb", "sync_worker", "%"), "\n")
	want := strings.Join([]string{
		"GRANT SELECT, INSERT ON `bb`.`events` TO 'sync_worker'@'%'",
		"GRANT SELECT, INSERT ON `bb`.`event_audit_log` TO 'sync_worker'@'%'",
		"GRANT SELECT, INSERT ON `bb`.`dead_letters` TO 'sync_worker'@'%'",
		"GRANT UPDATE (processed) ON `bb`.`events` TO 'sync_worker'@'%'",
		// The projection (SPEC §4): updated, never deleted from.
		"GRANT SELECT, INSERT, UPDATE ON `bb`.`record_heads` TO 'sync_worker'@'%'",
	}, "\n")
	if got != want {
		t.Errorf("grants:\n%s\nwant:\n%s", got, want)
	}
	// Quoting: a hostile name cannot break out.
	if s := mysql.GrantStatements("b`b", "u'x", "%")[0]; !strings.Contains(s, "`b``b`") || !strings.Contains(s, `'u\'x'`) {
		t.Errorf("quoting: %s", s)
	}
}

// sync_worker keeps the projection up to date: it may insert and update a
// record's head (and DELETE is refused above).
func TestSyncWorkerUpdatesTheProjection(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	worker, _ := d.Worker(t)
	ctx := context.Background()
	if err := worker.PutHead(ctx, "customer", "H-1", 1, "e1", []byte(`{"v":1}`)); err != nil {
		t.Fatalf("insert head: %v", err)
	}
	if err := worker.PutHead(ctx, "customer", "H-1", 2, "e2", []byte(`{"v":2}`)); err != nil {
		t.Fatalf("update head: %v", err)
	}
	var v int
	var state string
	if err := d.Root.QueryRow("SELECT version, state FROM record_heads WHERE record_type = 'customer' AND record_id = 'H-1'").Scan(&v, &state); err != nil || v != 2 || state != `{"v":2}` {
		t.Fatalf("head = %d %s, %v", v, state, err)
	}
}
