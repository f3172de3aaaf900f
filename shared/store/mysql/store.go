package mysql

import (
	"context"
	"database/sql"
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

// MySQL server error numbers the store reacts to.
const (
	errDupEntry        = 1062
	errLockWaitTimeout = 1205
	errDeadlock        = 1213
)

// maxTxAttempts bounds InTx's retries of deadlocks, lock waits and lost
// version races; past it the error is returned (retryable upstream).
const maxTxAttempts = 8

// Store is the MySQL/MariaDB event store.
type Store struct {
	db      *sql.DB
	closeFn func() error
	flags   flagBatcher
}

var _ store.Store = (*Store)(nil)

// New wraps an open pool. closeFn (may be nil) is called by Close instead of
// db.Close, so a Cloud SQL dialer is released with the pool.
func New(db *sql.DB, closeFn func() error) *Store {
	if closeFn == nil {
		closeFn = db.Close
	}
	return &Store{db: db, closeFn: closeFn}
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
	rows, err := o.q.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, wrap(err, what)
	}
	defer rows.Close()
	var out []store.Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, wrap(err, what)
		}
		out = append(out, e)
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

func (o ops) EventByFingerprint(ctx context.Context, fp string) (store.Event, error) {
	return o.oneEvent(ctx, "event with fingerprint "+fp,
		"SELECT "+eventColsE+" FROM event_audit_log a JOIN events e ON e.id = a.event_id"+
			" WHERE a.fingerprint = ? AND a.processing_outcome IN "+acceptedOutcomes+" LIMIT 1", fp)
}

// Duplicates runs the id probe and the fingerprint probe as one statement.
func (o ops) Duplicates(ctx context.Context, id, fp string) (byID, byFP *store.Event, err error) {
	rows, err := o.q.QueryContext(ctx,
		"(SELECT 'id', "+eventCols+" FROM events WHERE id = ?)"+
			" UNION ALL (SELECT 'fp', "+eventColsE+" FROM event_audit_log a JOIN events e ON e.id = a.event_id"+
			" WHERE a.fingerprint = ? AND a.processing_outcome IN "+acceptedOutcomes+" LIMIT 1)", id, fp)
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

// headQuery reads the newest event of a record and the state stored with it.
// The descending scan of idx_events_aggregate touches one row whatever the
// history length.
const headQuery = "SELECT e.base_version, a.state, e.id, e.processed FROM events e" +
	" LEFT JOIN event_audit_log a ON a.event_id = e.id AND a.processing_outcome IN " + acceptedOutcomes +
	" WHERE e.record_type = ? AND e.record_id = ? ORDER BY e.base_version DESC LIMIT 1"

func (o ops) head(ctx context.Context, rt, rid, suffix string) (store.Head, error) {
	var (
		base      uint64
		state     []byte
		id        string
		processed bool
	)
	err := o.q.QueryRowContext(ctx, headQuery+suffix, rt, rid).Scan(&base, &state, &id, &processed)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Head{}, nil
	}
	if err != nil {
		return store.Head{}, wrap(err, "head of "+rt+":"+rid)
	}
	h := store.Head{Version: base + 1, NewestID: id, NewestProcessed: processed}
	if state != nil {
		h.State = json.RawMessage(state)
	}
	return h, nil
}

func (o ops) Head(ctx context.Context, rt, rid string) (store.Head, error) {
	return o.head(ctx, rt, rid, "")
}

func (o ops) DeliveredTo(ctx context.Context, rt, rid, target string, maxVersion uint64, limit int) ([]store.Event, error) {
	if limit <= 0 {
		limit = 50
	}
	return o.queryEvents(ctx, "deliveries of "+rt+":"+rid+" to "+target,
		"SELECT "+eventColsE+" FROM event_audit_log a JOIN events e ON e.id = a.event_id"+
			" WHERE a.record_type = ? AND a.record_id = ? AND a.version <= ? AND a.stage = ? AND a.processing_outcome = '"+store.OutcomeDelivered+"'"+
			" ORDER BY a.version DESC LIMIT ?", rt, rid, maxVersion, target, limit)
}

func (o ops) LastDelivered(ctx context.Context, rt, rid, target string) (uint64, error) {
	var v sql.NullInt64
	err := o.q.QueryRowContext(ctx,
		"SELECT version FROM event_audit_log WHERE record_type = ? AND record_id = ? AND stage = ? AND processing_outcome = '"+store.OutcomeDelivered+"'"+
			" ORDER BY version DESC LIMIT 1", rt, rid, target).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, wrap(err, "last delivery of "+rt+":"+rid+" to "+target)
	}
	return uint64(v.Int64), nil
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

const insertAudit = "INSERT INTO event_audit_log (id, event_id, fingerprint, record_type, record_id, processing_outcome, stage, message_id, version, detail, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

func auditArgs(a store.Audit) []any {
	if a.ID == "" {
		a.ID = uuid.NewString()
	}
	var version any
	if a.Version > 0 {
		version = a.Version
	}
	return []any{a.ID, nullString(a.EventID), a.Fingerprint, a.RecordType, a.RecordID,
		nullString(a.Outcome), nullString(a.Stage), nullString(a.MessageID), version, nullString(a.Detail), nullBytes(a.State)}
}

func (o ops) AppendAudit(ctx context.Context, a store.Audit) error {
	if _, err := o.q.ExecContext(ctx, insertAudit, auditArgs(a)...); err != nil {
		return wrap(err, "append audit "+a.Outcome+" for "+a.RecordType+":"+a.RecordID)
	}
	return nil
}

func (o ops) insertEvent(ctx context.Context, e store.Event, a store.Audit) error {
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
	return o.AppendAudit(ctx, a)
}

// AppendEvent inserts the event and its audit row in one transaction.
func (s *Store) AppendEvent(ctx context.Context, e store.Event, a store.Audit) error {
	return s.InTx(ctx, func(ctx context.Context, tx store.Tx) error { return tx.AppendEvent(ctx, e, a) })
}

func (s *Store) o() ops { return ops{q: s.db} }

func (s *Store) EventByID(ctx context.Context, id string) (store.Event, error) {
	return s.o().EventByID(ctx, id)
}
func (s *Store) EventByFingerprint(ctx context.Context, fp string) (store.Event, error) {
	return s.o().EventByFingerprint(ctx, fp)
}
func (s *Store) Head(ctx context.Context, rt, rid string) (store.Head, error) {
	return s.o().Head(ctx, rt, rid)
}
func (s *Store) Duplicates(ctx context.Context, id, fp string) (*store.Event, *store.Event, error) {
	return s.o().Duplicates(ctx, id, fp)
}
func (s *Store) DeliveredTo(ctx context.Context, rt, rid, target string, maxVersion uint64, limit int) ([]store.Event, error) {
	return s.o().DeliveredTo(ctx, rt, rid, target, maxVersion, limit)
}
func (s *Store) LastDelivered(ctx context.Context, rt, rid, target string) (uint64, error) {
	return s.o().LastDelivered(ctx, rt, rid, target)
}
func (s *Store) AppendAudit(ctx context.Context, a store.Audit) error {
	return s.o().AppendAudit(ctx, a)
}

// tx is one merge transaction.
type tx struct{ ops }

func (t tx) AppendEvent(ctx context.Context, e store.Event, a store.Audit) error {
	return t.insertEvent(ctx, e, a)
}

// LockRecord takes the row lock of the record's newest event (FOR UPDATE).
// A writer that queued behind another reads, once granted, the row it
// waited for; if that is no longer the head its insert hits the unique index
// and InTx runs the merge again.
func (t tx) LockRecord(ctx context.Context, rt, rid string) (store.Head, error) {
	return t.head(ctx, rt, rid, " FOR UPDATE")
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
	// Explicit, although Open also sets it per session: a pool opened
	// another way (a wrapping or counting connector) must not fall back to
	// REPEATABLE READ, whose gap locks deadlock concurrent appends.
	sqlTx, err := s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return wrap(err, "begin")
	}
	defer func() {
		if err != nil {
			_ = sqlTx.Rollback()
		}
	}()
	if err = fn(ctx, tx{ops{q: sqlTx}}); err != nil {
		return err
	}
	if err = sqlTx.Commit(); err != nil {
		return wrap(err, "commit")
	}
	return nil
}

func retryable(err error) bool {
	if errors.Is(err, store.ErrVersionTaken) {
		return true
	}
	var me *mysql.MySQLError
	return errors.As(err, &me) && (me.Number == errDeadlock || me.Number == errLockWaitTimeout)
}

// wrap adds context and marks failures that are not the server refusing a
// statement (network, driver, context) as ErrUnavailable, so callers can tell
// "retry later" from "this write is wrong".
func wrap(err error, what string) error {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %w: %w", what, store.ErrUnavailable, err)
}

// Exclusive holds a GET_LOCK named after the database and key on a
// dedicated connection while fn runs. GET_LOCK is a server-wide named lock in
// both MySQL 8 and MariaDB, needs no privilege, and is released when the
// connection ends, so a crashed holder cannot leave it behind. Names are at
// most 64 characters, and server-wide: the name is the SHA-256 of the
// database name and the key, so two backbone databases on one server do not
// share locks.
func (s *Store) Exclusive(ctx context.Context, key string, wait time.Duration, fn func(ctx context.Context, l store.Locked) error) error {
	const lockName = "SHA2(CONCAT_WS(':', 'backbone', DATABASE(), ?), 256)"
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return wrap(err, "lock "+key)
	}
	defer conn.Close()
	secs := max(1, int((wait+time.Second-1)/time.Second))
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK("+lockName+", ?)", key, secs).Scan(&got); err != nil {
		return wrap(err, "lock "+key)
	}
	if !got.Valid || got.Int64 != 1 {
		return fmt.Errorf("lock %s not granted within %s: %w", key, wait, store.ErrUnavailable)
	}
	defer func() {
		// Released on this connection even if ctx is done; closing the
		// connection would release it too.
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), "DO RELEASE_LOCK("+lockName+")", key)
	}()
	return fn(ctx, ops{q: conn})
}

// execRC runs one statement in its own READ COMMITTED transaction.
func (s *Store) execRC(ctx context.Context, q string, args ...any) error {
	t, err := s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return err
	}
	if _, err := t.ExecContext(ctx, q, args...); err != nil {
		_ = t.Rollback()
		return err
	}
	return t.Commit()
}

func (s *Store) History(ctx context.Context, rt, rid string) ([]store.Event, error) {
	return s.o().queryEvents(ctx, "history of "+rt+":"+rid,
		"SELECT "+eventCols+" FROM events WHERE record_type = ? AND record_id = ? ORDER BY base_version", rt, rid)
}

const auditCols = "id, event_id, fingerprint, record_type, record_id, processing_outcome, stage, message_id, version, detail, state, created_at"

func (s *Store) audits(ctx context.Context, what, q string, args ...any) ([]store.Audit, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, wrap(err, what)
	}
	defer rows.Close()
	var out []store.Audit
	for rows.Next() {
		var (
			a                                    store.Audit
			eventID, outcome, stage, msg, detail sql.NullString
			version                              sql.NullInt64
			state                                []byte
		)
		if err := rows.Scan(&a.ID, &eventID, &a.Fingerprint, &a.RecordType, &a.RecordID, &outcome, &stage, &msg, &version, &detail, &state, &a.CreatedAt); err != nil {
			return nil, wrap(err, what)
		}
		a.EventID, a.Outcome, a.Stage, a.MessageID, a.Detail = eventID.String, outcome.String, stage.String, msg.String, detail.String
		a.Version = uint64(version.Int64)
		if state != nil {
			a.State = json.RawMessage(state)
		}
		a.CreatedAt = a.CreatedAt.UTC()
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(err, what)
	}
	return out, nil
}

func (s *Store) AuditTrail(ctx context.Context, rt, rid string) ([]store.Audit, error) {
	return s.audits(ctx, "audit trail of "+rt+":"+rid,
		"SELECT "+auditCols+" FROM event_audit_log WHERE record_type = ? AND record_id = ? ORDER BY created_at, id", rt, rid)
}

func (s *Store) AuditForEvent(ctx context.Context, eventID string) ([]store.Audit, error) {
	return s.audits(ctx, "audit of event "+eventID,
		"SELECT "+auditCols+" FROM event_audit_log WHERE event_id = ? ORDER BY created_at, id", eventID)
}

// MarkProcessed sets the outbox flag. Concurrent calls are group-committed:
// while one batch is being written, later calls queue, and the next batch
// flags all of them in one UPDATE and one commit. Under load that turns the
// merge path's second durable commit per event into a fraction of one (the
// commit, not the statement, is what costs: a redo-log flush). A caller
// returns once its own id is committed, so "ack only after processed = 1"
// holds.
func (s *Store) MarkProcessed(ctx context.Context, id string) error {
	req := &flagRequest{id: id, done: make(chan error, 1)}
	s.flags.mu.Lock()
	s.flags.pending = append(s.flags.pending, req)
	start := !s.flags.running
	s.flags.running = true
	s.flags.mu.Unlock()
	if start {
		go s.flagBatches()
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		// The batch may still commit the flag; either way the caller nacks
		// and a redelivery republishes at worst (the sinks dedup by id).
		return fmt.Errorf("mark event %s processed: %w: %w", id, store.ErrUnavailable, ctx.Err())
	}
}

// flagBatcher queues MarkProcessed calls.
type flagBatcher struct {
	mu      sync.Mutex
	pending []*flagRequest
	running bool
}

type flagRequest struct {
	id   string
	done chan error
}

// maxFlagBatch bounds one UPDATE's IN list.
const maxFlagBatch = 256

// flagBatches writes queued flags until the queue is empty.
func (s *Store) flagBatches() {
	for {
		s.flags.mu.Lock()
		n := min(len(s.flags.pending), maxFlagBatch)
		if n == 0 {
			s.flags.running = false
			s.flags.mu.Unlock()
			return
		}
		batch := s.flags.pending[:n:n]
		s.flags.pending = s.flags.pending[n:]
		s.flags.mu.Unlock()
		err := s.writeFlags(batch)
		for _, r := range batch {
			r.done <- err
		}
	}
}

// writeFlags sets processed = 1 on the batch in one READ COMMITTED
// transaction (no gap locks against concurrent merges), retrying deadlocks.
// WHERE processed = 0: the trigger refuses 1 -> 1 as any other update, and a
// second call for an id is a harmless no-op.
func (s *Store) writeFlags(batch []*flagRequest) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := make([]any, len(batch))
	for i, r := range batch {
		args[i] = r.id
	}
	q := "UPDATE events SET processed = 1 WHERE processed = 0 AND id IN (?" + strings.Repeat(", ?", len(batch)-1) + ")"
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		err = s.execRC(ctx, q, args...)
		if err == nil || !retryable(err) {
			break
		}
	}
	if err != nil {
		return wrap(err, fmt.Sprintf("mark %d event(s) processed", len(batch)))
	}
	return nil
}

func (s *Store) Unprocessed(ctx context.Context, before time.Time, limit int) ([]store.Event, error) {
	if limit <= 0 {
		limit = 500
	}
	return s.o().queryEvents(ctx, "unprocessed events",
		"SELECT "+eventCols+" FROM events WHERE processed = 0 AND created_at < ? ORDER BY created_at, record_type, record_id, base_version LIMIT ?",
		before.UTC(), limit)
}

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
		"INSERT INTO dead_letters (message_id, subscription, delivery_attempts, stage, reason, detail, event_id, record_type, record_id, data, attributes, publish_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		d.MessageID, d.Subscription, d.DeliveryAttempts, d.Stage, d.Reason, nullString(d.Detail), nullString(d.EventID),
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

const deadLetterCols = "message_id, subscription, delivery_attempts, stage, reason, detail, event_id, record_type, record_id, data, attributes, publish_time, created_at"

func scanDeadLetter(r scanner) (store.DeadLetter, error) {
	var (
		d                           store.DeadLetter
		detail, eventID, rtype, rid sql.NullString
		attrs                       []byte
		pt                          sql.NullTime
	)
	if err := r.Scan(&d.MessageID, &d.Subscription, &d.DeliveryAttempts, &d.Stage, &d.Reason, &detail, &eventID, &rtype, &rid, &d.Data, &attrs, &pt, &d.CreatedAt); err != nil {
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

func (s *Store) DeadLetter(ctx context.Context, id string) (store.DeadLetter, error) {
	d, err := scanDeadLetter(s.db.QueryRowContext(ctx, "SELECT "+deadLetterCols+" FROM dead_letters WHERE message_id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("dead letter %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return d, wrap(err, "dead letter "+id)
	}
	return d, nil
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
	q += " ORDER BY created_at DESC, message_id LIMIT ?"
	args = append(args, limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, wrap(err, "list dead letters")
	}
	defer rows.Close()
	var out []store.DeadLetter
	for rows.Next() {
		d, err := scanDeadLetter(rows)
		if err != nil {
			return nil, wrap(err, "list dead letters")
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(err, "list dead letters")
	}
	return out, nil
}
