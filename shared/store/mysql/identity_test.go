package mysql_test

import (
	"context"
	"strings"
	"testing"

	"github.com/pressly/goose/v3"

	"github.com/backbone-sync/backbone/migrations"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
	"github.com/backbone-sync/backbone/shared/store/storetest"
)

// noPad is the NO PAD binary collation of each server (SPEC §4).
func noPad(c string) bool { return c == "utf8mb4_0900_bin" || c == "utf8mb4_nopad_bin" }

// TestIdentityIsExact: every CHAR/VARCHAR column of the backbone tables, and
// each table's default, compares byte for byte, so 'C-1', 'c-1', 'C-1 ' and
// 'C-😀' are four records in the store. On a PAD SPACE collation
// (utf8mb4_bin) the third append lands on 'C-1”s version 1 and fails with
// ErrVersionTaken, and the server says 'C-1' = 'C-1 '.
func TestIdentityIsExact(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	ctx := context.Background()
	for _, table := range mysql.Tables {
		var tc string
		if err := d.Root.QueryRow(`SELECT TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?`, d.Name, table).Scan(&tc); err != nil {
			t.Fatal(err)
		}
		if !noPad(tc) {
			t.Errorf("%s: default collation %s, want a NO PAD binary one", table, tc)
		}
		for _, c := range columns(t, d.Root, d.Name, table) {
			if (strings.HasPrefix(c.typ, "char") || strings.HasPrefix(c.typ, "varchar")) && !noPad(c.collation) {
				t.Errorf("%s.%s: collation %s, want a NO PAD binary one", table, c.name, c.collation)
			}
		}
	}
	ids := []string{"C-1", "c-1", "C-1 ", "C-😀", "C-1  ", " C-1"}
	for _, id := range ids {
		e := storetest.NewEvent("customer", id, 0, `{"a":1}`)
		if err := d.Store.AppendEvent(ctx, e, auditFor(e)); err != nil {
			t.Fatalf("append %q: %v (a PAD SPACE collation makes 'C-1 ' the same record as 'C-1')", id, err)
		}
		if _, err := d.Store.AppendDeadLetter(ctx, store.DeadLetter{MessageID: "m" + id, Subscription: "s", Stage: "merge", Reason: "r",
			RecordType: "customer", RecordID: id, Data: []byte("{}")}); err != nil {
			t.Fatalf("dead letter %q: %v", id, err)
		}
	}
	for _, id := range ids {
		evs, err := d.Store.History(ctx, "customer", id)
		if err != nil || len(evs) != 1 || evs[0].RecordID != id {
			t.Errorf("history of %q: %d events %v, want exactly its own", id, len(evs), err)
		}
		as, err := d.Store.AuditTrail(ctx, "customer", id)
		if err != nil || len(as) != 1 || as[0].RecordID != id {
			t.Errorf("audit trail of %q: %d rows %v, want exactly its own", id, len(as), err)
		}
		h, err := d.Store.Head(ctx, "customer", id)
		if err != nil || h.Version != 1 {
			t.Errorf("head of %q: %+v %v", id, h, err)
		}
		dls, err := d.Store.DeadLetters(ctx, store.DeadLetterFilter{RecordType: "customer", RecordID: id})
		if err != nil || len(dls) != 1 {
			t.Errorf("dead letters of %q: %d %v", id, len(dls), err)
		}
		// The server itself, through the column's collation.
		var n int
		if err := d.Root.QueryRow("SELECT COUNT(*) FROM events WHERE record_id = ?", id).Scan(&n); err != nil || n != 1 {
			t.Errorf("events WHERE record_id = %q: %d rows %v, want 1", id, n, err)
		}
	}
	// Message ids are identity too: 'm-1' and 'm-1 ' are two dead letters.
	for _, id := range []string{"m-1", "m-1 "} {
		if ok, err := d.Store.AppendDeadLetter(ctx, store.DeadLetter{MessageID: id, Subscription: "s", Stage: "merge", Reason: "r", Data: []byte("{}")}); err != nil || !ok {
			t.Errorf("dead letter %q: inserted %v, %v", id, ok, err)
		}
	}
}

// TestRecollateKeepsDefaults: the exact-identity step restates each column
// from information_schema; a column with a default keeps it, and a nullable
// one stays nullable.
func TestRecollateKeepsDefaults(t *testing.T) {
	t.Parallel()
	d := mysqltest.Empty(t)
	ctx := context.Background()
	p, err := goose.NewProvider(goose.DialectMySQL, d.Root, migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Root.Exec("ALTER TABLE dead_letters ADD COLUMN note VARCHAR(16) NOT NULL DEFAULT 'it''s' COLLATE utf8mb4_bin, ADD COLUMN maybe VARCHAR(8) NULL COLLATE utf8mb4_bin"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 4); err != nil {
		t.Fatalf("exact identity step: %v", err)
	}
	cols := map[string]column{}
	for _, c := range columns(t, d.Root, d.Name, "dead_letters") {
		cols[c.name] = c
	}
	note, maybe := cols["note"], cols["maybe"]
	if def := strings.Trim(note.def, "'"); (def != "it''s" && def != "it's") || !noPad(note.collation) || note.nullable != "NO" {
		t.Errorf("note after the step: %+v", note)
	}
	if maybe.def != "null" || !noPad(maybe.collation) || maybe.nullable != "YES" {
		t.Errorf("maybe after the step: %+v", maybe)
	}
	// And back: the down step restores utf8mb4_bin.
	if _, err := p.DownTo(ctx, 3); err != nil {
		t.Fatalf("down: %v", err)
	}
	for _, c := range columns(t, d.Root, d.Name, "events") {
		if c.collation != "" && c.collation != "utf8mb4_bin" {
			t.Errorf("events.%s after down: %s", c.name, c.collation)
		}
	}
}
