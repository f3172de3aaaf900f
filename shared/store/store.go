// Package store defines the append-only event store that all five functions
// share: its domain types and its one interface. Drivers live in
// sub-packages (mysql); storetest is the conformance suite every driver must
// pass. The store knows no transport: nothing here mentions Pub/Sub or HTTP.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"
)

// Errors a driver reports so callers can decide without parsing messages.
var (
	// ErrNotFound: no such event, record or dead letter.
	ErrNotFound = errors.New("not found")
	// ErrVersionTaken: another writer already appended this record version
	// (the unique idx_events_aggregate refused the insert). Retry the merge.
	ErrVersionTaken = errors.New("record version already taken")
	// ErrDuplicateID: an event with this id already exists.
	ErrDuplicateID = errors.New("event id already exists")
	// ErrUnavailable wraps every error that means the database could not be
	// reached or the transaction could not complete (retryable).
	ErrUnavailable = errors.New("event store unavailable")
)

// Audit outcomes (processing_outcome). The audit log is a record's complete
// history: one row per processing step.
const (
	OutcomeAccepted    = "accepted"
	OutcomeMerged      = "merged" // accepted after a conflict was resolved
	OutcomeDuplicate   = "duplicate"
	OutcomeEcho        = "echo"
	OutcomeNoop        = "noop"
	OutcomeSuperseded  = "superseded"
	OutcomeDeferred    = "deferred" // version gap: retried later
	OutcomeRejected    = "rejected"
	OutcomeDelivered   = "delivered"
	OutcomeSkippedEcho = "skipped_echo"
	OutcomeStale       = "stale"
	// OutcomeFailed: a delivery attempt that did not succeed and that the
	// target may have applied all the same (timeout, 5xx, connection lost).
	OutcomeFailed = "failed"
	// OutcomeSending is written just before a delivery request, with the
	// fields it carries: an attempt counts from that moment (SPEC §5 echo
	// rule, §7 known state), whatever its outcome.
	OutcomeSending = "sending"
	// OutcomeRefused: the target clearly refused the attempt before acting
	// (4xx, 429, a connection never made): it did not apply it.
	OutcomeRefused    = "refused"
	OutcomeRetried    = "retried"
	OutcomeDeadLetter = "dead_lettered"
	OutcomeRedriven   = "redriven"
	OutcomePublished  = "published" // outbox recovery published an event
)

// Stages (event_audit_log.stage, error message stage).
const (
	StageMerge    = "merge"
	StageNetSuite = "netsuite"
	StageSuiteX   = "suitex"
	StageRetry    = "retry"
	StageDLQ      = "dlq"
	StageRedrive  = "redrive"
	StageOutbox   = "outbox"
)

// Event is one accepted change: a row of `events`.
type Event struct {
	ID              string
	RecordType      string
	RecordID        string
	Source          string
	Timestamp       time.Time // stored with microseconds, UTC
	BaseVersion     uint64
	Changes         json.RawMessage // a JSON object, stored byte for byte
	FullSnapshotRef *string
	Processed       bool
	CreatedAt       time.Time // set by the database
}

// Version is the record version this event created (base_version + 1).
func (e Event) Version() uint64 { return e.BaseVersion + 1 }

// Audit is one row of `event_audit_log`.
type Audit struct {
	ID          string // generated when empty
	EventID     string // empty = NULL
	Fingerprint string // 64 lowercase hex
	RecordType  string
	RecordID    string
	Outcome     string
	Stage       string
	MessageID   string
	Version     uint64 // record version concerned; 0 = NULL
	Detail      string
	// State, on the audit of an appended event, is the folded record state
	// after it, owned by the merge engine: the store keeps it in the
	// record's projection row (record_heads), not in the audit row. On a
	// delivery row (stage netsuite or suitex) it is a known-state
	// checkpoint, owned by the sinks (Reader.KnownHistory), stored as is.
	State json.RawMessage
	// Source is the raw event's source on a merge row (whose report it is).
	Source string
	// Fields is what a system reported (merge rows) or was sent (delivery
	// rows); nil = NULL. The known-state rule of SPEC §7 reads it.
	Fields    *FieldSet
	CreatedAt time.Time // set by the database
}

// FieldSet is the field set of one audit row, as digests of canonical
// values (record.Digest): bounded, and equality is all that is compared.
type FieldSet struct {
	// Base is the raw event's base_version (merge rows): the version the
	// reporting system held when it made the change.
	Base uint64 `json:"base,omitempty"`
	// Attempt is, on an outcome row (delivered, failed, refused), the id of
	// the attempt's sending row.
	Attempt string `json:"attempt,omitempty"`
	// Fields maps each field name to its value's digest.
	Fields map[string]string `json:"fields"`
}

// DeadLetter is one row of `dead_letters`: a message Pub/Sub gave up on.
// A row is identified by MessageID and ContentDigest together: a message id
// is unique only within one server history (an emulator restarted numbers
// from m0 again), while a redelivery always carries the same data.
type DeadLetter struct {
	MessageID string
	// ContentDigest is the lowercase hex SHA-256 of Data (DigestOf); the
	// driver computes it on append.
	ContentDigest    string
	Subscription     string
	DeliveryAttempts int
	Stage            string
	Reason           string
	Detail           string
	EventID          string
	RecordType       string
	RecordID         string
	Data             []byte
	Attributes       map[string]string
	PublishTime      time.Time
	CreatedAt        time.Time // set by the database
}

// DeadLetterFilter selects dead letters; zero fields match everything.
type DeadLetterFilter struct {
	Stage, Reason        string
	RecordType, RecordID string
	Since, Until         time.Time
	Limit                int // default 100
	// OldestFirst returns the oldest matches (a redrive replays in archive
	// order) instead of the newest.
	OldestFirst bool
}

// DigestOf is the content digest of dead-letter data: lowercase hex SHA-256.
func DigestOf(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

// Head is a record's current position in its version chain.
type Head struct {
	// Version is V, the number of accepted events: the next base_version.
	Version uint64
	// State is the folded state of the record's projection row (nil for a
	// new record, or when it must be rebuilt from the events).
	State json.RawMessage
	// NewestID and NewestProcessed describe the newest event (empty for a
	// new record): the merge's outbox gate reads them with the lock.
	NewestID        string
	NewestProcessed bool
	// NewestSource, NewestTimestamp and NewestSnapshotRef are the newest
	// event's, read with the head: a delivery builds the merged event of
	// the newest version from them without reading the event again.
	NewestSource      string
	NewestTimestamp   time.Time
	NewestSnapshotRef *string
}

// Probe names the duplicates LockRecord looks up with the lock: the event
// with ID (empty: none is looked up) and the newest accepted event whose raw
// message had Fingerprint.
type Probe struct {
	ID          string
	Fingerprint string
}

// Found is what a Probe found; either may be nil.
type Found struct {
	ByID          *Event
	ByFingerprint *Event
}

// Reader holds the queries available both inside and outside a transaction.
type Reader interface {
	// EventByID returns the event with this id or ErrNotFound.
	EventByID(ctx context.Context, id string) (Event, error)
	// Duplicates looks an event up by id and, in the same round trip, the
	// accepted event whose raw message had fingerprint: either may be nil.
	Duplicates(ctx context.Context, id, fingerprint string) (byID, byFingerprint *Event, err error)
	// Head returns the record's version and folded state (Version 0 for a
	// new record).
	Head(ctx context.Context, recordType, recordID string) (Head, error)
	// SystemHistory returns, in the order written, the audit rows that make
	// up what system knows of the record: the merge rows of its own reports
	// (source = system) and the delivery rows of stage system, each with
	// its field set. Rows without a field set are left out. fromVersion > 0
	// keeps only the rows written at record versions ≥ fromVersion, so the
	// cost does not grow with the history; 0 returns them all.
	SystemHistory(ctx context.Context, recordType, recordID, system string, fromVersion uint64) ([]Audit, error)
	// Checkpoint returns the version of system's newest known-state
	// checkpoint of the record, 0 if none. A checkpoint is a row of stage
	// system with State set: what the rows of the record's versions below
	// its own add up to (the sinks write and read it; the store does not
	// look inside). It reads the record's rows from the newest version down
	// to that checkpoint, not the history.
	Checkpoint(ctx context.Context, recordType, recordID, system string) (uint64, error)
	// KnownHistory returns, in the order written, what SystemHistory returns
	// and system's checkpoints, keeping the rows at versions ≥ since and the
	// rows without a version; since 0 keeps every row. With since from
	// Checkpoint, that is what a known state needs besides the checkpoint.
	KnownHistory(ctx context.Context, recordType, recordID, system string, since uint64) ([]Audit, error)
}

// Writer holds the appends available both inside and outside a transaction.
type Writer interface {
	// AppendEvent inserts ev and its audit row in one transaction (or in
	// the surrounding one). ErrVersionTaken or ErrDuplicateID on a clash.
	AppendEvent(ctx context.Context, ev Event, audit Audit) error
	// AppendAudit inserts one audit row.
	AppendAudit(ctx context.Context, a Audit) error
}

// Locked is what a holder of an Exclusive lock may use.
type Locked interface {
	Reader
	AppendAudit(ctx context.Context, a Audit) error
	// History returns the record's events in version order.
	History(ctx context.Context, recordType, recordID string) ([]Event, error)
	// AcquireSlot takes one of n slots of the named pool, shared by every
	// process on the database, waiting at most wait (ErrUnavailable then).
	// release gives it back; the slot is also released if the lock's
	// connection ends, so a crashed holder cannot keep one.
	AcquireSlot(ctx context.Context, pool string, n int, wait time.Duration) (release func(), err error)
}

// Tx is a merge transaction (READ COMMITTED).
type Tx interface {
	Reader
	Writer
	// LockRecord locks the record's projection row until the transaction
	// ends and returns its head. Concurrent mergers of one record queue here;
	// different records proceed in parallel. In the same round trip it
	// looks up what p names (SPEC §5 step 1), as Duplicates would.
	LockRecord(ctx context.Context, recordType, recordID string, p Probe) (Head, Found, error)
	// RefreshHead replaces the state of the locked head h (same version and
	// event): a no-op that refreshed a field's conflict timestamp.
	RefreshHead(ctx context.Context, recordType, recordID string, h Head, state json.RawMessage) error
}

// Store is the append-only event store.
type Store interface {
	Reader
	Writer
	// InTx runs fn in a READ COMMITTED transaction and commits when fn returns
	// nil. Deadlocks, lock-wait timeouts and ErrVersionTaken roll back and run
	// fn again, with jitter, a bounded number of times: fn must be idempotent
	// until commit.
	InTx(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error
	// History returns the record's events in version order.
	History(ctx context.Context, recordType, recordID string) ([]Event, error)
	// AuditTrail returns the record's audit rows in the order written.
	AuditTrail(ctx context.Context, recordType, recordID string) ([]Audit, error)
	// AuditForEvent returns the audit rows of one event in the order written.
	AuditForEvent(ctx context.Context, eventID string) ([]Audit, error)
	// MarkProcessed sets processed = 1 (the outbox flag); a no-op when it
	// already is.
	MarkProcessed(ctx context.Context, id string) error
	// Unprocessed returns events still processed = 0 created before `before`,
	// oldest first, at most limit.
	Unprocessed(ctx context.Context, before time.Time, limit int) ([]Event, error)
	// AppendDeadLetter archives d; inserted is false when a row with this
	// message id and the same data already exists (a redelivery:
	// idempotent). The same id with other data is a new dead letter.
	AppendDeadLetter(ctx context.Context, d DeadLetter) (inserted bool, err error)
	// DeadLetter returns the newest dead letter with this message id, or
	// ErrNotFound.
	DeadLetter(ctx context.Context, messageID string) (DeadLetter, error)
	// DeadLettersByID returns every dead letter with this message id,
	// oldest first (empty when there is none).
	DeadLettersByID(ctx context.Context, messageID string) ([]DeadLetter, error)
	// DeadLetters returns dead letters matching f, newest first (oldest
	// first with f.OldestFirst).
	DeadLetters(ctx context.Context, f DeadLetterFilter) ([]DeadLetter, error)
	// Exclusive runs fn while holding a lock named key that every process on
	// the database shares, so a check-then-act sequence outside a
	// transaction (the sinks' regression guard: read the last delivered
	// version, deliver, audit) cannot interleave with another one on the
	// same key. It waits at most wait for the lock (ErrUnavailable then).
	// fn must do its reads and appends through l, which uses the lock's own
	// connection: taking a second one from the pool while holding the lock
	// would deadlock once every pooled connection is a lock holder.
	Exclusive(ctx context.Context, key string, wait time.Duration, fn func(ctx context.Context, l Locked) error) error
	// Ping checks the database is reachable.
	Ping(ctx context.Context) error
	Close() error
}
