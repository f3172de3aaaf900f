// Package merge is the heart of the backbone (SPEC §5): it validates a raw
// event, fingerprints it, deduplicates it, drops echoes of the backbone's own
// deliveries, resolves concurrent edits, appends the accepted change to the
// event store and publishes the merged event, with an outbox flag so that a
// crash between commit and publish loses nothing.
//
// The engine knows Pub/Sub only as a publish.Publisher and the trigger only
// as a message.Message. It does not publish error messages: it returns a
// *failure.Failure and the caller (the Merge function, or Retry re-running
// the stage) decides how to park it.
//
// Cost. A merge reads the record's folded state from the newest event's
// audit row (store.Head, one index probe) instead of replaying the history,
// so it costs the same for a record with 10 or 10,000 events (see
// bench_test.go for the figures and the statement count).
//
// Order. The merged messages of a record must leave in version order,
// though commits and publishes are separate steps:
//   - In one process, a per-record lock (keyLocks) is held from the record
//     lock in the database through the publish after commit, so v2 is
//     never published before v1's publish has returned.
//   - Across processes, the outbox gate: version n+1 is never stored while
//     version n is still processed = 0. The merge that finds its
//     predecessor unpublished publishes it first (and flags it), then
//     stores and publishes its own. So at most a record's newest event is
//     ever unpublished, and flush or any later merge of the record puts it
//     out in order. The price is a possible duplicate on the topic (two
//     processes publishing one event), which the sinks absorb by event id
//     and version.
//   - Publishing inside the transaction was rejected: a publish that
//     succeeds followed by a commit that fails would deliver a change the
//     store never accepted.
//   - Pub/Sub ordering keys ({record_type}:{record_id}) keep the order on
//     the topic and in delivery.
package merge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"unicode/utf8"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/record"
	"github.com/backbone-sync/backbone/shared/store"
)

// Reasons of the merge stage's own failures (validation failures carry the
// event.Reason* codes). Stable: operators filter on them.
const (
	ReasonIDConflict    = "id_conflict"
	ReasonVersionGap    = "version_gap"
	ReasonPublishFailed = "publish_failed"
)

// Conflict resolutions and rules (event.Conflict).
const (
	ResolutionIncomingWon     = "incoming_won"
	ResolutionIncomingDropped = "incoming_dropped"
	RuleLaterTimestamp        = "later_timestamp"
	RuleSourcePriority        = "source_priority"
	RuleStoredValueStays      = "stored_value_stays"
	RuleEcho                  = "echo"
)

// maxRounds bounds how often one message re-runs its transaction for work
// done between rounds (publishing an unpublished predecessor, rebuilding a
// state, a concurrent insert of the same id). InTx has its own retries for
// deadlocks and lost version races.
const maxRounds = 4

// echoWindow bounds the record versions of a source's history that the
// echo rule and the re-edit test read: an echo is a re-emission of a recent
// delivery, and reading the newest versions only keeps a merge's cost flat
// in the history length.
const echoWindow = 64

// Engine merges raw events. It is safe for concurrent use; one per process.
type Engine struct {
	store   store.Store
	pub     publish.Publisher
	env     config.Env
	topic   string
	sources []string
	log     *slog.Logger
	locks   *keyLocks
}

// New builds an engine over st, publishing through pub (already wrapped in
// publish.Guard) to env's merged topic. sources are the accepted sources in
// priority order (config.Config.Sources): on equal timestamps the earlier
// one wins a conflict.
func New(st store.Store, pub publish.Publisher, env config.Env, sources []string, log *slog.Logger) *Engine {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Engine{
		store:   st,
		pub:     pub,
		env:     env,
		topic:   env.Names().MergedTopic,
		sources: slices.Clone(sources),
		log:     log,
		locks:   newKeyLocks(),
	}
}

// Result says what Process did with a message.
type Result struct {
	// Outcome is the audit outcome: accepted, merged, duplicate, echo, noop,
	// superseded (and rejected or deferred alongside a failure).
	Outcome     string
	RecordType  string
	RecordID    string
	Fingerprint string
	// EventID is the stored event (accepted, merged), the earlier event
	// (duplicate) or the incoming event's id otherwise.
	EventID string
	// Version is the version created (accepted, merged), the earlier event's
	// (duplicate) or the record's current version otherwise.
	Version   uint64
	Conflicts []event.Conflict
	// Published lists the events this call published to the merged topic, in
	// order: an earlier event left unpublished (outbox recovery), then the
	// new one.
	Published []string
}

// Process runs SPEC §5 on one raw message and writes its audit row. A nil
// error means the message is done (ack). Otherwise the error is a
// *failure.Failure: permanent for bad input (rejected), retryable for
// version_gap (deferred), store_unavailable, store_error and publish_failed.
func (e *Engine) Process(ctx context.Context, m message.Message) (Result, error) {
	raw, derr := event.DecodeRaw(m.Data, e.sources)
	res := Result{RecordType: raw.RecordType, RecordID: raw.RecordID}
	if derr == nil {
		res.Fingerprint = event.Fingerprint(raw)
	} else {
		// Not fingerprintable: the audit row still needs one, and the hash of
		// the data ties every redelivery of the same bad message together.
		res.Fingerprint = event.HashHex(m.Data)
	}
	if env := m.Attributes[publish.AttrEnv]; env != "" && env != string(e.env) {
		return e.reject(ctx, m, res, failure.ReasonWrongEnv,
			fmt.Sprintf("message env attribute is %q, this is the %s backbone: another environment's message must never merge here", env, e.env))
	}
	if derr != nil {
		ve, ok := event.AsValidation(derr)
		if !ok {
			return e.reject(ctx, m, res, event.ReasonInvalidJSON, derr.Error())
		}
		return e.reject(ctx, m, res, ve.Reason, ve.Detail)
	}
	probeID := raw.ID != ""
	if !probeID {
		// A derived id is a function of the fingerprint: the fingerprint
		// probe finds every earlier copy, so the id probe is skipped.
		raw.ID = event.DerivedID(res.Fingerprint)
	}
	res.EventID = raw.ID

	unlock, err := e.locks.lock(ctx, publish.OrderingKey(raw.RecordType, raw.RecordID))
	if err != nil {
		return res, e.storeFailure(res, fmt.Errorf("wait for record %s:%s: %w", raw.RecordType, raw.RecordID, err))
	}
	defer unlock()
	return e.merge(ctx, m, raw, res, probeID)
}

// reject audits a permanent failure and returns it. If even the audit row
// cannot be written the failure becomes retryable: Retry runs the stage
// again and the rejection is audited then (every message gets its row).
func (e *Engine) reject(ctx context.Context, m message.Message, res Result, reason, detail string) (Result, error) {
	res.Outcome = store.OutcomeRejected
	f := failure.Permanent(store.StageMerge, reason, detail)
	f.RecordType, f.RecordID = res.RecordType, res.RecordID
	err := e.store.AppendAudit(ctx, store.Audit{
		Fingerprint: res.Fingerprint,
		RecordType:  res.RecordType,
		RecordID:    res.RecordID,
		Outcome:     store.OutcomeRejected,
		Stage:       store.StageMerge,
		MessageID:   messageID(m.ID),
		Detail:      reason + ": " + detail,
	})
	if err != nil {
		return res, e.storeFailure(res, fmt.Errorf("audit rejection (%s: %s): %w", reason, detail, err))
	}
	return res, f
}

// decision is what one run of the merge transaction decided.
type decision struct {
	outcome   string
	head      store.Head
	event     store.Event // stored (accepted, merged) or earlier (duplicate)
	conflicts []event.Conflict
	fail      *failure.Failure
	// pending is the record's newest event, still unpublished: it must go
	// out before a newer one is stored (errPending).
	pending *store.Event
	// nudge: nothing was stored, but the source holds a value the store
	// does not (a conflict loser, an echo of an old value): its sink must
	// run to send the store's value back (SPEC §7).
	nudge bool
	// reEditID is the id derived for a genuine re-edit (SPEC §5 step 1).
	reEditID string
}

var (
	// errPending rolls the transaction back so the unpublished predecessor
	// can be published outside it, then the merge runs again.
	errPending = errors.New("predecessor not yet published")
	// errRebuild rolls back so the record state can be rebuilt from the
	// events outside the transaction (no second connection held inside).
	errRebuild = errors.New("record state must be rebuilt")
	// errRerun: another writer inserted this event id concurrently; run
	// again and let the id probe see it.
	errRerun = errors.New("event id inserted concurrently")
)

func (e *Engine) merge(ctx context.Context, m message.Message, raw event.Raw, res Result, probeID bool) (Result, error) {
	var (
		d       decision
		rebuilt *record.State
	)
	for round := 0; ; round++ {
		err := e.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			d = decision{}
			return e.decide(ctx, tx, m, raw, res.Fingerprint, probeID, rebuilt, &d)
		})
		if err == nil {
			break
		}
		if round == maxRounds-1 {
			if errors.Is(err, errPending) {
				return res, e.publishFailure(res, d.pending.ID, fmt.Errorf("event %s is still unpublished after %d rounds", d.pending.ID, maxRounds))
			}
			return res, e.storeFailure(res, fmt.Errorf("merge gave up after %d rounds: %w", maxRounds, err))
		}
		switch {
		case errors.Is(err, errPending):
			// Outbox gate: the previous version was committed but never
			// published (its publisher crashed or failed). Publish it first,
			// so the merged topic sees this record in version order.
			if err := e.republish(ctx, *d.pending, m.ID, "merge: published before a newer version of the record"); err != nil {
				return res, e.classify(res, err)
			}
			res.Published = append(res.Published, d.pending.ID)
		case errors.Is(err, errRebuild):
			// The same fold as `backbone rebuild`: the events and the
			// audit log's refreshed conflict timestamps.
			if rebuilt, err = State(ctx, e.store, raw.RecordType, raw.RecordID); err != nil {
				return res, e.storeFailure(res, err)
			}
			e.log.WarnContext(ctx, "record state rebuilt from events", "record", raw.RecordType+":"+raw.RecordID, "version", rebuilt.Version)
		case errors.Is(err, errRerun):
			probeID = true
		default:
			return res, e.storeFailure(res, err)
		}
	}

	res.Outcome = d.outcome
	res.Conflicts = d.conflicts
	res.Version = d.head.Version
	if d.fail != nil {
		d.fail.RecordType, d.fail.RecordID = raw.RecordType, raw.RecordID
		if d.fail.EventID == "" {
			d.fail.EventID = raw.ID
		}
		return res, d.fail
	}
	switch d.outcome {
	case store.OutcomeDuplicate:
		res.EventID, res.Version = d.event.ID, d.event.Version()
		if !d.event.Processed {
			// Outbox recovery: the earlier copy was stored, then its publish
			// failed or its process died. Publish it now, exactly here.
			if err := e.republish(ctx, d.event, m.ID, "merge: published on redelivery (outbox recovery)"); err != nil {
				return res, e.classify(res, err)
			}
			res.Published = append(res.Published, d.event.ID)
		}
	case store.OutcomeSuperseded, store.OutcomeEcho:
		if d.nudge && d.head.NewestID != "" {
			// Nothing stored, so no merged message would make the sinks
			// run, yet the source now holds a value the store does not.
			// Publishing the head again makes its sink send the store's
			// value back; the other sink finds nothing missing (stale).
			if err := e.nudgeSinks(ctx, d.head.NewestID); err != nil {
				return res, e.classify(res, err)
			}
			res.Published = append(res.Published, d.head.NewestID)
		}
	case store.OutcomeAccepted, store.OutcomeMerged:
		res.EventID, res.Version = d.event.ID, d.event.Version()
		if err := e.publish(ctx, d.event, d.conflicts); err != nil {
			return res, e.publishFailure(res, d.event.ID, err)
		}
		res.Published = append(res.Published, d.event.ID)
		// Ack only after the flag is set: if this fails the event stays
		// processed = 0 and the redelivery republishes it (a duplicate on
		// the merged topic, which the sinks absorb by event id).
		if err := e.store.MarkProcessed(ctx, d.event.ID); err != nil {
			return res, e.storeFailure(res, fmt.Errorf("event %s published but not marked processed: %w", d.event.ID, err))
		}
	}
	e.log.DebugContext(ctx, "merged", "outcome", res.Outcome, "record", raw.RecordType+":"+raw.RecordID,
		"event_id", res.EventID, "version", res.Version, "conflicts", len(res.Conflicts))
	return res, nil
}

// decide is one run of the merge transaction: SPEC §5 steps 1 to 6 up to
// the commit. It must be repeatable until commit (InTx may run it again), so
// it only writes through tx and into d.
func (e *Engine) decide(ctx context.Context, tx store.Tx, m message.Message, raw event.Raw, fp string, probeID bool, rebuilt *record.State, d *decision) error {
	rt, rid := raw.RecordType, raw.RecordID
	// Step 1: duplicates, looked up with the lock in one round trip: by id
	// (when the id may be stored) and by fingerprint.
	probe := store.Probe{ID: raw.ID, Fingerprint: fp}
	if !probeID {
		probe.ID = "" // a derived id: the fingerprint probe finds every copy
	}
	head, found, err := tx.LockRecord(ctx, rt, rid, probe)
	if err != nil {
		return err
	}
	d.head = head
	audit := func(outcome, detail, eventID string, version uint64) error {
		return tx.AppendAudit(ctx, store.Audit{
			EventID: eventID, Fingerprint: fp, RecordType: rt, RecordID: rid,
			Outcome: outcome, Stage: store.StageMerge, MessageID: messageID(m.ID), Version: version, Detail: detail,
		})
	}
	duplicate := func(ev store.Event, why string) error {
		d.outcome, d.event = store.OutcomeDuplicate, ev
		return audit(store.OutcomeDuplicate, fmt.Sprintf("%s: event %s, version %d", why, ev.ID, ev.Version()), ev.ID, ev.Version())
	}

	// The same id must carry the same change.
	byID, byFP := found.ByID, found.ByFingerprint
	if byID != nil {
		ev := *byID
		if byFP != nil && byFP.ID == ev.ID {
			return duplicate(ev, "same id and change as an event already stored")
		}
		d.outcome = store.OutcomeRejected
		d.fail = failure.Permanent(store.StageMerge, ReasonIDConflict, fmt.Sprintf(
			"event id %s is already stored for a different change (%s:%s version %d)", ev.ID, ev.RecordType, ev.RecordID, ev.Version()))
		d.fail.EventID = ev.ID
		return audit(store.OutcomeRejected, ReasonIDConflict+": "+d.fail.Detail, "", head.Version)
	}
	// The source's own history of this record: its reports and the
	// deliveries to it (echo rule, re-edits). Read only when needed.
	var (
		hist   []store.Audit
		loaded bool
	)
	history := func() ([]store.Audit, error) {
		if loaded {
			return hist, nil
		}
		var err error
		from := uint64(1)
		if head.Version > echoWindow {
			from = head.Version - echoWindow
		}
		hist, err = tx.SystemHistory(ctx, rt, rid, raw.Source, from)
		loaded = err == nil
		return hist, err
	}
	if byFP != nil {
		h, err := history()
		if err != nil {
			return err
		}
		if !reEdit(h, *byFP, raw) {
			return duplicate(*byFP, "same change as an event already stored")
		}
		// On, off, on again: the source reported another value of one of
		// these fields since the matched event, so this is a genuine
		// change back. A derived id must differ from the matched event's
		// and stay the same for this re-edit's own redeliveries.
		if !probeID {
			raw.ID = event.DerivedID(fp + ":" + byFP.ID)
			d.reEditID = raw.ID
		}
	}

	// Step 2: a base ahead of the chain waits for the change before it.
	if raw.BaseVersion > head.Version {
		d.outcome = store.OutcomeDeferred
		d.fail = failure.Retryable(store.StageMerge, ReasonVersionGap, fmt.Sprintf(
			"base_version %d is ahead of record version %d: an earlier change is still in flight", raw.BaseVersion, head.Version))
		return audit(store.OutcomeDeferred, ReasonVersionGap+": "+d.fail.Detail, "", head.Version)
	}

	st, ok := record.Parse(head)
	if !ok {
		if rebuilt == nil || rebuilt.Version != head.Version {
			return errRebuild
		}
		st = rebuilt
	}

	// Step 1 (echo), 3 (conflicts) and 4 (no-op), field by field.
	var echoes map[string]event.Conflict
	if mayEcho(raw, st) {
		h, err := history()
		if err != nil {
			return err
		}
		echoes = findEchoes(h, raw)
	}
	// Every outcome below is the source's report of all the fields it sent
	// (SPEC §7: the target holds them locally, accepted or dropped).
	report := &store.FieldSet{Base: raw.BaseVersion, Fields: record.Digests(raw.Changes)}
	effective := map[string]json.RawMessage{}
	var (
		conflicts []event.Conflict
		det       detail
		refreshed []string // no-op fields whose conflict timestamp this event refreshes
		behind    bool     // the source now holds a value the store does not
	)
	for _, f := range slices.Sorted(maps.Keys(raw.Changes)) {
		v := raw.Changes[f]
		if c, ok := echoes[f]; ok {
			conflicts = append(conflicts, c)
			det.Echo = append(det.Echo, f)
			if cur := st.Fields[f]; cur == nil || !event.SameJSON(cur.Value, v) {
				behind = true // the source holds an old value of ours
			}
			continue
		}
		cur := st.Fields[f]
		if cur != nil && event.SameJSON(cur.Value, v) {
			// Already the current value: nothing to change, nothing to
			// weigh (an equal value is no conflict). A later timestamp still
			// refreshes the field's conflict timestamp (SPEC §5 step 4), so
			// an older concurrent change processed afterwards cannot beat
			// this newer edit of equal value.
			det.Noop = append(det.Noop, f)
			if raw.Timestamp.After(cur.Timestamp.Time) {
				refreshed = append(refreshed, f)
			}
			continue
		}
		if cur != nil && cur.Version > raw.BaseVersion {
			// An accepted event with base_version >= ours changed f: the
			// source did not see that change when it made its own.
			c := e.resolve(f, raw, cur)
			conflicts = append(conflicts, c)
			if c.Resolution == ResolutionIncomingDropped {
				det.Superseded = append(det.Superseded, f)
				behind = true // the source holds the losing value
				continue
			}
		}
		effective[f] = v
	}
	det.Conflicts = conflicts
	d.conflicts = conflicts

	if len(refreshed) > 0 {
		ts := raw.Timestamp
		det.Refreshed, det.RefreshedAt, det.RefreshedBy = refreshed, &ts, raw.Source
	}

	// Step 5: nothing left.
	if len(effective) == 0 {
		switch {
		case len(det.Superseded) > 0:
			d.outcome = store.OutcomeSuperseded
		case len(det.Echo) > 0:
			d.outcome = store.OutcomeEcho
		default:
			d.outcome = store.OutcomeNoop
		}
		d.nudge = behind
		if len(refreshed) > 0 {
			state, err := encodeState(st.Refresh(refreshed, raw.Timestamp, raw.Source))
			if err != nil {
				return err
			}
			if err := tx.RefreshHead(ctx, rt, rid, head, state); err != nil {
				return err
			}
		}
		return tx.AppendAudit(ctx, store.Audit{
			EventID: raw.ID, Fingerprint: fp, RecordType: rt, RecordID: rid, Outcome: d.outcome, Stage: store.StageMerge,
			MessageID: messageID(m.ID), Version: head.Version, Detail: det.String(), Source: raw.Source, Fields: report,
		})
	}

	// Outbox gate: never store version n+1 while version n is unpublished,
	// so at most the newest event of a record is ever processed = 0 and the
	// merged topic sees the record in version order.
	// The lock's head query read the newest event's flag; only an
	// unpublished one (rare: a crash or a failed publish) is read whole.
	if head.NewestID != "" && !head.NewestProcessed {
		prev, err := tx.EventByID(ctx, head.NewestID)
		if err != nil {
			return fmt.Errorf("newest event %s of %s:%s: %w", head.NewestID, rt, rid, err)
		}
		if !prev.Processed {
			d.pending = &prev
			return errPending
		}
	}

	// Step 6: append the event and its audit row (one transaction).
	changes, err := event.Marshal(effective)
	if err != nil {
		return fmt.Errorf("encode changes of %s: %w", raw.ID, err)
	}
	ev := store.Event{
		ID: raw.ID, RecordType: rt, RecordID: rid, Source: raw.Source,
		Timestamp: raw.Timestamp.Time, BaseVersion: head.Version, Changes: changes,
		FullSnapshotRef: raw.FullSnapshotRef,
	}
	state, err := encodeState(st.Refresh(refreshed, raw.Timestamp, raw.Source).Apply(ev, effective))
	if err != nil {
		return fmt.Errorf("encode state of %s:%s: %w", rt, rid, err)
	}
	outcome := store.OutcomeAccepted
	if len(conflicts) > 0 {
		outcome = store.OutcomeMerged
	}
	err = tx.AppendEvent(ctx, ev, store.Audit{
		Fingerprint: fp, RecordType: rt, RecordID: rid, Outcome: outcome, Stage: store.StageMerge,
		MessageID: messageID(m.ID), Detail: det.String(), State: state, Source: raw.Source, Fields: report,
	})
	if errors.Is(err, store.ErrDuplicateID) {
		// Someone inserted this id since the probes ran: a concurrent copy of
		// a new record's first event (no row to lock yet), or another
		// record's event. The next round's id probe tells which.
		return errRerun
	}
	if err != nil {
		return err
	}
	d.outcome, d.event = outcome, ev
	return nil
}

// resolve weighs an incoming change of f against the accepted change cur
// that the source did not see (SPEC §5 step 3): the later timestamp wins;
// on equal timestamps the source earlier in the priority list wins; failing
// that the stored value stays.
func (e *Engine) resolve(f string, raw event.Raw, cur *record.Field) event.Conflict {
	ts := cur.Timestamp
	c := event.Conflict{Field: f, OtherSource: cur.Source, OtherVersion: cur.Version, OtherTimestamp: &ts}
	switch in, stored := raw.Timestamp.Time, cur.Timestamp.Time; {
	case in.After(stored):
		c.Resolution, c.Rule = ResolutionIncomingWon, RuleLaterTimestamp
	case in.Before(stored):
		c.Resolution, c.Rule = ResolutionIncomingDropped, RuleLaterTimestamp
	default:
		pin, pstored := e.priority(raw.Source), e.priority(cur.Source)
		switch {
		case pin < pstored:
			c.Resolution, c.Rule = ResolutionIncomingWon, RuleSourcePriority
		case pin > pstored:
			c.Resolution, c.Rule = ResolutionIncomingDropped, RuleSourcePriority
		default:
			c.Resolution, c.Rule = ResolutionIncomingDropped, RuleStoredValueStays
		}
	}
	return c
}

// priority ranks a source: lower wins; unknown sources rank last.
func (e *Engine) priority(source string) int {
	if i := slices.Index(e.sources, source); i >= 0 {
		return i
	}
	return len(e.sources)
}

// detail is the audit detail of a merge outcome: what was dropped and why.
type detail struct {
	Conflicts  []event.Conflict `json:"conflicts,omitempty"`
	Echo       []string         `json:"echo,omitempty"`
	Noop       []string         `json:"noop,omitempty"`
	Superseded []string         `json:"superseded,omitempty"`
	// Refreshed are no-op fields whose conflict timestamp this event
	// refreshed to RefreshedAt, by RefreshedBy (its timestamp was later than
	// the stored change's); rebuild reads them back.
	Refreshed   []string    `json:"refreshed,omitempty"`
	RefreshedAt *event.Time `json:"refreshed_at,omitempty"`
	RefreshedBy string      `json:"refreshed_by,omitempty"`
}

func (d detail) String() string {
	if len(d.Conflicts) == 0 && len(d.Echo) == 0 && len(d.Noop) == 0 && len(d.Superseded) == 0 && len(d.Refreshed) == 0 {
		return ""
	}
	b, err := event.Marshal(d)
	if err != nil {
		return ""
	}
	return string(b)
}

// conflictsOf reads the conflicts back from an accepted or merged audit row
// (to rebuild a merged message for outbox recovery).
func conflictsOf(a store.Audit) []event.Conflict {
	var d detail
	if a.Detail == "" || json.Unmarshal([]byte(a.Detail), &d) != nil {
		return nil
	}
	return d.Conflicts
}

// storeFailure classifies a store error with the one table of SPEC §6
// (classifyStoreFailure): transient errors are retried, a statement the
// database refused for its content is rejected, never retried to
// exhaustion.
func (e *Engine) storeFailure(res Result, err error) *failure.Failure {
	return classifyStoreFailure(res, err)
}

func (e *Engine) publishFailure(res Result, eventID string, err error) *failure.Failure {
	f := failure.Retryable(store.StageMerge, ReasonPublishFailed,
		fmt.Sprintf("event %s is stored but not yet published (processed = 0; a redelivery or `backbone outbox flush` publishes it): %v", eventID, err))
	f.RecordType, f.RecordID, f.EventID = res.RecordType, res.RecordID, eventID
	return f
}

// classify turns an error of republish into a failure.
func (e *Engine) classify(res Result, err error) *failure.Failure {
	var pe *publishError
	if errors.As(err, &pe) {
		return e.publishFailure(res, pe.eventID, pe.err)
	}
	return e.storeFailure(res, err)
}

// messageID bounds a message id to its column (VARCHAR(255)); Pub/Sub ids
// are short, but the push endpoint should not trust that.
func messageID(id string) string {
	if len(id) <= 255 {
		return id
	}
	cut := 255
	for cut > 0 && !utf8.RuneStart(id[cut]) {
		cut--
	}
	return id[:cut]
}
