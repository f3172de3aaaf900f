package bench

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/merge"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/store"
)

// StorageEvents is how many events the storage figure merges: its target is
// stated for 10,000 events of one record.
const StorageEvents = 10000

// The storage target (issue "performance"): bytes stored per event at most
// TargetStorageFactor × the size of its changes + TargetStorageBytes.
const (
	TargetStorageFactor = 2
	TargetStorageBytes  = 600
)

// storageFields are the fields of the storage record: a customer as the
// source systems hold one, 20 fields of the usual kinds and sizes.
var storageFields = []string{
	"email", "phone", "first_name", "last_name", "company", "job_title", "street", "city", "region", "postal_code",
	"country", "currency", "payment_terms", "credit_limit", "balance", "status", "sales_rep", "tax_id", "website", "notes",
}

// Storage is what the backbone stores per event.
type Storage struct {
	// Events is how many events were merged after the record's creation and
	// stored (all must be: each is at the record's current version).
	Events  int    `json:"events"`
	Fields  int    `json:"fields"`
	Sources string `json:"sources"`
	// MeanChangesBytes is the mean LENGTH(changes) of those events.
	MeanChangesBytes float64 `json:"mean_changes_bytes"`
	// BytesPerEvent is the growth of DATA_LENGTH + INDEX_LENGTH of every
	// table of the database (after ANALYZE TABLE) over Events: what the
	// server allocated, pages and their free space included.
	BytesPerEvent float64 `json:"bytes_per_event"`
	// LogicalBytesPerEvent is the growth of the sum of LENGTH() of every
	// column of every row over Events: the values alone, without page,
	// row or index overhead.
	LogicalBytesPerEvent float64 `json:"logical_bytes_per_event"`
	// PageBytesPerEvent is the growth of the tables' B-tree pages in use
	// (16 KiB each, fill factor included) over Events; RecordBytesPerEvent
	// the growth of the records in them (rows with their headers, every
	// index entry), the part no page layout can save.
	PageBytesPerEvent   float64 `json:"page_bytes_per_event"`
	RecordBytesPerEvent float64 `json:"record_bytes_per_event"`
	// RedoBytesPerEvent is the growth of the server's Innodb_os_log_written
	// (SHOW GLOBAL STATUS) over the merges, divided by Events: the InnoDB
	// redo log the merges wrote. The counter is server-wide, so the figure
	// includes whatever else ran on the server meanwhile (the bench runs this
	// phase alone).
	RedoBytesPerEvent float64 `json:"redo_bytes_per_event"`
	// ProjectionStateBytes is LENGTH(state) of the record's row in
	// record_heads after the merges: the record's folded state, which every
	// merge rewrites.
	ProjectionStateBytes int64         `json:"projection_state_bytes"`
	Tables               []TableGrowth `json:"tables"`
	Seconds              float64       `json:"seconds"`
	// Warnings counts the engine's warnings during the merges: the normal
	// path logs none.
	Warnings     int    `json:"engine_warnings"`
	FirstWarning string `json:"first_warning,omitempty"`
}

// TableGrowth is one table's growth over the measured events.
type TableGrowth struct {
	Table        string `json:"table"`
	Rows         int64  `json:"rows"`
	DataBytes    int64  `json:"data_bytes"`
	IndexBytes   int64  `json:"index_bytes"`
	LogicalBytes int64  `json:"logical_bytes"`
	PageBytes    int64  `json:"page_bytes"`
	RecordBytes  int64  `json:"record_bytes"`
}

// StorageTarget is the target's bound for a mean changes size.
func StorageTarget(meanChanges float64) float64 {
	return TargetStorageFactor*meanChanges + TargetStorageBytes
}

// StorageOptions configure MeasureStorage.
type StorageOptions struct {
	Events  int // events merged after the create
	Env     config.Env
	Sources []string // the engine's sources; the events alternate the first two
}

// MeasureStorage creates one record of 20 fields through the engine over st,
// then merges o.Events events on it, each changing one to three fields to
// new values, sources alternating (a record edited on both sides), each at
// the record's current version: every one is accepted and stored, as on the
// production path. Publishing is a no-op that succeeds, so each event is
// flagged processed = 1 as after a real publish. root is a privileged
// connection to the same database: it reads the table sizes (after ANALYZE
// TABLE), the column lengths and the server's redo log written before and
// after the merges, and the record's projection state after them.
func MeasureStorage(ctx context.Context, root *sql.DB, st store.Store, o StorageOptions) (Storage, error) {
	res := Storage{Fields: len(storageFields)}
	if len(o.Sources) < 2 {
		return res, fmt.Errorf("storage: two sources needed, have %v", o.Sources)
	}
	res.Sources = fmt.Sprintf("alternating %s and %s", o.Sources[0], o.Sources[1])
	warn := &warnCounter{}
	nop := publish.Guard(o.Env, publish.Func(func(context.Context, string, publish.Message) (string, error) { return "nop", nil }))
	eng := merge.New(st, nop, o.Env, o.Sources, slog.New(warn))
	w := newStorageWorkload("storage-r1", o.Sources[:2])
	one := func(raw event.Raw) error {
		data, err := json.Marshal(raw)
		if err != nil {
			return err
		}
		m := message.Message{Data: data, ID: "storage-" + strconv.FormatUint(raw.BaseVersion, 10),
			Attributes: map[string]string{publish.AttrEnv: string(o.Env)}, PublishTime: time.Now(),
			OrderingKey: publish.OrderingKey(raw.RecordType, raw.RecordID)}
		r, err := eng.Process(ctx, m)
		if err != nil {
			return fmt.Errorf("merge of version %d: %w", raw.BaseVersion+1, err)
		}
		if r.Outcome != store.OutcomeAccepted {
			return fmt.Errorf("merge of version %d: outcome %s, want accepted", raw.BaseVersion+1, r.Outcome)
		}
		return nil
	}
	if err := one(w.next()); err != nil {
		return res, err
	}
	warn.reset()
	before, err := tableSizes(ctx, root)
	if err != nil {
		return res, err
	}
	redoBefore, err := redoWritten(ctx, root)
	if err != nil {
		return res, err
	}
	start := time.Now()
	for range o.Events {
		if err := one(w.next()); err != nil {
			return res, err
		}
	}
	res.Seconds = round3(time.Since(start).Seconds())
	redoAfter, err := redoWritten(ctx, root)
	if err != nil {
		return res, err
	}
	res.Warnings, res.FirstWarning = warn.get()
	if err := root.QueryRowContext(ctx, "SELECT LENGTH(state) FROM record_heads WHERE record_type = ? AND record_id = ?", RecordType, w.recordID).
		Scan(&res.ProjectionStateBytes); err != nil {
		return res, fmt.Errorf("storage: read the record's projection state: %w", err)
	}
	after, err := tableSizes(ctx, root)
	if err != nil {
		return res, err
	}
	var stored int
	var meanChanges sql.NullFloat64
	if err := root.QueryRowContext(ctx, "SELECT COUNT(*), AVG(LENGTH(changes)) FROM events WHERE base_version >= 1").Scan(&stored, &meanChanges); err != nil {
		return res, fmt.Errorf("storage: read the stored events: %w", err)
	}
	res.Events, res.MeanChangesBytes = stored, round3(meanChanges.Float64)
	if stored != o.Events {
		return res, fmt.Errorf("storage: %d events stored, %d merged", stored, o.Events)
	}
	var total, logical, pages, records int64
	for _, t := range slices.Sorted(maps.Keys(after)) {
		a, b := after[t], before[t]
		g := TableGrowth{Table: a.Table, Rows: a.Rows - b.Rows, DataBytes: a.DataBytes - b.DataBytes,
			IndexBytes: a.IndexBytes - b.IndexBytes, LogicalBytes: a.LogicalBytes - b.LogicalBytes,
			PageBytes: a.PageBytes - b.PageBytes, RecordBytes: a.RecordBytes - b.RecordBytes}
		res.Tables = append(res.Tables, g)
		total += g.DataBytes + g.IndexBytes
		logical += g.LogicalBytes
		pages += g.PageBytes
		records += g.RecordBytes
	}
	res.PageBytesPerEvent = round3(float64(pages) / float64(stored))
	res.RecordBytesPerEvent = round3(float64(records) / float64(stored))
	res.BytesPerEvent = round3(float64(total) / float64(stored))
	res.LogicalBytesPerEvent = round3(float64(logical) / float64(stored))
	res.RedoBytesPerEvent = round3(float64(redoAfter-redoBefore) / float64(stored))
	return res, nil
}

// redoWritten is the server's Innodb_os_log_written: the bytes of InnoDB
// redo log written since it started, by every connection.
func redoWritten(ctx context.Context, root *sql.DB) (int64, error) {
	var name, value string
	if err := root.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Innodb_os_log_written'").Scan(&name, &value); err != nil {
		return 0, fmt.Errorf("storage: read Innodb_os_log_written: %w", err)
	}
	n, err := strconv.ParseInt(value, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("storage: Innodb_os_log_written %q: %w", value, err)
	}
	return n, nil
}

// storageWorkload is the storage record's history: a create with every
// field, then edits of one to three fields each, sources alternating.
type storageWorkload struct {
	recordID string
	sources  []string
	version  uint64
	at       time.Time
	// rng is a fixed xorshift sequence: the same run of edits every time.
	rng uint64
}

func newStorageWorkload(recordID string, sources []string) *storageWorkload {
	return &storageWorkload{recordID: recordID, sources: sources, at: time.Now().UTC(), rng: 0x9e3779b97f4a7c15}
}

func (w *storageWorkload) rand(n int) int {
	w.rng ^= w.rng << 13
	w.rng ^= w.rng >> 7
	w.rng ^= w.rng << 17
	return int(w.rng % uint64(n))
}

// next returns the next raw event, at the record's current version.
func (w *storageWorkload) next() event.Raw {
	v := w.version
	changes := map[string]json.RawMessage{}
	if v == 0 {
		for i := range storageFields {
			changes[storageFields[i]] = storageValue(i, v)
		}
	} else {
		for n := 1 + w.rand(3); len(changes) < n; {
			i := w.rand(len(storageFields))
			changes[storageFields[i]] = storageValue(i, v)
		}
	}
	w.version++
	w.at = w.at.Add(time.Millisecond)
	return event.Raw{ID: uuid.NewString(), RecordType: RecordType, RecordID: w.recordID, Source: w.sources[v%uint64(len(w.sources))],
		Timestamp: event.NewTime(w.at), BaseVersion: v, Changes: changes}
}

// storageValue is field i's value at version v: new at every version (no
// edit is a no-op), of the size such a field has.
func storageValue(i int, v uint64) json.RawMessage {
	var s string
	switch f := storageFields[i]; f {
	case "email":
		s = fmt.Sprintf("jane.doe+%d@example.com", v)
	case "phone":
		s = fmt.Sprintf("+1 555 %07d", v)
	case "credit_limit", "balance":
		return json.RawMessage(strconv.FormatUint(1000+v*25, 10) + ".50")
	case "notes":
		s = fmt.Sprintf("Called on %d: prefers e-mail, invoices to the head office", v)
	case "website":
		s = fmt.Sprintf("https://www.example.com/c/%d", v)
	default:
		s = fmt.Sprintf("%s %d", strings.ReplaceAll(f, "_", " "), v)
	}
	b, _ := json.Marshal(s) // a string: cannot fail
	return b
}

// tableSize is one table's size at one moment.
type tableSize struct {
	Table                       string
	Rows, DataBytes, IndexBytes int64
	LogicalBytes                int64
	// PageBytes and RecordBytes are the B-tree pages of the table's indexes
	// in the buffer pool (16 KiB each) and the bytes of records in them (row
	// headers and index entries included): what is in use, without the
	// extents InnoDB reserves ahead, which DATA_LENGTH counts.
	PageBytes, RecordBytes int64
}

// tableSizes analyzes every table of root's database and reads its size as
// information_schema reports it, its row count and the sum of the LENGTH()
// of its columns (numbers and times count as MariaDB renders them).
func tableSizes(ctx context.Context, root *sql.DB) (map[string]tableSize, error) {
	rows, err := root.QueryContext(ctx, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME")
	if err != nil {
		return nil, fmt.Errorf("storage: list tables: %w", err)
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return nil, err
		}
		tables = append(tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := map[string]tableSize{}
	for _, t := range tables {
		s := tableSize{Table: t}
		// ANALYZE answers with rows; reading them waits for it. Without it
		// information_schema reports the statistics of the last automatic
		// recalculation, which lags the inserts.
		ar, err := root.QueryContext(ctx, "ANALYZE TABLE `"+t+"`")
		if err != nil {
			return nil, fmt.Errorf("storage: analyze %s: %w", t, err)
		}
		for ar.Next() {
		}
		ar.Close()
		if err := root.QueryRowContext(ctx, "SELECT DATA_LENGTH, INDEX_LENGTH FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?", t).
			Scan(&s.DataBytes, &s.IndexBytes); err != nil {
			return nil, fmt.Errorf("storage: size of %s: %w", t, err)
		}
		cols, err := columns(ctx, root, t)
		if err != nil {
			return nil, err
		}
		lengths := make([]string, len(cols))
		for i, c := range cols {
			lengths[i] = "COALESCE(LENGTH(`" + c + "`), 0)"
		}
		if err := root.QueryRowContext(ctx, "SELECT COUNT(*), COALESCE(SUM("+strings.Join(lengths, " + ")+"), 0) FROM `"+t+"`").Scan(&s.Rows, &s.LogicalBytes); err != nil {
			return nil, fmt.Errorf("storage: column lengths of %s: %w", t, err)
		}
		// Every page written since the server started is in the buffer pool
		// (the run's tables are far smaller than it), so counting the pool's
		// pages counts the table's.
		if err := root.QueryRowContext(ctx, "SELECT COUNT(*) * 16384, COALESCE(SUM(DATA_SIZE), 0) FROM information_schema.INNODB_BUFFER_PAGE"+
			" WHERE PAGE_TYPE = 'INDEX' AND TABLE_NAME = CONCAT('`', DATABASE(), '`.`', ?, '`')", t).Scan(&s.PageBytes, &s.RecordBytes); err != nil {
			return nil, fmt.Errorf("storage: pages of %s: %w", t, err)
		}
		out[t] = s
	}
	return out, nil
}

func columns(ctx context.Context, db *sql.DB, table string) ([]string, error) {
	rows, err := db.QueryContext(ctx, "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION", table)
	if err != nil {
		return nil, fmt.Errorf("storage: columns of %s: %w", table, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// storage is the run's storage phase: MeasureStorage in a scratch database,
// the engine over the production grant set.
func (b *benchmark) storage(ctx context.Context) error {
	root, st, _, closeAll, err := b.scratchStore(ctx, "storage")
	if err != nil {
		return err
	}
	defer closeAll()
	b.printf("\nbytes stored per event (one record of %d fields, %d sequential merges through the engine, publish a no-op)\n", len(storageFields), b.sizes.storageEvents)
	s, err := MeasureStorage(ctx, root, st, StorageOptions{Events: b.sizes.storageEvents, Env: b.o.Env, Sources: config.DefaultSources})
	if err != nil {
		return err
	}
	b.res.Storage = &s
	for _, t := range s.Tables {
		b.printf("  %-16s +%6d rows  data %+9d  index %+9d  pages %+9d  records %+9d  logical %+9d bytes\n",
			t.Table, t.Rows, t.DataBytes, t.IndexBytes, t.PageBytes, t.RecordBytes, t.LogicalBytes)
	}
	b.printf("  %d events (%s) in %.1fs: changes %.1f bytes on average; per event: allocated %.1f, pages in use %.1f, records %.1f, values %.1f bytes; target <= %.1f\n",
		s.Events, s.Sources, s.Seconds, s.MeanChangesBytes, s.BytesPerEvent, s.PageBytesPerEvent, s.RecordBytesPerEvent, s.LogicalBytesPerEvent, StorageTarget(s.MeanChangesBytes))
	b.printf("  redo log %.1f bytes/event (server-wide Innodb_os_log_written); projection state %d bytes (LENGTH(state) of the record's row in record_heads)\n",
		s.RedoBytesPerEvent, s.ProjectionStateBytes)
	if s.Warnings > 0 {
		b.fail("storage: the engine logged %d warnings during the merges (first: %s): not the normal path", s.Warnings, s.FirstWarning)
	}
	return nil
}
