package mysql

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/shared/store"
)

// maxTxAttempts bounds InTx's retries of deadlocks, lock waits and lost
// version races; past it the error is returned (retryable upstream).
const maxTxAttempts = 8

// Store is the MySQL/MariaDB event store.
type Store struct {
	db      *sql.DB
	closeFn func() error
	flags   flagBatcher
	nsOnce  sync.Mutex
	ns      string // database name, the lock namespace
	// sessionRC: the pool's sessions are READ COMMITTED (Open), so a
	// transaction need not set its level.
	sessionRC bool
}

var _ store.Store = (*Store)(nil)

// New wraps an open pool. closeFn (may be nil) is called by Close instead of
// db.Close, so a Cloud SQL dialer is released with the pool.
func New(db *sql.DB, closeFn func() error) *Store {
	if closeFn == nil {
		closeFn = db.Close
	}
	_, rc := db.Driver().(sessionRC)
	return &Store{db: db, closeFn: closeFn, sessionRC: rc}
}

// DB exposes the pool for tools (stress, bench) that measure raw SQL.
func (s *Store) DB() *sql.DB { return s.db }

// Close closes the pool.
func (s *Store) Close() error { return s.closeFn() }

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("%w: ping: %w", store.ErrUnavailable, err)
	}
	return nil
}

// querier is what both *sql.DB and *sql.Tx offer.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// ops holds the statements shared by the store and its transactions.
type ops struct{ q querier }

const eventCols = "id, record_type, record_id, source, `timestamp`, base_version, changes, full_snapshot_ref, processed, created_at"

// eventColsE is eventCols qualified with the alias e.
const eventColsE = "e.id, e.record_type, e.record_id, e.source, e.`timestamp`, e.base_version, e.changes, e.full_snapshot_ref, e.processed, e.created_at"

type scanner interface{ Scan(dest ...any) error }

func scanEvent(r scanner) (store.Event, error) {
	var (
		e       store.Event
		changes []byte
		ref     sql.NullString
	)
	if err := r.Scan(&e.ID, &e.RecordType, &e.RecordID, &e.Source, &e.Timestamp, &e.BaseVersion, &changes, &ref, &e.Processed, &e.CreatedAt); err != nil {
		return e, err
	}
	e.Changes = json.RawMessage(changes)
	if ref.Valid {
		e.FullSnapshotRef = &ref.String
	}
	e.Timestamp = e.Timestamp.UTC()
	e.CreatedAt = e.CreatedAt.UTC()
	return e, nil
}

func (o ops) queryEvents(ctx context.Context, what, q string, args ...any) ([]store.Event, error) {
	return queryAll(ctx, o.q, what, q, scanEvent, args...)
}

// queryAll runs query and scans every row with scan; errors name what was
// read.
func queryAll[T any](ctx context.Context, q querier, what, query string, scan func(scanner) (T, error), args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, wrap(err, what)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		var bad badRow
		if errors.As(err, &bad) {
			return nil, fmt.Errorf("%s: %w", what, bad.err) // the data, not the connection
		}
		if err != nil {
			return nil, wrap(err, what)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(err, what)
	}
	return out, nil
}

func (o ops) oneEvent(ctx context.Context, what, q string, args ...any) (store.Event, error) {
	e, err := scanEvent(o.q.QueryRowContext(ctx, q, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return e, fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	if err != nil {
		return e, wrap(err, what)
	}
	return e, nil
}

func (o ops) EventByID(ctx context.Context, id string) (store.Event, error) {
	return o.oneEvent(ctx, "event "+id, "SELECT "+eventCols+" FROM events WHERE id = ?", id)
}

// acceptedOutcomes is the SQL list of outcomes that mean "stored".
const acceptedOutcomes = "('" + store.OutcomeAccepted + "','" + store.OutcomeMerged + "')"

// Duplicates runs the id probe and the fingerprint probe as one statement.
func (o ops) Duplicates(ctx context.Context, id, fp string) (byID, byFP *store.Event, err error) {
	rows, err := o.q.QueryContext(ctx,
		"(SELECT 'id', "+eventCols+" FROM events WHERE id = ?)"+
			" UNION ALL (SELECT 'fp', "+eventColsE+" FROM event_audit_log a JOIN events e ON e.id = a.event_id"+
			" WHERE a.fingerprint = ? AND a.processing_outcome IN "+acceptedOutcomes+" ORDER BY e.base_version DESC LIMIT 1)", id, fp)
	if err != nil {
		return nil, nil, wrap(err, "duplicate probe for "+id)
	}
	defer rows.Close()
	for rows.Next() {
		var kind string
		e, err := scanEvent(prefixed{rows, &kind})
		if err != nil {
			return nil, nil, wrap(err, "duplicate probe for "+id)
		}
		if kind == "id" {
			byID = &e
		} else {
			byFP = &e
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, wrap(err, "duplicate probe for "+id)
	}
	return byID, byFP, nil
}

// prefixed scans one leading column into kind, then hands the rest to the
// event scanner.
type prefixed struct {
	r    scanner
	kind *string
}

func (p prefixed) Scan(dest ...any) error {
	return p.r.Scan(append([]any{p.kind}, dest...)...)
}

// headQuery reads a record's projection row (record_heads, one primary-key
// probe whatever the history length) and the newest event's outbox flag,
// source, timestamp and snapshot reference: what a delivery needs.
const headQuery = "SELECT h.version, h.state, h.event_id, e.processed, e.source, e.`timestamp`, e.full_snapshot_ref FROM record_heads h" +
	" JOIN events e ON e.id = h.event_id WHERE h.record_type = ? AND h.record_id = ?"

// lockQuery is the merge's record lock: FOR UPDATE on the projection row
// alone, with the newest event's flag and the duplicate probes (by id, by
// fingerprint) as scalar subqueries, one round trip for SPEC §5 step 1 and
// the outbox gate. A locking read does not lock the rows its subqueries read
// (MySQL 8 documents it; MariaDB 10.11 behaves the same, see
// TestLockRecordLocksOnlyTheHead), so the outbox flag of the newest event
// can be set by another transaction while a merge holds the record: the
// flag rides on other merges' commits (flagBatcher) without lock cycles.
const lockQuery = "SELECT h.version, h.state, h.event_id," +
	" (SELECT e.processed FROM events e WHERE e.id = h.event_id)," +
	" (SELECT i.id FROM events i WHERE i.id = ?)," +
	" (SELECT a.event_id FROM event_audit_log a JOIN events f ON f.id = a.event_id" +
	" WHERE a.fingerprint = ? AND a.processing_outcome IN " + acceptedOutcomes + " ORDER BY f.base_version DESC LIMIT 1)" +
	" FROM record_heads h WHERE h.record_type = ? AND h.record_id = ? FOR UPDATE"

// eventsHeadQuery finds the newest event of a record without the
// projection: for a record whose events were appended by something that
// did not keep record_heads (a bulk load, an old tool). The state is then
// rebuilt from the events by the merge.
const eventsHeadQuery = "SELECT e.base_version, e.id, e.processed, e.source, e.`timestamp`, e.full_snapshot_ref FROM events e" +
	" WHERE e.record_type = ? AND e.record_id = ? ORDER BY e.base_version DESC LIMIT 1"

func (o ops) head(ctx context.Context, rt, rid, suffix string) (store.Head, error) {
	var (
		version   uint64
		state     []byte
		id        string
		processed bool
		source    string
		ts        time.Time
		ref       sql.NullString
	)
	err := o.q.QueryRowContext(ctx, headQuery+suffix, rt, rid).Scan(&version, &state, &id, &processed, &source, &ts, &ref)
	if errors.Is(err, sql.ErrNoRows) {
		return o.eventsHead(ctx, rt, rid, suffix)
	}
	if err != nil {
		return store.Head{}, wrap(err, "head of "+rt+":"+rid)
	}
	h := store.Head{Version: version, NewestID: id, NewestProcessed: processed, NewestSource: source, NewestTimestamp: ts.UTC()}
	if ref.Valid {
		h.NewestSnapshotRef = &ref.String
	}
	if len(state) > 0 {
		h.State = json.RawMessage(state)
	}
	return h, nil
}

// eventsHead is the head of a record without a projection row (no state),
// or the zero Head for a new record.
func (o ops) eventsHead(ctx context.Context, rt, rid, suffix string) (store.Head, error) {
	var (
		base uint64
		h    store.Head
		ts   time.Time
		ref  sql.NullString
	)
	err := o.q.QueryRowContext(ctx, eventsHeadQuery+suffix, rt, rid).Scan(&base, &h.NewestID, &h.NewestProcessed, &h.NewestSource, &ts, &ref)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Head{}, nil // a new record
	}
	if err != nil {
		return store.Head{}, wrap(err, "head of "+rt+":"+rid)
	}
	h.Version, h.NewestTimestamp = base+1, ts.UTC()
	if ref.Valid {
		h.NewestSnapshotRef = &ref.String
	}
	return h, nil
}

// lock runs lockQuery; projected is false when the record has no
// projection row (a new record, or one appended without it), in which case
// the head comes from the events and the probes run on their own.
func (o ops) lock(ctx context.Context, rt, rid string, p store.Probe) (h store.Head, f store.Found, projected bool, err error) {
	var (
		state        []byte
		processed    sql.NullBool
		byID, byFPID sql.NullString
	)
	err = o.q.QueryRowContext(ctx, lockQuery, p.ID, p.Fingerprint, rt, rid).Scan(&h.Version, &state, &h.NewestID, &processed, &byID, &byFPID)
	if errors.Is(err, sql.ErrNoRows) {
		if h, err = o.eventsHead(ctx, rt, rid, " FOR UPDATE"); err != nil {
			return store.Head{}, store.Found{}, false, err
		}
		f.ByID, f.ByFingerprint, err = o.Duplicates(ctx, p.ID, p.Fingerprint)
		return h, f, false, err
	}
	if err != nil {
		return store.Head{}, store.Found{}, false, wrap(err, "lock "+rt+":"+rid)
	}
	h.NewestProcessed = processed.Bool
	if len(state) > 0 {
		h.State = json.RawMessage(state)
	}
	// Found ids are read whole only then: a duplicate is the rare case.
	if byID.Valid || byFPID.Valid {
		f.ByID, f.ByFingerprint, err = o.Duplicates(ctx, p.ID, p.Fingerprint)
	}
	return h, f, true, err
}

// putHead writes a record's projection row: the head after an append, or
// the same head with a refreshed state. exists says the row is there (the
// lock read it), so a plain UPDATE by primary key does, without the insert
// attempt of INSERT … ON DUPLICATE KEY UPDATE.
func (o ops) putHead(ctx context.Context, rt, rid string, version uint64, eventID string, state []byte, exists bool) error {
	if state == nil {
		state = []byte{}
	}
	var err error
	if exists {
		_, err = o.q.ExecContext(ctx,
			"UPDATE record_heads SET version = ?, event_id = ?, state = ? WHERE record_type = ? AND record_id = ?",
			version, eventID, state, rt, rid)
	} else {
		_, err = o.q.ExecContext(ctx,
			"INSERT INTO record_heads (record_type, record_id, version, event_id, state) VALUES (?, ?, ?, ?, ?)"+
				" ON DUPLICATE KEY UPDATE version = ?, event_id = ?, state = ?",
			rt, rid, version, eventID, state, version, eventID, state)
	}
	if err != nil {
		return wrap(err, "head of "+rt+":"+rid)
	}
	return nil
}

func (o ops) Head(ctx context.Context, rt, rid string) (store.Head, error) {
	return o.head(ctx, rt, rid, "")
}

// reportOutcomes are the merge outcomes whose raw event counts as the
// source's report of its fields (SPEC §7): accepted or dropped, never
// rejected, deferred or a duplicate.
const reportOutcomes = "('" + store.OutcomeAccepted + "','" + store.OutcomeMerged + "','" + store.OutcomeEcho + "','" +
	store.OutcomeNoop + "','" + store.OutcomeSuperseded + "')"

// systemFilter selects, among a record's rows, what a system knows: its
// reports and its own stage's rows with a field set.
const systemFilter = "fields IS NOT NULL AND ((stage = '" + store.StageMerge + "' AND source = ? AND processing_outcome IN " + reportOutcomes + ") OR stage = ?)"

// knownFilter is systemFilter and the system's checkpoints, which a stale
// or skipped_echo row carries without a field set.
const knownFilter = "(" + systemFilter + " OR (stage = ? AND state IS NOT NULL))"

const systemRows = "SELECT " + auditCols + " FROM event_audit_log WHERE record_type = ? AND record_id = ? AND " + systemFilter

// checkpointQuery finds the version of the system's newest checkpoint:
// idx_audit_record walked backwards from the record's newest version, so it
// reads the rows since that checkpoint, not the history.
const checkpointQuery = "SELECT version FROM event_audit_log WHERE record_type = ? AND record_id = ? AND stage = ? AND state IS NOT NULL" +
	" ORDER BY version DESC LIMIT 1"

// knownRows is SystemHistory with the system's checkpoints; from a version
// on, it is a range of idx_audit_record (and the rows without a version, a
// second range), so the cost follows the rows since the checkpoint.
const knownRows = "SELECT " + auditCols + " FROM event_audit_log WHERE record_type = ? AND record_id = ? AND " + knownFilter

// Checkpoint is the version of system's newest checkpoint (see
// store.Reader).
func (o ops) Checkpoint(ctx context.Context, rt, rid, system string) (uint64, error) {
	var v sql.NullInt64
	err := o.q.QueryRowContext(ctx, checkpointQuery, rt, rid, system).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, wrap(err, "checkpoint of "+rt+":"+rid+" at "+system)
	}
	return uint64(v.Int64), nil
}

// KnownHistory is SystemHistory with system's checkpoints, from version
// since on (see store.Reader).
func (o ops) KnownHistory(ctx context.Context, rt, rid, system string, since uint64) ([]store.Audit, error) {
	what := "known history of " + rt + ":" + rid + " at " + system
	if since == 0 {
		return auditRows(ctx, o.q, what, knownRows+" ORDER BY created_at, id", rt, rid, system, system, system)
	}
	return auditRows(ctx, o.q, what, knownRows+" AND (version >= ? OR version IS NULL) ORDER BY created_at, id", rt, rid, system, system, system, since)
}

func (o ops) SystemHistory(ctx context.Context, rt, rid, system string, fromVersion uint64) ([]store.Audit, error) {
	what := "history of " + rt + ":" + rid + " at " + system
	if fromVersion == 0 {
		return auditRows(ctx, o.q, what, systemRows+" ORDER BY created_at, id", rt, rid, system, system)
	}
	// The record's newest versions only: a range of idx_audit_record, so
	// the cost does not grow with the history (rows without a field set,
	// written before migration 00003, are skipped within the range too).
	return auditRows(ctx, o.q, what, systemRows+" AND version >= ? ORDER BY created_at, id", rt, rid, system, system, fromVersion)
}

func (o ops) History(ctx context.Context, rt, rid string) ([]store.Event, error) {
	return o.queryEvents(ctx, "history of "+rt+":"+rid,
		"SELECT "+eventCols+" FROM events WHERE record_type = ? AND record_id = ? ORDER BY base_version", rt, rid)
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

const insertAudit = "INSERT INTO event_audit_log (id, event_id, fingerprint, record_type, record_id, processing_outcome, stage, message_id, version, detail, state, source, fields) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

func auditArgs(a store.Audit) []any {
	if a.ID == "" {
		a.ID = NewAuditID()
	}
	var version any
	if a.Version > 0 {
		version = a.Version
	}
	var fields any
	if a.Fields != nil {
		if b, err := json.Marshal(a.Fields); err == nil {
			fields = string(b)
		}
	}
	return []any{a.ID, nullString(a.EventID), a.Fingerprint, a.RecordType, a.RecordID,
		nullString(a.Outcome), nullString(a.Stage), nullString(a.MessageID), version, nullString(store.Truncate(a.Detail, store.MaxDetailBytes)), nullBytes(a.State),
		nullString(a.Source), fields}
}

// NewAuditID returns a time-ordered (version 7) UUID: rows written within
// one microsecond still sort in the order one process wrote them, which the
// known-state rule's "processing order" relies on (SPEC §7).
func NewAuditID() string {
	if id, err := uuid.NewV7(); err == nil {
		return id.String()
	}
	return uuid.NewString()
}

func (o ops) AppendAudit(ctx context.Context, a store.Audit) error {
	if _, err := o.q.ExecContext(ctx, insertAudit, auditArgs(a)...); err != nil {
		return wrap(err, "append audit "+a.Outcome+" for "+a.RecordType+":"+a.RecordID)
	}
	return nil
}

func (o ops) insertEvent(ctx context.Context, e store.Event, a store.Audit, headExists bool) error {
	var ref any
	if e.FullSnapshotRef != nil {
		ref = *e.FullSnapshotRef
	}
	_, err := o.q.ExecContext(ctx,
		"INSERT INTO events (id, record_type, record_id, source, `timestamp`, base_version, changes, full_snapshot_ref, processed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
		e.ID, e.RecordType, e.RecordID, e.Source, e.Timestamp.UTC().Truncate(time.Microsecond), e.BaseVersion, string(e.Changes), ref, e.Processed)
	if err != nil {
		var me *mysql.MySQLError
		if errors.As(err, &me) && me.Number == errDupEntry {
			if strings.Contains(me.Message, "idx_events_aggregate") {
				return fmt.Errorf("append event %s at %s:%s base %d: %w", e.ID, e.RecordType, e.RecordID, e.BaseVersion, store.ErrVersionTaken)
			}
			return fmt.Errorf("append event %s: %w", e.ID, store.ErrDuplicateID)
		}
		return wrap(err, "append event "+e.ID)
	}
	if a.EventID == "" {
		a.EventID = e.ID
	}
	if a.Version == 0 {
		a.Version = e.Version()
	}
	// The state goes to the record's projection row, not into the audit
	// row: one copy per record, not one per event.
	state := a.State
	a.State = nil
	if err := o.AppendAudit(ctx, a); err != nil {
		return err
	}
	return o.putHead(ctx, e.RecordType, e.RecordID, e.Version(), e.ID, state, headExists)
}

// AppendEvent inserts the event and its audit row in one transaction.
func (s *Store) AppendEvent(ctx context.Context, e store.Event, a store.Audit) error {
	return s.InTx(ctx, func(ctx context.Context, tx store.Tx) error { return tx.AppendEvent(ctx, e, a) })
}

// PutHead writes a record's projection row (backbone rebuild).
func (s *Store) PutHead(ctx context.Context, rt, rid string, version uint64, eventID string, state json.RawMessage) error {
	return s.o().putHead(ctx, rt, rid, version, eventID, state, false)
}

// Records lists the records that have events, in key order after the
// given one, at most limit (backbone rebuild walks them).
func (s *Store) Records(ctx context.Context, afterType, afterID string, limit int) ([][2]string, error) {
	if limit <= 0 {
		limit = 500
	}
	rows, err := s.db.QueryContext(ctx,
		"SELECT DISTINCT record_type, record_id FROM events WHERE (record_type, record_id) > (?, ?) ORDER BY record_type, record_id LIMIT ?",
		afterType, afterID, limit)
	if err != nil {
		return nil, wrap(err, "list records")
	}
	defer rows.Close()
	var out [][2]string
	for rows.Next() {
		var k [2]string
		if err := rows.Scan(&k[0], &k[1]); err != nil {
			return nil, wrap(err, "list records")
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(err, "list records")
	}
	return out, nil
}

func (s *Store) o() ops { return ops{q: s.db} }

func (s *Store) EventByID(ctx context.Context, id string) (store.Event, error) {
	return s.o().EventByID(ctx, id)
}
func (s *Store) Head(ctx context.Context, rt, rid string) (store.Head, error) {
	return s.o().Head(ctx, rt, rid)
}
func (s *Store) Duplicates(ctx context.Context, id, fp string) (*store.Event, *store.Event, error) {
	return s.o().Duplicates(ctx, id, fp)
}
func (s *Store) SystemHistory(ctx context.Context, rt, rid, system string, fromVersion uint64) ([]store.Audit, error) {
	return s.o().SystemHistory(ctx, rt, rid, system, fromVersion)
}
func (s *Store) Checkpoint(ctx context.Context, rt, rid, system string) (uint64, error) {
	return s.o().Checkpoint(ctx, rt, rid, system)
}
func (s *Store) KnownHistory(ctx context.Context, rt, rid, system string, since uint64) ([]store.Audit, error) {
	return s.o().KnownHistory(ctx, rt, rid, system, since)
}
func (s *Store) AppendAudit(ctx context.Context, a store.Audit) error {
	return s.o().AppendAudit(ctx, a)
}

// tx is one merge transaction. projected remembers which records' lock
// found a projection row, so the append updates it in place.
type tx struct {
	ops
	projected map[[2]string]bool
}

func (t *tx) AppendEvent(ctx context.Context, e store.Event, a store.Audit) error {
	return t.insertEvent(ctx, e, a, t.projected[[2]string{e.RecordType, e.RecordID}])
}

// RefreshHead replaces the state of the record's head (the same version and
// event): a no-op that refreshed a field's conflict timestamp.
func (t *tx) RefreshHead(ctx context.Context, rt, rid string, h store.Head, state json.RawMessage) error {
	return t.putHead(ctx, rt, rid, h.Version, h.NewestID, state, t.projected[[2]string{rt, rid}])
}

// LockRecord takes the row lock of the record's projection row (FOR
// UPDATE) and runs the duplicate probes in the same statement.
// A writer that queued behind another reads, once granted, the row it
// waited for; if that is no longer the head its insert hits the unique index
// and InTx runs the merge again.
func (t *tx) LockRecord(ctx context.Context, rt, rid string, p store.Probe) (store.Head, store.Found, error) {
	h, f, projected, err := t.lock(ctx, rt, rid, p)
	if err == nil && projected {
		if t.projected == nil {
			t.projected = map[[2]string]bool{}
		}
		t.projected[[2]string{rt, rid}] = true
	}
	return h, f, err
}

// InTx runs fn in a READ COMMITTED transaction, retrying deadlocks (1213),
// lock-wait timeouts (1205) and lost version races with jittered backoff.
// REPEATABLE READ deadlocks on gap locks under concurrent appends (SPEC §5).
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context, tx store.Tx) error) error {
	var err error
	for attempt := 0; attempt < maxTxAttempts; attempt++ {
		if attempt > 0 {
			backoff := time.Duration(1<<min(attempt, 6)) * time.Millisecond
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w: %w (after %v)", store.ErrUnavailable, ctx.Err(), err)
			case <-time.After(backoff/2 + rand.N(backoff)):
			}
		}
		err = s.runTx(ctx, fn)
		if err == nil || !retryable(err) {
			return err
		}
	}
	return fmt.Errorf("transaction gave up after %d attempts: %w", maxTxAttempts, err)
}

func (s *Store) runTx(ctx context.Context, fn func(ctx context.Context, tx store.Tx) error) (err error) {
	// A pool from Open is READ COMMITTED per session; any other pool (a
	// wrapping or counting connector) must ask, or it falls back to
	// REPEATABLE READ, whose gap locks deadlock concurrent appends.
	var opts *sql.TxOptions
	if !s.sessionRC {
		opts = &sql.TxOptions{Isolation: sql.LevelReadCommitted}
	}
	s.flags.carrierOpened()
	counted := true
	closeCarrier := func(take bool) []*flagRequest {
		counted = false
		taken, kick := s.flags.carrierClosed(take)
		if kick {
			s.kickFlags()
		}
		return taken
	}
	var carried []*flagRequest
	defer func() {
		if counted {
			closeCarrier(false)
		}
		if err != nil && len(carried) > 0 {
			s.requeue(carried)
		}
	}()
	sqlTx, err := s.db.BeginTx(ctx, opts)
	if err != nil {
		return wrap(err, "begin")
	}
	defer func() {
		if err != nil {
			_ = sqlTx.Rollback()
		}
	}()
	if err = fn(ctx, &tx{ops: ops{q: sqlTx}}); err != nil {
		return err
	}
	// The outbox flags queued meanwhile ride on this commit (flagBatcher).
	if carried = closeCarrier(true); len(carried) > 0 {
		if _, err = sqlTx.ExecContext(ctx, flagUpdate(len(carried)), flagArgs(carried)...); err != nil {
			return wrap(err, fmt.Sprintf("mark %d event(s) processed", len(carried)))
		}
	}
	if err = sqlTx.Commit(); err != nil {
		return wrap(err, "commit")
	}
	for _, r := range carried {
		r.done <- nil
	}
	return nil
}

// Exclusive holds a GET_LOCK on a dedicated connection while fn runs.
// GET_LOCK is a server-wide named lock in both MySQL 8 and MariaDB, needs no
// privilege, and is released when the connection ends, so a crashed holder
// cannot leave it behind. The name is hashed here, in Go (lockName), and
// only hex goes to the server: a record id of any Unicode (4-byte, 191
// characters, differing by case or a trailing space) makes a distinct,
// valid name, where building it in SQL mixed collations (error 1271).
func (s *Store) Exclusive(ctx context.Context, key string, wait time.Duration, fn func(ctx context.Context, l store.Locked) error) error {
	ns, err := s.lockNamespace(ctx)
	if err != nil {
		return err
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return wrap(err, "lock "+key)
	}
	defer conn.Close()
	name := lockName(ns, key)
	if err := getLock(ctx, conn, name, wait); err != nil {
		return fmt.Errorf("lock %s: %w", key, err)
	}
	defer func() {
		// Released on this connection even if ctx is done; closing the
		// connection would release it too.
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), "DO RELEASE_LOCK(?)", name)
	}()
	return fn(ctx, locked{ops: ops{q: conn}, conn: conn, ns: ns})
}

// lockName is the server-wide lock name of key in namespace ns: 64 hex
// digits of SHA-256, the longest name both servers accept. The namespace is
// the database name, so two backbone databases on one server do not share
// locks.
func lockName(ns, key string) string {
	sum := sha256.Sum256([]byte("backbone\x00" + ns + "\x00" + key))
	return hex.EncodeToString(sum[:])
}

// lockNamespace reads the database name once.
func (s *Store) lockNamespace(ctx context.Context) (string, error) {
	s.nsOnce.Lock()
	defer s.nsOnce.Unlock()
	if s.ns != "" {
		return s.ns, nil
	}
	var name sql.NullString
	if err := s.db.QueryRowContext(ctx, "SELECT DATABASE()").Scan(&name); err != nil {
		return "", wrap(err, "database name for lock names")
	}
	s.ns = name.String
	if s.ns == "" {
		s.ns = "-"
	}
	return s.ns, nil
}

// getLock waits up to wait for the named lock on conn.
func getLock(ctx context.Context, conn *sql.Conn, name string, wait time.Duration) error {
	secs := max(0, int((wait+time.Second-1)/time.Second))
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", name, secs).Scan(&got); err != nil {
		return wrap(err, "get lock")
	}
	if !got.Valid || got.Int64 != 1 {
		return fmt.Errorf("not granted within %s: %w", wait, store.ErrUnavailable)
	}
	return nil
}

// locked is what an Exclusive holder uses: the lock's own connection.
type locked struct {
	ops
	conn *sql.Conn
	ns   string
}

// AcquireSlot takes one of n named locks "pool/i" on the holder's own
// connection (both servers let one session hold several named locks). At
// most n sessions hold a slot of a pool at once, across every process on
// the database, which is what a shared concurrency share needs; a slot dies
// with its connection, so a crashed instance frees its slots. It polls the
// slots in a random order without waiting on any one of them, so a waiter
// takes whichever slot frees first.
func (l locked) AcquireSlot(ctx context.Context, pool string, n int, wait time.Duration) (func(), error) {
	if n < 1 {
		n = 1
	}
	deadline := time.Now().Add(wait)
	pause := 5 * time.Millisecond
	for {
		for _, i := range rand.Perm(n) {
			name := lockName(l.ns, fmt.Sprintf("slot\x00%s\x00%d", pool, i))
			var got sql.NullInt64
			if err := l.conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 0)", name).Scan(&got); err != nil {
				return nil, wrap(err, "slot of "+pool)
			}
			if got.Valid && got.Int64 == 1 {
				return func() {
					_, _ = l.conn.ExecContext(context.WithoutCancel(ctx), "DO RELEASE_LOCK(?)", name)
				}, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no slot of %s (%d) free within %s: %w", pool, n, wait, store.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("slot of %s: %w: %w", pool, store.ErrUnavailable, ctx.Err())
		case <-time.After(pause/2 + rand.N(pause)):
		}
		pause = min(pause*2, 100*time.Millisecond)
	}
}

func (s *Store) History(ctx context.Context, rt, rid string) ([]store.Event, error) {
	return s.o().History(ctx, rt, rid)
}

const auditCols = "id, event_id, fingerprint, record_type, record_id, processing_outcome, stage, message_id, version, detail, state, source, fields, created_at"

func (s *Store) audits(ctx context.Context, what, q string, args ...any) ([]store.Audit, error) {
	return auditRows(ctx, s.db, what, q, args...)
}

func auditRows(ctx context.Context, q querier, what, query string, args ...any) ([]store.Audit, error) {
	return queryAll(ctx, q, what, query, scanAudit, args...)
}

// badRow is a row the server returned whole that does not decode: a fault
// of the stored data, not of the connection (never ErrUnavailable).
type badRow struct{ err error }

func (b badRow) Error() string { return b.err.Error() }

func scanAudit(r scanner) (store.Audit, error) {
	var (
		a                                            store.Audit
		eventID, outcome, stage, msg, detail, source sql.NullString
		version                                      sql.NullInt64
		state, fields                                []byte
	)
	if err := r.Scan(&a.ID, &eventID, &a.Fingerprint, &a.RecordType, &a.RecordID, &outcome, &stage, &msg, &version, &detail, &state, &source, &fields, &a.CreatedAt); err != nil {
		return a, err
	}
	a.EventID, a.Outcome, a.Stage, a.MessageID, a.Detail = eventID.String, outcome.String, stage.String, msg.String, detail.String
	a.Source = source.String
	a.Version = uint64(version.Int64)
	if state != nil {
		a.State = json.RawMessage(state)
	}
	if fields != nil {
		fs := &store.FieldSet{}
		if err := json.Unmarshal(fields, fs); err != nil {
			return a, badRow{fmt.Errorf("fields of audit row %s: %w", a.ID, err)}
		}
		a.Fields = fs
	}
	a.CreatedAt = a.CreatedAt.UTC()
	return a, nil
}

func (s *Store) AuditTrail(ctx context.Context, rt, rid string) ([]store.Audit, error) {
	return s.audits(ctx, "audit trail of "+rt+":"+rid,
		"SELECT "+auditCols+" FROM event_audit_log WHERE record_type = ? AND record_id = ? ORDER BY created_at, id", rt, rid)
}

func (s *Store) AuditForEvent(ctx context.Context, eventID string) ([]store.Audit, error) {
	return s.audits(ctx, "audit of event "+eventID,
		"SELECT "+auditCols+" FROM event_audit_log WHERE event_id = ? ORDER BY created_at, id", eventID)
}

func (s *Store) Unprocessed(ctx context.Context, before time.Time, limit int) ([]store.Event, error) {
	if limit <= 0 {
		limit = 500
	}
	return s.o().queryEvents(ctx, "unprocessed events",
		"SELECT "+eventCols+" FROM events WHERE processed = 0 AND created_at < ? ORDER BY created_at, record_type, record_id, base_version LIMIT ?",
		before.UTC(), limit)
}

// AppendDeadLetter inserts d keyed on its message id and content digest
// (migrations/00005): the same id with the same data is a redelivery and
// inserts nothing; the same id with other data is another dead letter.
func (s *Store) AppendDeadLetter(ctx context.Context, d store.DeadLetter) (bool, error) {
	attrs := d.Attributes
	if attrs == nil {
		attrs = map[string]string{}
	}
	aj, err := json.Marshal(attrs)
	if err != nil {
		return false, fmt.Errorf("dead letter %s attributes: %w", d.MessageID, err)
	}
	var pt any
	if !d.PublishTime.IsZero() {
		pt = d.PublishTime.UTC().Truncate(time.Microsecond)
	}
	data := d.Data
	if data == nil {
		data = []byte{}
	}
	// INSERT IGNORE would also swallow truncation errors; a plain insert and
	// the duplicate-key number keep idempotency explicit.
	_, err = s.db.ExecContext(ctx,
		"INSERT INTO dead_letters (message_id, content_digest, subscription, delivery_attempts, stage, reason, detail, event_id, record_type, record_id, data, attributes, publish_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		d.MessageID, store.DigestOf(data), d.Subscription, d.DeliveryAttempts, d.Stage, d.Reason, nullString(d.Detail), nullString(d.EventID),
		nullString(d.RecordType), nullString(d.RecordID), data, string(aj), pt)
	if err != nil {
		var me *mysql.MySQLError
		if errors.As(err, &me) && me.Number == errDupEntry {
			return false, nil
		}
		return false, wrap(err, "append dead letter "+d.MessageID)
	}
	return true, nil
}

const deadLetterCols = "message_id, content_digest, subscription, delivery_attempts, stage, reason, detail, event_id, record_type, record_id, data, attributes, publish_time, created_at"

func scanDeadLetter(r scanner) (store.DeadLetter, error) {
	var (
		d                           store.DeadLetter
		detail, eventID, rtype, rid sql.NullString
		attrs                       []byte
		pt                          sql.NullTime
	)
	if err := r.Scan(&d.MessageID, &d.ContentDigest, &d.Subscription, &d.DeliveryAttempts, &d.Stage, &d.Reason, &detail, &eventID, &rtype, &rid, &d.Data, &attrs, &pt, &d.CreatedAt); err != nil {
		return d, err
	}
	d.Detail, d.EventID, d.RecordType, d.RecordID = detail.String, eventID.String, rtype.String, rid.String
	if pt.Valid {
		d.PublishTime = pt.Time.UTC()
	}
	d.CreatedAt = d.CreatedAt.UTC()
	if err := json.Unmarshal(attrs, &d.Attributes); err != nil {
		return d, fmt.Errorf("attributes of dead letter %s: %w", d.MessageID, err)
	}
	return d, nil
}

// DeadLetter returns the newest row with this message id.
func (s *Store) DeadLetter(ctx context.Context, id string) (store.DeadLetter, error) {
	d, err := scanDeadLetter(s.db.QueryRowContext(ctx, "SELECT "+deadLetterCols+" FROM dead_letters WHERE message_id = ? ORDER BY created_at DESC, content_digest LIMIT 1", id))
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("dead letter %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return d, wrap(err, "dead letter "+id)
	}
	return d, nil
}

// DeadLettersByID returns every row with this message id, oldest first.
func (s *Store) DeadLettersByID(ctx context.Context, id string) ([]store.DeadLetter, error) {
	return s.deadLetters(ctx, "dead letters "+id,
		"SELECT "+deadLetterCols+" FROM dead_letters WHERE message_id = ? ORDER BY created_at, content_digest", id)
}

func (s *Store) DeadLetters(ctx context.Context, f store.DeadLetterFilter) ([]store.DeadLetter, error) {
	var (
		where []string
		args  []any
	)
	add := func(cond string, v any) { where = append(where, cond); args = append(args, v) }
	if f.Stage != "" {
		add("stage = ?", f.Stage)
	}
	if f.Reason != "" {
		add("reason = ?", f.Reason)
	}
	if f.RecordType != "" {
		add("record_type = ?", f.RecordType)
	}
	if f.RecordID != "" {
		add("record_id = ?", f.RecordID)
	}
	if !f.Since.IsZero() {
		add("created_at >= ?", f.Since.UTC())
	}
	if !f.Until.IsZero() {
		add("created_at < ?", f.Until.UTC())
	}
	q := "SELECT " + deadLetterCols + " FROM dead_letters"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	if f.OldestFirst {
		q += " ORDER BY created_at, message_id, content_digest LIMIT ?"
	} else {
		q += " ORDER BY created_at DESC, message_id, content_digest LIMIT ?"
	}
	args = append(args, limit)
	return s.deadLetters(ctx, "list dead letters", q, args...)
}

func (s *Store) deadLetters(ctx context.Context, what, q string, args ...any) ([]store.DeadLetter, error) {
	return queryAll(ctx, s.db, what, q, scanDeadLetter, args...)
}
