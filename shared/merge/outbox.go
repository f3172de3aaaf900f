package merge

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/store"
)

// MergedMessage renders a stored event as its message on events.merged.{env}
// (SPEC §3): the event as delivered, its conflicts, the attributes source,
// record_type and event_id (the publisher guard adds env), ordering key
// {record_type}:{record_id}.
func MergedMessage(ev store.Event, conflicts []event.Conflict) (publish.Message, error) {
	var changes map[string]json.RawMessage
	if err := json.Unmarshal(ev.Changes, &changes); err != nil {
		return publish.Message{}, fmt.Errorf("changes of event %s: %w", ev.ID, err)
	}
	if conflicts == nil {
		conflicts = []event.Conflict{} // consumers get [], never null
	}
	data, err := event.Marshal(event.Merged{
		ID:              ev.ID,
		RecordType:      ev.RecordType,
		RecordID:        ev.RecordID,
		Source:          ev.Source,
		Timestamp:       event.NewTime(ev.Timestamp),
		BaseVersion:     ev.BaseVersion,
		Version:         ev.Version(),
		Changes:         changes,
		FullSnapshotRef: ev.FullSnapshotRef,
		Conflicts:       conflicts,
	})
	if err != nil {
		return publish.Message{}, fmt.Errorf("encode merged event %s: %w", ev.ID, err)
	}
	return publish.Message{
		Data: data,
		Attributes: map[string]string{
			event.AttrSource:     ev.Source,
			event.AttrRecordType: ev.RecordType,
			event.AttrEventID:    ev.ID,
		},
		OrderingKey: publish.OrderingKey(ev.RecordType, ev.RecordID),
	}, nil
}

// publishError marks a failure to publish (as opposed to a store failure)
// on the outbox paths.
type publishError struct {
	eventID string
	err     error
}

func (e *publishError) Error() string { return fmt.Sprintf("publish event %s: %v", e.eventID, e.err) }
func (e *publishError) Unwrap() error { return e.err }

// OutcomeWithheld is the outbox audit outcome of a stress record: flagged
// processed = 1 and never published.
const OutcomeWithheld = "withheld"

// publish is the one step through which a stored event reaches
// events.merged (the merge, its outbox gate and recovery, and the outbox
// flush all call it), so it is where stress's reserved record types are
// stopped: the event is treated as published (the caller sets processed =
// 1 and acks) but no message leaves, so no sink, Retry or redrive can ever
// deliver it to a target, however it got into the store.
func (e *Engine) publish(ctx context.Context, ev store.Event, conflicts []event.Conflict) error {
	if event.Reserved(ev.RecordType) {
		e.log.InfoContext(ctx, "stress record withheld from the merged topic", "event_id", ev.ID, "record", ev.RecordType+":"+ev.RecordID)
		return nil
	}
	msg, err := MergedMessage(ev, conflicts)
	if err != nil {
		return err
	}
	if _, err := e.pub.Publish(ctx, e.topic, msg); err != nil {
		return &publishError{eventID: ev.ID, err: err}
	}
	return nil
}

// nudgeSinks publishes the record's head event again, so that both sinks
// bring their target up to date with the store (SPEC §7: the message only
// says which record). The outbox flag is left as it is.
func (e *Engine) nudgeSinks(ctx context.Context, headID string) error {
	ev, err := e.store.EventByID(ctx, headID)
	if err != nil {
		return fmt.Errorf("head event %s: %w", headID, err)
	}
	return e.publish(ctx, ev, nil)
}

// republish publishes an event left processed = 0, sets the flag and
// audits the step (`published`, stage outbox). The conflicts come back from
// the event's accepted/merged audit row. messageID is the message that
// caused it ("" for a flush); why goes to the audit detail.
func (e *Engine) republish(ctx context.Context, ev store.Event, msgID, why string) error {
	audits, err := e.store.AuditForEvent(ctx, ev.ID)
	if err != nil {
		return fmt.Errorf("audit of unpublished event %s: %w", ev.ID, err)
	}
	var (
		fp        string
		conflicts []event.Conflict
	)
	for _, a := range audits {
		if a.Outcome == store.OutcomeAccepted || a.Outcome == store.OutcomeMerged {
			fp, conflicts = a.Fingerprint, conflictsOf(a)
			break
		}
	}
	if fp == "" {
		// Stored by something other than the merge (no accepted row): the
		// audit row still needs a fingerprint; the event's id hashes to one.
		fp = event.HashHex([]byte(ev.ID))
	}
	if err := e.publish(ctx, ev, conflicts); err != nil {
		return err
	}
	if err := e.store.MarkProcessed(ctx, ev.ID); err != nil {
		return fmt.Errorf("event %s republished but not marked processed: %w", ev.ID, err)
	}
	outcome := store.OutcomePublished
	if event.Reserved(ev.RecordType) {
		outcome, why = OutcomeWithheld, why+": a stress record, marked processed and never published"
	}
	err = e.store.AppendAudit(ctx, store.Audit{
		EventID: ev.ID, Fingerprint: fp, RecordType: ev.RecordType, RecordID: ev.RecordID,
		Outcome: outcome, Stage: store.StageOutbox, MessageID: messageID(msgID),
		Version: ev.Version(), Detail: why,
	})
	if err != nil {
		// Published and flagged: the audit row is the only thing missing,
		// and running the stage again would not write it (the flag is set).
		e.log.ErrorContext(ctx, "outbox recovery not audited", "event_id", ev.ID, "error", err.Error())
	}
	e.log.InfoContext(ctx, "unpublished event published", "event_id", ev.ID,
		"record", ev.RecordType+":"+ev.RecordID, "version", ev.Version(), "why", why)
	return nil
}

// Flush republishes events left processed = 0 (`backbone outbox flush`):
// those created more than olderThan ago — younger ones are probably still
// being published by their merge — at most limit (0: the store's default),
// oldest first and, per record, in version order. A record whose publish
// fails is left for the next flush from that event on, so its messages never
// go out of order; other records go on. It returns how many events it
// published, and every failure joined.
func (e *Engine) Flush(ctx context.Context, olderThan time.Duration, limit int) (int, error) {
	evs, err := e.store.Unprocessed(ctx, time.Now().Add(-olderThan), limit)
	if err != nil {
		return 0, fmt.Errorf("outbox flush: list unprocessed events: %w", err)
	}
	var (
		order  []string
		byKey  = map[string][]store.Event{}
		errs   []error
		counts int
	)
	for _, ev := range evs {
		k := publish.OrderingKey(ev.RecordType, ev.RecordID)
		if _, ok := byKey[k]; !ok {
			order = append(order, k)
		}
		byKey[k] = append(byKey[k], ev)
	}
	for _, k := range order {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("outbox flush stopped: %w", err))
			break
		}
		group := byKey[k]
		slices.SortFunc(group, func(a, b store.Event) int { return cmp.Compare(a.BaseVersion, b.BaseVersion) })
		n, err := e.flushRecord(ctx, k, group)
		counts += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return counts, errors.Join(errs...)
}

func (e *Engine) flushRecord(ctx context.Context, key string, group []store.Event) (int, error) {
	unlock, err := e.locks.lock(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("outbox flush %s: %w", key, err)
	}
	defer unlock()
	n := 0
	for _, listed := range group {
		// Re-read: a merge or another flush may have published it since.
		ev, err := e.store.EventByID(ctx, listed.ID)
		if err != nil {
			return n, fmt.Errorf("outbox flush %s: %w", key, err)
		}
		if ev.Processed {
			continue
		}
		if err := e.republish(ctx, ev, "", "outbox flush"); err != nil {
			return n, fmt.Errorf("outbox flush %s version %d: %w", key, ev.Version(), err)
		}
		n++
	}
	return n, nil
}
