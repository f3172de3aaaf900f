package bench

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/record"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql"
)

// TestRawLimitVariants runs every variant of the raw limit on the real
// server and pins what each sends: one worker, 16 events over its 4
// records, so 4 events start a record and 12 extend one.
func TestRawLimitVariants(t *testing.T) {
	t.Parallel()
	d, n, p := proxied(t)
	ctx := context.Background()
	// The store's own pool settings: READ COMMITTED set once per session.
	db, closeDB, err := mysql.Open(ctx, config.DB{DSN: n, MaxOpenConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer closeDB()
	if err := db.PingContext(ctx); err != nil {
		t.Fatal(err)
	}
	const events = 16
	cases := []struct {
		name       string
		variant    Variant
		statements int64 // for the 16 events
		commits    int64
		processed  int  // events left processed = 1
		heads      bool // writes the projection rows
	}{
		// SET TRANSACTION, START, lock, probe, 2 inserts, COMMIT.
		{"raw", VariantRaw, 7 * events, events, 0, false},
		// START, the lock (a new record: + the events head and the
		// probes), 2 inserts, the projection row, COMMIT; the flag through
		// the store: alone (one worker, no transaction to ride on) each is
		// one autocommit UPDATE at the session's READ COMMITTED.
		{"merge sql", VariantMergeSQL, 6*events + 2*4 + events, 2 * events, events, true},
		{"merge sql without flag", VariantMergeSQLNoFlag, 6*events + 2*4, events, 0, true},
		// raw's 7 and the projection row before COMMIT; then the flag as
		// merge sql sets it.
		{"raw + projection row", VariantRawHead, 8 * events, events, 0, true},
		{"raw + projection row + flag", VariantRawHeadFlag, 9 * events, 2 * events, events, true},
	}
	raw := NewRawLimit(db).WithFlag(mysql.New(db, func() error { return nil }).MarkProcessed)
	for i, c := range cases {
		r := raw
		if c.variant != VariantRaw {
			r = raw.WithVariant(c.variant)
		}
		prefix := fmt.Sprintf("v%d", i)
		before := p.Counts()
		got, err := RunN(ctx, 1, events, func(w int) Op { return r.Op(fmt.Sprintf("%s-w%d", prefix, w), w) })
		if err != nil || got != events {
			t.Fatalf("%s: %d events, %v", c.name, got, err)
		}
		delta := p.Counts().Sub(before)
		if delta.Statements != c.statements || delta.Commits != c.commits {
			t.Errorf("%s: %d statements, %d durable commits; want %d, %d (%v)", c.name, delta.Statements, delta.Commits, c.statements, c.commits, delta.ByKind)
		}
		var stored, processed int
		if err := d.Root.QueryRowContext(ctx, "SELECT COUNT(*), COALESCE(SUM(processed), 0) FROM events WHERE record_id LIKE ?", prefix+"-%").Scan(&stored, &processed); err != nil {
			t.Fatal(err)
		}
		var chains int
		if err := d.Root.QueryRowContext(ctx, "SELECT COUNT(*) FROM events WHERE record_id LIKE ? AND base_version = 1", prefix+"-%").Scan(&chains); err != nil {
			t.Fatal(err)
		}
		if stored != events || processed != c.processed || chains != RecordsPerWorker {
			t.Errorf("%s: %d events stored (%d processed, %d at version 2); want %d (%d, %d)", c.name, stored, processed, chains, events, c.processed, RecordsPerWorker)
		}
		checkHeads(t, d.Root, prefix, c.name, c.heads, events/RecordsPerWorker)
	}
}

// checkHeads pins the projection rows of prefix's records: with heads, one
// per record at version, pointing at the record's newest event, whose
// state is the folded state of that event's two fields (the same document
// for every variant that writes it); without, none.
func checkHeads(t *testing.T, db *sql.DB, prefix, name string, heads bool, version uint64) {
	t.Helper()
	ctx := context.Background()
	rows, err := db.QueryContext(ctx, "SELECT h.record_id, h.version, h.event_id, h.state, e.base_version, e.source, e.`timestamp`, e.changes FROM record_heads h"+
		" LEFT JOIN events e ON e.id = h.event_id WHERE h.record_type = ? AND h.record_id LIKE ? ORDER BY h.record_id", RecordType, prefix+"-%")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var (
			rid, id, source string
			v               uint64
			base            sql.NullInt64
			state           []byte
			ts              time.Time
			changes         string
		)
		if err := rows.Scan(&rid, &v, &id, &state, &base, &source, &ts, &changes); err != nil {
			t.Fatal(err)
		}
		n++
		if v != version || !base.Valid || uint64(base.Int64)+1 != v {
			t.Errorf("%s: head of %s at version %d on an event at base %v; want version %d on the newest event", name, rid, v, base, version)
			continue
		}
		var ch struct{ Email, Phone string }
		if err := json.Unmarshal([]byte(changes), &ch); err != nil {
			t.Fatalf("%s: changes %q: %v", name, changes, err)
		}
		want := foldedState(Event{RecordID: rid, Source: source, Base: v - 1}, id, ts.UTC(), ch.Email, ch.Phone)
		if string(state) != want {
			t.Errorf("%s: state of %s:\n%s\nwant\n%s", name, rid, state, want)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if want := map[bool]int{true: RecordsPerWorker}[heads]; n != want {
		t.Errorf("%s: %d projection rows; want %d", name, n, want)
	}
}

// TestFoldedStateIsTheEngines: the state document the diagnoses write is
// byte for byte the one the merge engine stores for the same event, so m, p
// and q cost what the store's projection row costs.
func TestFoldedStateIsTheEngines(t *testing.T) {
	e := Event{RecordID: "w0-r1", Source: "suitex", Base: 6, Seq: 42}
	ts := time.Date(2026, 12, 2, 3, 4, 5, 678901000, time.UTC)
	email, phone := values(e)
	changes := map[string]json.RawMessage{"email": json.RawMessage(strconv.Quote(email)), "phone": json.RawMessage(strconv.Quote(phone))}
	st := record.Empty().Apply(store.Event{ID: "id-7", RecordType: RecordType, RecordID: e.RecordID, Source: e.Source, Timestamp: ts, BaseVersion: e.Base}, changes)
	want, err := event.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if got := foldedState(e, "id-7", ts, email, phone); got != string(want) {
		t.Errorf("diagnosis state\n%s\nengine's\n%s", got, want)
	}
}
