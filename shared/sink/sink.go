// Package sink is the machinery both sinks share (SPEC §6, §7): the Runner
// that brings a target up to date for the record a merged message names
// (env check, decode, known state, one request with what the target is
// missing, audit before and after), the HTTP client every target uses, the
// classification of target answers into failures, and the push handler the
// NetSuiteSink and SuiteXSink functions are made of. A target (netsuite,
// suitex) only knows how to speak to its system; everything about the
// backbone's bookkeeping lives here. known.go states the ordering rule of
// the known state, to check against SPEC §7.
//
// The Runner never publishes: the function handler reports its failures to
// events.error.{env}, and Retry calls Runner.Deliver again on the original
// message and nacks on failure.
package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/record"
	"github.com/backbone-sync/backbone/shared/store"
)

// Target is one system the backbone delivers to.
type Target interface {
	// Name is the target's stage: store.StageNetSuite or store.StageSuiteX.
	// It is also the source name the target's own events carry.
	Name() string
	// Deliver sends one delivery. It returns nil when the target has the
	// change (2xx, or its "already applied" answer) and otherwise a
	// *failure.Failure saying whether a retry can help and whether the
	// target clearly did not apply it (NotApplied).
	Deliver(ctx context.Context, d Delivery) error
}

// Delivery is what one request brings a target: the merged event of the
// record's newest version N whose changes are exactly the fields the target
// is missing, with their values at N (SPEC §7).
type Delivery struct {
	event.Merged
	// SinceVersion is the newest version delivered to the target before
	// (0 if none).
	SinceVersion uint64
	// IdempotencyKey is {event id of N}:{first 16 hex of the SHA-256 of
	// the canonical changes sent}: two deliveries at one version may carry
	// different fields.
	IdempotencyKey string
}

// Limited is implemented by targets with a concurrency share that every
// instance and Retry respect together (NetSuite's account-wide limit).
type Limited interface {
	MaxConcurrency() int
}

// SecretHolder is implemented by targets that hold credentials. The Runner
// removes every value it returns from failure details before they are
// audited, logged or returned, so that a target echoing a header back in an
// error body cannot leak one.
type SecretHolder interface {
	Secrets() []string
}

// Failure reasons the Runner itself produces.
const (
	ReasonInvalidMessage = "invalid_message"
	// ReasonReservedRecordType: a stress record (event.Reserved).
	ReasonReservedRecordType = "reserved_record_type"
)

// Runner delivers merged messages to one target.
type Runner struct {
	env    config.Env
	target Target
	store  store.Store
	log    *slog.Logger
	// checkpointEvery: rows since the last known-state checkpoint that
	// make a delivery write one (checkpoint.go); 0 never does.
	checkpointEvery int
}

// NewRunner builds the Runner of target in env. log may be nil (discard).
func NewRunner(env config.Env, target Target, st store.Store, log *slog.Logger) *Runner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{env: env, target: target, store: st, log: log.With("target", target.Name()), checkpointEvery: defaultCheckpointEvery}
}

// CheckpointEvery sets how many rows since the last known-state checkpoint
// make a delivery write one (0: never), and the version from which a record
// is read from its newest checkpoint on; tests use small numbers so that
// every schedule crosses checkpoints.
func (r *Runner) CheckpointEvery(n int) *Runner {
	r.checkpointEvery = max(0, n)
	return r
}

// Target returns the runner's target name (its stage).
func (r *Runner) Target() string { return r.target.Name() }

// Deliver brings the target up to date for the record a merged message
// names, and returns the outcome (store.Outcome*: delivered, skipped_echo,
// stale, or rejected / failed with an error). Every error is a
// *failure.Failure with Stage set to the target name and, once the message
// decoded, EventID, RecordType and RecordID set.
//
// The message only says which record: what is sent is computed from the
// store and the target's known state (known.go), so a delivery never
// regresses the target and never loses a field, whichever message or retry
// triggers it, and k versions stored before it runs cost one request.
// Deliveries of one record to one target are serialised by a lock shared
// through the database (every instance and Retry); other records and
// targets run in parallel.
func (r *Runner) Deliver(ctx context.Context, m message.Message) (outcome string, err error) {
	// A panic is a failed delivery (failure.Recover). Retry calls Deliver
	// without a function's middleware, so Deliver recovers on its own, and
	// redacts the target's secrets from the panic's text.
	outcome = store.OutcomeFailed
	err = failure.RecoverRedacted(r.target.Name(), r.log, r.redact)(func(ctx context.Context, m message.Message) error {
		var err error
		outcome, err = r.deliver(ctx, m)
		return err
	})(ctx, m)
	return outcome, err
}

func (r *Runner) deliver(ctx context.Context, m message.Message) (string, error) {
	stage := r.target.Name()
	if inv := m.Invalid; inv != nil {
		// A CloudEvent the backbone must not act on (another type, or
		// broken): bad input, parked with its reason, never delivered.
		f := failure.Permanent(stage, inv.Reason, fmt.Sprintf("message %s: %s", m.ID, inv.Detail))
		r.log.WarnContext(ctx, "merged message rejected", "message_id", m.ID, "reason", f.Reason, "detail", f.Detail)
		return store.OutcomeRejected, f
	}
	if got := m.Attributes[publish.AttrEnv]; got != string(r.env) {
		detail := fmt.Sprintf("message %s carries env %q, this is %s", m.ID, got, r.env)
		if got == "" {
			detail = fmt.Sprintf("message %s has no env attribute, this is %s: only the backbone's guarded publisher writes merged messages", m.ID, r.env)
		}
		f := failure.Permanent(stage, failure.ReasonWrongEnv, detail)
		r.log.WarnContext(ctx, "merged message rejected", "message_id", m.ID, "reason", f.Reason, "detail", f.Detail)
		return store.OutcomeRejected, f
	}
	ev, err := DecodeMerged(m.Data)
	if err != nil {
		f := failure.Permanent(stage, ReasonInvalidMessage, fmt.Sprintf("message %s: %v", m.ID, err))
		if id := m.Attributes[event.AttrEventID]; id != "" {
			f.EventID = id
		}
		r.log.WarnContext(ctx, "merged message rejected", "message_id", m.ID, "reason", f.Reason, "detail", f.Detail)
		return store.OutcomeRejected, f
	}
	if event.Reserved(ev.RecordType) {
		// A stress record must never reach a target, however its message got
		// here (the merge never publishes one; this is the second lock).
		f := r.fail(failure.Permanent(stage, ReasonReservedRecordType,
			fmt.Sprintf("message %s: record type %s is reserved for `backbone stress` and never delivered", m.ID, ev.RecordType)), ev)
		r.log.WarnContext(ctx, "merged message rejected", "message_id", m.ID, "reason", f.Reason, "detail", f.Detail)
		return store.OutcomeRejected, f
	}
	if id := m.Attributes[event.AttrEventID]; id != "" && id != ev.ID {
		f := r.fail(failure.Permanent(stage, ReasonInvalidMessage,
			fmt.Sprintf("message %s: attribute event_id %q differs from the event's id %q", m.ID, id, ev.ID)), ev)
		r.log.WarnContext(ctx, "merged message rejected", "message_id", m.ID, "reason", f.Reason, "detail", f.Detail)
		return store.OutcomeRejected, f
	}
	fp, err := Fingerprint(ev)
	if err != nil {
		// Decode accepted the changes as JSON, so this is not expected; a
		// number JCS cannot represent is the only known way here.
		f := r.fail(failure.Permanent(stage, ReasonInvalidMessage, fmt.Sprintf("message %s: %v", m.ID, err)), ev)
		return store.OutcomeRejected, f
	}
	audit := store.Audit{
		EventID: ev.ID, Fingerprint: fp, RecordType: ev.RecordType, RecordID: ev.RecordID,
		Stage: stage, MessageID: m.ID, Version: ev.Version,
	}
	log := r.log.With("event_id", ev.ID, "record_type", ev.RecordType, "record_id", ev.RecordID,
		"version", ev.Version, "message_id", m.ID)
	var (
		got  string
		derr error
	)
	if ev.Source == stage && r.nothingMissing(ctx, ev) {
		// The source's own sink usually has nothing to send: the target
		// reported these values itself. That is decided without the lock,
		// which is taken only when something is missing. Skipping unlocked
		// is safe: a delivery in flight meanwhile only adds to what the
		// target knows, and its own failure is parked and retried.
		audit.Outcome = store.OutcomeSkippedEcho
		audit.Detail = "source is the target itself and the target already holds the store's value of every field"
		return r.skip(ctx, r.store, log, audit, ev)
	}
	key := "deliver\x00" + stage + "\x00" + ev.RecordType + "\x00" + ev.RecordID
	lerr := r.store.Exclusive(ctx, key, lockWait, func(ctx context.Context, l store.Locked) error {
		got, derr = r.bringUpToDate(ctx, l, log, audit, ev)
		return nil
	})
	if lerr != nil {
		f := r.fail(failure.Retryable(stage, failure.ReasonStoreUnavailable, fmt.Sprintf("serialise delivery: %v", lerr)), ev)
		log.WarnContext(ctx, "delivery failed", "reason", f.Reason, "retryable", true, "detail", f.Detail)
		return store.OutcomeFailed, f
	}
	return got, derr
}

// lockWait bounds how long a delivery waits for another delivery of the
// same record to the same target (at most a few target requests).
const lockWait = 60 * time.Second

// Waits of the concurrency share and of a 429's Retry-After.
const (
	// slotWait: a delivery that finds every slot taken this long gives up
	// with a retryable failure (not a loss: Retry runs it again).
	slotWait = 30 * time.Second
	// maxRetryAfter: a longer Retry-After is left to Retry's backoff.
	maxRetryAfter = 30 * time.Second
	// maxTries bounds the requests of one delivery (429s waited out).
	maxTries = 3
)

// errAheadOfStore: the message names a version the store does not hold.
var errAheadOfStore = errors.New("message ahead of the store")

// Reasons of the delivery machinery.
const (
	// ReasonAheadOfStore: the message names a version the store does not
	// hold (yet).
	ReasonAheadOfStore = "ahead_of_store"
	// ReasonNoSlot: every slot of the target's concurrency share stayed
	// taken for slotWait.
	ReasonNoSlot = "concurrency_share_busy"
)

// bringUpToDate runs under the record's delivery lock: compute what the
// target is missing, send it in one request, audit before and after.
func (r *Runner) bringUpToDate(ctx context.Context, l store.Locked, log *slog.Logger, audit store.Audit, trig event.Merged) (string, error) {
	stage := r.target.Name()
	unavailable := func(what string, err error) (string, error) {
		f := r.fail(storeFailure(stage, what, err), trig)
		log.WarnContext(ctx, "delivery failed", "reason", f.Reason, "retryable", f.Retryable, "detail", f.Detail)
		return store.OutcomeFailed, f
	}
	st, head, err := r.state(ctx, l, trig)
	if errors.Is(err, errAheadOfStore) {
		// Not an outage (a nack would hold the record's ordering key for
		// good): park it, so Retry tries again and dead-letters it if the
		// store never catches up (a message from a restored backup's
		// future, or another store's).
		f := r.fail(failure.Retryable(stage, ReasonAheadOfStore, err.Error()), trig)
		log.WarnContext(ctx, "delivery failed", "reason", f.Reason, "retryable", true, "detail", f.Detail)
		return store.OutcomeFailed, f
	}
	if err != nil {
		return unavailable("read record state", err)
	}
	hist, err := readHistory(ctx, l, trig.RecordType, trig.RecordID, stage, head.Version, r.checkpointEvery)
	if err != nil {
		return unavailable("read what the target knows", err)
	}
	k := hist.knowledge()
	fields := k.missing(st)
	if len(fields) == 0 {
		audit.Outcome = store.OutcomeStale
		audit.Detail = fmt.Sprintf("the target already holds the store's value of every field at version %d", st.Version)
		if trig.Source == stage {
			audit.Outcome = store.OutcomeSkippedEcho
			audit.Detail = "source is the target itself and " + audit.Detail
		}
		// trig.Version ≤ head.Version, read under the lock (r.state).
		audit.State = hist.checkpoint(audit.Version, r.checkpointEvery)
		return r.skip(ctx, l, log, audit, trig)
	}
	d, err := r.delivery(ctx, l, trig, st, head, fields, k.lastDelivered)
	if err != nil {
		return unavailable("build delivery", err)
	}
	sent := &store.FieldSet{Fields: record.Digests(d.Changes)}
	names := strings.Join(slices.Sorted(maps.Keys(d.Changes)), ", ")
	base := store.Audit{
		EventID: d.ID, Fingerprint: audit.Fingerprint, RecordType: d.RecordType, RecordID: d.RecordID,
		Stage: stage, MessageID: audit.MessageID, Version: d.Version,
	}
	log = log.With("sent_version", d.Version, "fields", len(d.Changes))
	// The checkpoint rides on the first outcome row written.
	var ck json.RawMessage
	if d.Version <= head.Version {
		ck = hist.checkpoint(d.Version, r.checkpointEvery)
	}
	for try := 1; ; try++ {
		release := func() {}
		if lim, ok := r.target.(Limited); ok {
			rel, err := l.AcquireSlot(ctx, stage, lim.MaxConcurrency(), slotWait)
			if err != nil {
				f := r.fail(failure.Retryable(stage, ReasonNoSlot, fmt.Sprintf(
					"no slot of the %s concurrency share (%d) within %s: %v", stage, lim.MaxConcurrency(), slotWait, err)), trig)
				f.NotApplied = true
				log.WarnContext(ctx, "delivery deferred", "reason", f.Reason, "detail", f.Detail)
				return store.OutcomeFailed, f
			}
			release = rel
		}
		sending := base
		sending.ID = newRowID()
		sending.Outcome = store.OutcomeSending
		sending.Fields = sent
		sending.Detail = fmt.Sprintf("sending version %d: %s", d.Version, names)
		if err := l.AppendAudit(ctx, sending); err != nil {
			release()
			return unavailable("audit the attempt before sending", err)
		}
		derr := r.target.Deliver(ctx, d)
		release()
		done := base
		done.Fields = &store.FieldSet{Attempt: sending.ID, Fields: sent.Fields}
		done.State = ck
		if derr == nil {
			done.Outcome = store.OutcomeDelivered
			done.Detail = fmt.Sprintf("delivered version %d: %s", d.Version, names)
			if err := l.AppendAudit(ctx, done); err != nil {
				// The target has the change but the store does not know: the
				// attempt stays in doubt (unknown), so the retry sends the
				// fields again, which both targets accept.
				f := r.fail(failure.Retryable(stage, failure.ReasonStoreUnavailable,
					fmt.Sprintf("delivered, but the delivery could not be audited: %v", err)), trig)
				log.ErrorContext(ctx, "delivered but not audited", "reason", f.Reason, "detail", f.Detail)
				return store.OutcomeFailed, f
			}
			log.InfoContext(ctx, "delivered", "outcome", store.OutcomeDelivered)
			return store.OutcomeDelivered, nil
		}
		f, ok := failure.As(derr)
		if !ok {
			f = failure.Retryable(stage, failure.ReasonInternal, derr.Error())
		}
		f = r.fail(f, trig)
		done.Outcome = store.OutcomeFailed
		if f.NotApplied {
			done.Outcome = store.OutcomeRefused
		}
		done.Detail = f.Reason + ": " + f.Detail
		if aerr := l.AppendAudit(ctx, done); aerr != nil {
			// The failure goes to the error topic either way; without its
			// row the attempt counts as in doubt, which only resends.
			log.ErrorContext(ctx, "audit of failed delivery not written", "error", r.redact(aerr.Error()))
		} else {
			ck = nil
		}
		if f.RetryAfter > 0 && f.RetryAfter <= maxRetryAfter && try < maxTries {
			log.InfoContext(ctx, "target asked to wait", "reason", f.Reason, "retry_after", f.RetryAfter.String())
			select {
			case <-ctx.Done():
			case <-time.After(f.RetryAfter):
				continue
			}
		}
		log.WarnContext(ctx, "delivery failed", "reason", f.Reason, "retryable", f.Retryable, "detail", f.Detail)
		return store.OutcomeFailed, f
	}
}

// nothingMissing says, without the delivery lock, whether the target
// already holds the store's value of every field of trig's record; any
// doubt (an error included) is false, and the locked path decides. So is a
// history long enough for a checkpoint, which only the locked path may
// write.
func (r *Runner) nothingMissing(ctx context.Context, trig event.Merged) bool {
	st, head, err := r.state(ctx, r.store, trig)
	if err != nil {
		return false
	}
	hist, err := readHistory(ctx, r.store, trig.RecordType, trig.RecordID, r.target.Name(), head.Version, r.checkpointEvery)
	if err != nil {
		return false
	}
	if r.checkpointEvery > 0 && trig.Version > hist.since && len(hist.pending(trig.Version)) >= r.checkpointEvery {
		return false
	}
	return len(hist.knowledge().missing(st)) == 0
}

// recordReader is what reading a record's state needs: the store, or a
// delivery lock's connection.
type recordReader interface {
	Head(ctx context.Context, recordType, recordID string) (store.Head, error)
	History(ctx context.Context, recordType, recordID string) ([]store.Event, error)
}

// state is the record's folded state at its newest version, and the head
// it was read with.
func (r *Runner) state(ctx context.Context, l recordReader, trig event.Merged) (*record.State, store.Head, error) {
	head, err := l.Head(ctx, trig.RecordType, trig.RecordID)
	if err != nil {
		return nil, head, err
	}
	if head.Version < trig.Version {
		return nil, head, fmt.Errorf("record %s:%s is at version %d, the message names version %d (not this store's event?): %w",
			trig.RecordType, trig.RecordID, head.Version, trig.Version, errAheadOfStore)
	}
	st, err := stateAt(ctx, l, head, trig.RecordType, trig.RecordID)
	return st, head, err
}

// stateAt is the record's folded state at head: the one stored with it, or,
// when none is usable, the fold of the record's events.
func stateAt(ctx context.Context, l recordReader, head store.Head, rt, rid string) (*record.State, error) {
	if st, ok := record.Parse(head); ok {
		return st, nil
	}
	evs, err := l.History(ctx, rt, rid)
	if err != nil {
		return nil, err
	}
	return record.Fold(evs)
}

// delivery builds the request body: the merged event of version N with the
// missing fields' values at N. The newest event's own fields come with the
// head; only a head that does not describe the state's event (the state
// was rebuilt while a newer event landed) reads the event.
func (r *Runner) delivery(ctx context.Context, l store.Locked, trig event.Merged, st *record.State, head store.Head, fields []string, since uint64) (Delivery, error) {
	newest := store.Event{ID: head.NewestID, Source: head.NewestSource, Timestamp: head.NewestTimestamp,
		BaseVersion: head.Version - 1, FullSnapshotRef: head.NewestSnapshotRef}
	if head.NewestID != st.EventID || head.Version != st.Version {
		ev, err := l.EventByID(ctx, st.EventID)
		if err != nil {
			return Delivery{}, err
		}
		newest = ev
	}
	changes := make(map[string]json.RawMessage, len(fields))
	for _, f := range fields {
		changes[f] = st.Fields[f].Value
	}
	sum, err := record.ChangesDigest(changes)
	if err != nil {
		return Delivery{}, err
	}
	return Delivery{
		Merged: event.Merged{
			ID: newest.ID, RecordType: trig.RecordType, RecordID: trig.RecordID, Source: newest.Source,
			Timestamp: event.NewTime(newest.Timestamp), BaseVersion: newest.BaseVersion, Version: newest.BaseVersion + 1,
			Changes: changes, FullSnapshotRef: newest.FullSnapshotRef, Conflicts: []event.Conflict{},
		},
		SinceVersion:   since,
		IdempotencyKey: newest.ID + ":" + sum,
	}, nil
}

// storeFailure classifies a store error with the one table (SPEC §6): a
// statement the server refused for its content is permanent, with a reason
// naming the refusal; an unknown server error is retried and says so;
// everything else is the store being unreachable.
func storeFailure(stage, what string, err error) *failure.Failure {
	detail := fmt.Sprintf("%s: %v", what, err)
	switch store.Classify(err) {
	case store.ClassRefused:
		reason := failure.ReasonStoreError
		if re, ok := store.AsRefused(err); ok {
			reason = re.Reason()
		}
		return failure.Permanent(stage, reason, "the database refused the delivery's bookkeeping; not retried: "+detail)
	case store.ClassUnclassified:
		return failure.Retryable(stage, failure.ReasonStoreError, "unclassified database error, retried by default: "+detail)
	}
	return failure.Retryable(stage, failure.ReasonStoreUnavailable, detail)
}

// newRowID is a time-ordered id for an audit row the sink must refer to.
func newRowID() string {
	if id, err := uuid.NewV7(); err == nil {
		return id.String()
	}
	return uuid.NewString()
}

// skip audits a decision not to deliver and acks.
func (r *Runner) skip(ctx context.Context, st interface {
	AppendAudit(ctx context.Context, a store.Audit) error
}, log *slog.Logger, a store.Audit, ev event.Merged) (string, error) {
	if err := st.AppendAudit(ctx, a); err != nil {
		f := r.fail(failure.Retryable(r.target.Name(), failure.ReasonStoreUnavailable,
			fmt.Sprintf("audit %s: %v", a.Outcome, err)), ev)
		log.WarnContext(ctx, "skip not audited", "outcome", a.Outcome, "reason", f.Reason, "detail", f.Detail)
		return store.OutcomeFailed, f
	}
	log.InfoContext(ctx, "not delivered", "outcome", a.Outcome, "detail", a.Detail)
	return a.Outcome, nil
}

// fail completes f with the event's identity and strips secrets.
func (r *Runner) fail(f *failure.Failure, ev event.Merged) *failure.Failure {
	out := *f
	out.Stage = r.target.Name()
	out.EventID, out.RecordType, out.RecordID = ev.ID, ev.RecordType, ev.RecordID
	out.Detail = truncate(r.redact(out.Detail), maxFailureDetail)
	return &out
}

func (r *Runner) redact(s string) string {
	if h, ok := r.target.(SecretHolder); ok {
		return Redact(s, h.Secrets()...)
	}
	return s
}

// Bounds on failure text: an error message and an audit row stay small
// whatever a target answered.
const (
	maxFailureDetail = 2048
	maxAuditDetail   = 2048
)

// DecodeMerged reads and checks a merged event: the fields a delivery relies
// on must be there and consistent. Unknown fields are ignored so that a
// newer merge engine can add some without stopping the sinks.
func DecodeMerged(data []byte) (event.Merged, error) {
	var ev event.Merged
	if len(data) == 0 {
		return ev, errors.New("empty data: expected a merged event")
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		return ev, fmt.Errorf("not a merged event: %w", err)
	}
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"id", ev.ID}, {"record_type", ev.RecordType}, {"record_id", ev.RecordID}, {"source", ev.Source},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return ev, fmt.Errorf("merged event lacks %v", missing)
	}
	if ev.Version != ev.BaseVersion+1 {
		return ev, fmt.Errorf("merged event %s: version %d is not base_version %d + 1", ev.ID, ev.Version, ev.BaseVersion)
	}
	if len(ev.Changes) == 0 {
		return ev, fmt.Errorf("merged event %s has no changes", ev.ID)
	}
	return ev, nil
}
