package bench

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
)

// RawLimit is mode (a): the merge transaction's irreducible database work
// with no backbone around it, written with plain database/sql against the
// backbone's schema. Per event, in one READ COMMITTED transaction (as the
// store runs it):
//
//	SELECT … FOR UPDATE   the record's newest event (idx_events_aggregate)
//	SELECT                the dedup probe (idx_audit_fingerprint)
//	INSERT events         the event
//	INSERT event_audit_log its audit row
//	COMMIT
//
// Nothing else: no JSON decoding, no state, no publish, no outbox flag.
// Two diagnosis variants add to exactly that transaction only what the
// merge must do beyond it: the projection row (VariantRawHead) and then
// also the outbox flag (VariantRawHeadFlag), the floor those mandated
// statements put on the merge's database work.
type RawLimit struct {
	db      *sql.DB
	variant Variant
	shape   sqlShape
	// flag sets processed = 1 (VariantMergeSQL, VariantRawHeadFlag): the
	// store's own MarkProcessed, so the flag costs what it costs in the
	// store (group-committed across concurrent merges); nil sends one
	// autocommit UPDATE per event.
	flag func(ctx context.Context, id string) error
}

// sqlShape is what an event sends beyond the raw transaction.
type sqlShape struct {
	merge bool // the merge's own statements (mergeSQL), not a's
	head  bool // a's transaction plus the projection row (mergeSQL always writes it)
	flag  bool // the outbox flag after the commit
}

var shapes = map[Variant]sqlShape{
	VariantMergeSQL:       {merge: true, flag: true},
	VariantMergeSQLNoFlag: {merge: true},
	VariantRawHead:        {head: true},
	VariantRawHeadFlag:    {head: true, flag: true},
}

// Variant selects the SQL one event sends.
type Variant int

const (
	// VariantRaw is mode (a): lock, dedup probe, two inserts, commit.
	VariantRaw Variant = iota
	// VariantMergeSQL is every statement the merge engine sends for an
	// accepted event, in its order and shape, with no Go work around them:
	// the record lock on the projection row with the outbox gate's flag and
	// both duplicate probes as subqueries (a new record: the events head
	// and the probes on their own), the event and its audit row (source and
	// field digests), the projection row with the folded state, COMMIT at
	// the session's READ COMMITTED, then the outbox flag through the
	// store's MarkProcessed (WithFlag), which rides on concurrent commits.
	// It mirrors store/mysql's statements: a diagnosis of how much of (b)
	// is SQL, not a contract.
	VariantMergeSQL
	// VariantMergeSQLNoFlag is VariantMergeSQL without the outbox flag.
	VariantMergeSQLNoFlag
	// VariantRawHead is mode (a)'s transaction, its statements unchanged,
	// plus before COMMIT the projection row as the store writes it
	// (INSERT … ON DUPLICATE KEY UPDATE the first time the worker sees the
	// record, a plain UPDATE by primary key after) with the state document
	// of VariantMergeSQL: what the merge must add to a's transaction.
	VariantRawHead
	// VariantRawHeadFlag is VariantRawHead plus the outbox flag after the
	// commit, set as VariantMergeSQL sets it (WithFlag; without it one
	// autocommit UPDATE).
	VariantRawHeadFlag
)

// NewRawLimit uses db (its DSN should be the store's normalised one, see
// store/mysql.DSN, so the driver behaves as the store's does).
func NewRawLimit(db *sql.DB) *RawLimit { return &RawLimit{db: db} }

// WithVariant returns the same runner sending v's statements.
func (r *RawLimit) WithVariant(v Variant) *RawLimit {
	return &RawLimit{db: r.db, variant: v, shape: shapes[v], flag: r.flag}
}

// WithFlag returns the same runner setting the outbox flag with flag (the
// store's MarkProcessed).
func (r *RawLimit) WithFlag(flag func(ctx context.Context, id string) error) *RawLimit {
	c := *r
	c.flag = flag
	return &c
}

// Op returns the closed-loop operation of one worker; prefix makes its
// records unique in the run.
func (r *RawLimit) Op(prefix string, worker int) Op {
	s := NewStream(prefix, SourceOf(worker), RecordsPerWorker)
	last := map[string]string{} // record -> newest event id (the outbox gate reads it)
	return func(ctx context.Context) error {
		e := s.Next()
		var err error
		if r.shape.merge {
			err = r.mergeSQL(ctx, e, last)
		} else {
			err = r.event(ctx, e, last)
		}
		s.Done(err == nil)
		return err
	}
}

// event is a's transaction; with shape.head also the projection row before
// COMMIT, with shape.flag also the outbox flag after it. last is the
// worker's record -> newest event id (the head variants choose the
// projection row's statement by it).
func (r *RawLimit) event(ctx context.Context, e Event, last map[string]string) (err error) {
	id := uuid.NewString()
	data := e.Raw(id)
	sum := sha256.Sum256(data)
	fp := hex.EncodeToString(sum[:])
	tx, err := r.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return fmt.Errorf("raw limit: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	var head uint64
	err = tx.QueryRowContext(ctx, "SELECT base_version FROM events WHERE record_type = ? AND record_id = ? ORDER BY base_version DESC LIMIT 1 FOR UPDATE",
		RecordType, e.RecordID).Scan(&head)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if e.Base != 0 {
			return fmt.Errorf("raw limit: record %s has no events, expected version %d", e.RecordID, e.Base)
		}
	case err != nil:
		return fmt.Errorf("raw limit: lock record %s: %w", e.RecordID, err)
	case head+1 != e.Base:
		return fmt.Errorf("raw limit: record %s is at version %d, expected %d", e.RecordID, head+1, e.Base)
	}
	var dup sql.NullString
	err = tx.QueryRowContext(ctx, "SELECT event_id FROM event_audit_log WHERE fingerprint = ? LIMIT 1", fp).Scan(&dup)
	if err == nil {
		return fmt.Errorf("raw limit: fingerprint %s already stored", fp)
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("raw limit: dedup probe: %w", err)
	}
	changes := fmt.Sprintf(`{"email":"%s-%d@example.com","phone":"+1-555-%07d"}`, e.RecordID, e.Seq, e.Seq)
	ts := time.Now().UTC().Truncate(time.Microsecond)
	if _, err = tx.ExecContext(ctx, "INSERT INTO events (id, record_type, record_id, source, `timestamp`, base_version, changes, processed) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
		id, RecordType, e.RecordID, e.Source, ts, e.Base, changes); err != nil {
		return fmt.Errorf("raw limit: insert event: %w", err)
	}
	if _, err = tx.ExecContext(ctx, "INSERT INTO event_audit_log (id, event_id, fingerprint, record_type, record_id, processing_outcome, stage, version) VALUES (?, ?, ?, ?, ?, 'accepted', 'merge', ?)",
		uuid.NewString(), id, fp, RecordType, e.RecordID, e.Base+1); err != nil {
		return fmt.Errorf("raw limit: insert audit: %w", err)
	}
	if r.shape.head {
		email, phone := values(e)
		if err = putHead(ctx, tx, e, id, foldedState(e, id, ts, email, phone), last); err != nil {
			return fmt.Errorf("raw limit: projection row: %w", err)
		}
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("raw limit: commit: %w", err)
	}
	if r.shape.head {
		last[e.RecordID] = id
	}
	if r.shape.flag {
		if err = r.markProcessed(ctx, id); err != nil {
			return fmt.Errorf("raw limit: mark processed: %w", err)
		}
	}
	return nil
}

// values are the two fields' new values of e (as Event.Raw has them).
func values(e Event) (email, phone string) {
	return fmt.Sprintf("%s-%d@example.com", e.RecordID, e.Seq), fmt.Sprintf("+1-555-%07d", e.Seq)
}

// foldedState is a folded state of the engine's shape and size for the two
// fields (record's format 2), after event id of e at ts.
func foldedState(e Event, id string, ts time.Time, email, phone string) string {
	field := func(v string) string {
		return fmt.Sprintf(`[%q,%d,0,%d,[%d]]`, v, e.Base+1, ts.UnixMicro(), e.Base+1)
	}
	return fmt.Sprintf(`{"format":2,"version":%d,"event_id":%q,"sources":[%q],"fields":{"email":%s,"phone":%s}}`,
		e.Base+1, id, e.Source, field(email), field(phone))
}

// putHead writes the record's projection row at e's new version as the
// store does (putHead in store/mysql): a plain UPDATE by primary key once
// the row is known to exist (last holds the record), INSERT … ON DUPLICATE
// KEY UPDATE the first time.
func putHead(ctx context.Context, tx *sql.Tx, e Event, id, st string, last map[string]string) (err error) {
	if _, projected := last[e.RecordID]; projected {
		_, err = tx.ExecContext(ctx, updateHeadSQL, e.Base+1, id, st, RecordType, e.RecordID)
	} else {
		_, err = tx.ExecContext(ctx, insertHeadSQL, RecordType, e.RecordID, e.Base+1, id, st, e.Base+1, id, st)
	}
	return err
}

// markProcessed sets the outbox flag of event id: through flag (the store's
// MarkProcessed) when set, else one autocommit UPDATE.
func (r *RawLimit) markProcessed(ctx context.Context, id string) error {
	if r.flag != nil {
		return r.flag(ctx, id)
	}
	_, err := r.db.ExecContext(ctx, "UPDATE events SET processed = 1 WHERE id = ? AND processed = 0", id)
	return err
}

// The store's statements (store/mysql), for VariantMergeSQL (and the
// projection row's two for VariantRawHead).
const (
	accepted = "('accepted','merged')"
	lockSQL  = "SELECT h.version, h.state, h.event_id," +
		" (SELECT e.processed FROM events e WHERE e.id = h.event_id)," +
		" (SELECT i.id FROM events i WHERE i.id = ?)," +
		" (SELECT a.event_id FROM event_audit_log a JOIN events f ON f.id = a.event_id" +
		" WHERE a.fingerprint = ? AND a.processing_outcome IN " + accepted + " ORDER BY f.base_version DESC LIMIT 1)" +
		" FROM record_heads h WHERE h.record_type = ? AND h.record_id = ? FOR UPDATE"
	eventsHeadSQL = "SELECT e.base_version, e.id, e.processed, e.source, e.`timestamp`, e.full_snapshot_ref FROM events e" +
		" WHERE e.record_type = ? AND e.record_id = ? ORDER BY e.base_version DESC LIMIT 1 FOR UPDATE"
	eventCols  = "id, record_type, record_id, source, `timestamp`, base_version, changes, full_snapshot_ref, processed, created_at"
	eventColsE = "e.id, e.record_type, e.record_id, e.source, e.`timestamp`, e.base_version, e.changes, e.full_snapshot_ref, e.processed, e.created_at"
	probeSQL   = "(SELECT 'id', " + eventCols + " FROM events WHERE id = ?) UNION ALL (SELECT 'fp', " + eventColsE +
		" FROM event_audit_log a JOIN events e ON e.id = a.event_id WHERE a.fingerprint = ? AND a.processing_outcome IN " + accepted +
		" ORDER BY e.base_version DESC LIMIT 1)"
	insertEventSQL = "INSERT INTO events (id, record_type, record_id, source, `timestamp`, base_version, changes, full_snapshot_ref, processed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
	insertAuditSQL = "INSERT INTO event_audit_log (id, event_id, fingerprint, record_type, record_id, processing_outcome, stage, message_id, version, detail, state, source, fields) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
	insertHeadSQL  = "INSERT INTO record_heads (record_type, record_id, version, event_id, state) VALUES (?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE version = ?, event_id = ?, state = ?"
	updateHeadSQL  = "UPDATE record_heads SET version = ?, event_id = ?, state = ? WHERE record_type = ? AND record_id = ?"
)

func (r *RawLimit) mergeSQL(ctx context.Context, e Event, last map[string]string) (err error) {
	id := uuid.NewString()
	data := e.Raw(id)
	sum := sha256.Sum256(data)
	fp := hex.EncodeToString(sum[:])
	tx, err := r.db.BeginTx(ctx, nil) // the pool's sessions are READ COMMITTED (store/mysql.Open)
	if err != nil {
		return fmt.Errorf("merge sql: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	probe := func(q string, args ...any) error {
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("merge sql: %w", err)
		}
		for rows.Next() {
		}
		return errors.Join(rows.Err(), rows.Close())
	}
	_, projected := last[e.RecordID]
	if projected {
		err = probe(lockSQL, id, fp, RecordType, e.RecordID)
	} else {
		// A new record: no projection row to lock; the events head, then
		// both probes.
		if err = probe(lockSQL, id, fp, RecordType, e.RecordID); err == nil {
			if err = probe(eventsHeadSQL, RecordType, e.RecordID); err == nil {
				err = probe(probeSQL, id, fp)
			}
		}
	}
	if err != nil {
		return err
	}
	ts := time.Now().UTC().Truncate(time.Microsecond)
	email, phone := values(e)
	changes := fmt.Sprintf(`{"email":%q,"phone":%q}`, email, phone)
	if _, err = tx.ExecContext(ctx, insertEventSQL, id, RecordType, e.RecordID, e.Source, ts, e.Base, changes, nil, false); err != nil {
		return fmt.Errorf("merge sql: insert event: %w", err)
	}
	digest := func(v string) string {
		d := sha256.Sum256([]byte(fmt.Sprintf("%q", v)))
		return hex.EncodeToString(d[:])
	}
	fields := fmt.Sprintf(`{"base":%d,"fields":{"email":%q,"phone":%q}}`, e.Base, digest(email), digest(phone))
	if _, err = tx.ExecContext(ctx, insertAuditSQL, uuid.NewString(), id, fp, RecordType, e.RecordID, "accepted", "merge", id, e.Base+1, nil, nil, e.Source, fields); err != nil {
		return fmt.Errorf("merge sql: insert audit: %w", err)
	}
	// A folded state of the engine's shape and size for two fields.
	if err = putHead(ctx, tx, e, id, foldedState(e, id, ts, email, phone), last); err != nil {
		return fmt.Errorf("merge sql: projection row: %w", err)
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("merge sql: commit: %w", err)
	}
	last[e.RecordID] = id
	if r.shape.flag {
		if err = r.markProcessed(ctx, id); err != nil {
			return fmt.Errorf("merge sql: mark processed: %w", err)
		}
	}
	return nil
}

// RunN does exactly n events with conc workers (newOp called once per
// worker) and returns how many succeeded and the first error: the counted
// passes, where the number of events matters, not the time.
func RunN(ctx context.Context, conc, n int, newOp func(worker int) Op) (int, error) {
	var (
		mu        sync.Mutex
		next      int
		succeeded int
		firstErr  error
		wg        sync.WaitGroup
	)
	take := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if next >= n {
			return false
		}
		next++
		return true
	}
	for w := range conc {
		op := newOp(w)
		wg.Go(func() {
			for ctx.Err() == nil && take() {
				err := op(ctx)
				mu.Lock()
				if err == nil {
					succeeded++
				} else if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return succeeded, firstErr
}
