// Package retryfunc is the Retry function, triggered by
// events.error.{env}-retry-sub (SPEC §6). A non-retryable error goes straight
// to events.dlq.{env}. A retryable one re-runs its stage inline — the merge
// on the original raw message, or the delivery to the named target (with its
// regression guard) — and acks on success. While the stage still fails the
// handler nacks, so that Pub/Sub backs off (10 s to 600 s) and, after 5
// attempts, dead-letters the message to events.dlq.{env} itself. An
// unreachable store is never the message's fault: on the last attempt a
// re-run that failed only because of it is parked again instead (outage.go).
package retryfunc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"time"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/deadletter"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/merge"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/topology"
)

// Name is the function target.
const Name = config.TargetRetry

// Stage re-runs one stage on the message it first failed on. nil means the
// stage succeeded (or has nothing left to do); a *failure.Failure says
// whether another attempt can help; any other error counts as retryable.
type Stage func(ctx context.Context, m message.Message) error

// Attributes Pub/Sub sets on a message it dead-letters. Retry sets the same
// two when it dead-letters a message itself, so the archive reads one shape;
// the names are the archive's (shared/deadletter), so they cannot drift.
const (
	AttrDeadLetterDeliveryCount = deadletter.AttrSourceDeliveryCount
	AttrDeadLetterSubscription  = deadletter.AttrSourceSubscription
	// AttrDeadLetterReason says why Retry dead-lettered without retrying.
	AttrDeadLetterReason = deadletter.AttrDeadLetterReason
	// AttrOriginalEnv keeps the foreign env attribute of a message from
	// another environment (the guard restamps env with this one's).
	AttrOriginalEnv = "original_env"
)

// Reasons Retry itself gives (the dead_letter_reason attribute).
const (
	ReasonUndecodable       = "undecodable_error_message"
	ReasonUnknownStage      = "unknown_stage"
	ReasonNotRetryable      = "not_retryable"
	ReasonFailedPermanently = "failed_permanently"
)

// Deps is what the handler needs.
type Deps struct {
	Env config.Env
	// Engine re-runs the merge stage on the original raw message.
	Engine *merge.Engine
	// Runners re-run deliveries, each under its target's stage.
	Runners []*sink.Runner
	// Stages adds re-runs by stage, or replaces the ones above (tests).
	Stages map[string]Stage
	// Publisher publishes dead letters; it must be guarded to Env.
	Publisher publish.Publisher
	Store     store.Store  // Retry's own audit rows
	Log       *slog.Logger // nil discards
	// OutageHold is how long a message whose re-run found the store
	// unreachable on its last attempt waits before it is parked again
	// (default topology.MinBackoff, the subscription's own first backoff).
	OutageHold time.Duration
}

// New builds the Retry handler, under Recover (shared/failure): a panic is
// nacked like any failed re-run. It is never under Park: a failed re-run
// must nack, so that Pub/Sub backs off and dead-letters it after the last
// attempt, not go back to the error topic.
func New(d Deps) (message.Handler, error) {
	if d.Env == "" || d.Publisher == nil || d.Store == nil {
		return nil, errors.New(Name + ": Env, Publisher and Store are required")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.OutageHold <= 0 {
		d.OutageHold = topology.MinBackoff
	}
	reruns := map[string]Stage{}
	if d.Engine != nil {
		reruns[store.StageMerge] = func(ctx context.Context, m message.Message) error {
			_, err := d.Engine.Process(ctx, m)
			return err
		}
	}
	for _, run := range d.Runners {
		reruns[run.Target()] = run.Handle
	}
	maps.Copy(reruns, d.Stages)
	r := &retry{Deps: d, reruns: reruns}
	return failure.Recover(store.StageRetry, d.Log)(r.handle), nil
}

// retry is the handler: Deps and every re-run by stage.
type retry struct {
	Deps
	reruns map[string]Stage
}

func (r *retry) handle(ctx context.Context, m message.Message) error {
	log := r.Log.With("message_id", m.ID, "delivery_attempt", m.DeliveryAttempt)
	if got := m.Attributes[publish.AttrEnv]; got != "" && got != string(r.Env) {
		return r.deadLetter(ctx, log, m, failure.ReasonWrongEnv, nil)
	}
	if inv := m.Invalid; inv != nil {
		// A CloudEvent that is not a Pub/Sub message: nothing to re-run.
		// Dead-letter what came, with the decoder's reason.
		m.Data = inv.Data
		return r.deadLetter(ctx, log, m, inv.Reason, nil)
	}
	e, err := failure.Decode(m.Data)
	if err != nil {
		return r.deadLetter(ctx, log, m, ReasonUndecodable, nil)
	}
	log = log.With("stage", e.Stage, "reason", e.Reason, "event_id", e.EventID, "record_type", e.RecordType, "record_id", e.RecordID)
	if !e.Retryable {
		return r.deadLetter(ctx, log, m, ReasonNotRetryable, &e)
	}
	run, ok := r.reruns[e.Stage]
	if !ok {
		return r.deadLetter(ctx, log, m, ReasonUnknownStage, &e)
	}
	original := failure.ToMessage(e.Original)
	err = run(ctx, original)
	if err == nil {
		log.InfoContext(ctx, "retry succeeded")
		r.audit(ctx, log, m, &e, store.OutcomeRetried, fmt.Sprintf("%s re-run succeeded at delivery attempt %d", e.Stage, m.DeliveryAttempt))
		return nil
	}
	if f, ok := failure.As(err); ok && !f.Retryable {
		// The stage now fails for good (e.g. the target answers 400):
		// retrying cannot help, dead-letter it with the new reason.
		log.WarnContext(ctx, "retry failed permanently", "new_reason", f.Reason, "detail", f.Detail)
		e.Retryable, e.Reason, e.Detail = false, f.Reason, f.Detail
		return r.deadLetter(ctx, log, m, ReasonFailedPermanently, &e)
	}
	if f, ok := failure.As(err); ok && f.Reason == failure.ReasonStoreUnavailable && lastAttempt(m) {
		return r.repark(ctx, log, m, err)
	}
	log.WarnContext(ctx, "retry failed: nack, Pub/Sub backs off and dead-letters after the last attempt", "error", err.Error())
	return fmt.Errorf("retry %s of message %s (attempt %d): %w", e.Stage, m.ID, m.DeliveryAttempt, err)
}

// deadLetter publishes the message to events.dlq.{env} and acks. e, when
// known, replaces the data (it may carry a new reason); otherwise the data
// goes as it came, so nothing is lost.
func (r *retry) deadLetter(ctx context.Context, log *slog.Logger, m message.Message, why string, e *event.Error) error {
	data := m.Data
	if e != nil {
		var err error
		if data, err = encode(*e); err != nil {
			return err
		}
	}
	_, err := r.forward(ctx, r.Env.Names().DLQTopic, m, data, func(attrs map[string]string) {
		attrs[AttrDeadLetterDeliveryCount] = strconv.Itoa(max(m.DeliveryAttempt, 1))
		attrs[AttrDeadLetterSubscription] = m.SubscriptionName()
		attrs[AttrDeadLetterReason] = why
		if e != nil {
			attrs[failure.AttrReason] = e.Reason
			attrs[failure.AttrRetryable] = strconv.FormatBool(e.Retryable)
		}
		if got := attrs[publish.AttrEnv]; got != "" && got != string(r.Env) {
			attrs[AttrOriginalEnv] = got
		}
	})
	if err != nil {
		log.ErrorContext(ctx, "dead-letter publish failed: nack", "error", err.Error())
		return fmt.Errorf("dead-letter message %s: %w", m.ID, err)
	}
	log.WarnContext(ctx, "dead-lettered without retry", "why", why)
	return nil
}

// forward publishes data to topic as a new message with m's attributes,
// as set changes them, and its ordering key. The env attribute is left to
// the guard, which stamps this environment's.
func (r *retry) forward(ctx context.Context, topic string, m message.Message, data []byte, set func(attrs map[string]string)) (string, error) {
	attrs := maps.Clone(m.Attributes)
	if attrs == nil {
		attrs = map[string]string{}
	}
	set(attrs)
	delete(attrs, publish.AttrEnv)
	return r.Publisher.Publish(ctx, topic, publish.Message{Data: data, Attributes: attrs, OrderingKey: m.OrderingKey})
}

func (r *retry) audit(ctx context.Context, log *slog.Logger, m message.Message, e *event.Error, outcome, detail string) {
	sum := sha256.Sum256(m.Data)
	a := store.Audit{EventID: e.EventID, Fingerprint: hex.EncodeToString(sum[:]), RecordType: e.RecordType, RecordID: e.RecordID,
		Outcome: outcome, Stage: store.StageRetry, MessageID: m.ID, Detail: detail}
	if err := r.Store.AppendAudit(ctx, a); err != nil {
		// The stage itself succeeded and wrote its own audit row; losing
		// this one is not worth a redelivery that would re-run the stage.
		log.WarnContext(ctx, "retry audit row not written", "error", err.Error())
	}
}
