// Package merge is the Merge function: triggered by events.raw.{env}-merge-sub,
// it runs the merge engine (shared/merge) on each raw event and parks every
// failure on events.error.{env} (SPEC §1, §6). The work is the engine's; this
// handler adds the ack/nack contract.
package merge

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/failure"
	engine "github.com/backbone-sync/backbone/shared/merge"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/store"
)

// Name is the function target.
const Name = config.TargetMerge

// Deps is what the handler needs.
type Deps struct {
	Engine   *engine.Engine
	Reporter *failure.Reporter // to events.error.{env}
	Log      *slog.Logger
}

// New returns the Merge handler.
//
// Ack (nil) when the engine is done with the message, and also when it
// failed but the failure is parked on the error topic: permanent failures
// (bad input) go on to the dead-letter archive from there, retryable ones
// (version gap, publish trouble) are re-run by Retry with backoff. Nack
// (error) while the store is unreachable and when even the error topic
// cannot be reached, so Pub/Sub redelivers the original and nothing is
// lost.
func New(d Deps) message.Handler {
	return func(ctx context.Context, m message.Message) (err error) {
		defer func() {
			if p := recover(); p != nil {
				// A bug must not lose the message nor loop on it: park it as
				// retryable, so Retry tries again and dead-letters it after
				// its attempts.
				d.Log.ErrorContext(ctx, "merge panicked", "message_id", m.ID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				err = report(ctx, d, m, failure.Retryable(store.StageMerge, failure.ReasonInternal, fmt.Sprintf("merge panicked: %v", p)))
			}
		}()
		var res engine.Result
		if m.Invalid != nil {
			// Park what the request carried: the foreign event's data.
			m.Data = m.Invalid.Data
			res, err = d.Engine.RejectInvalid(ctx, m)
		} else {
			res, err = d.Engine.Process(ctx, m)
		}
		if err == nil {
			d.Log.InfoContext(ctx, "merge", "outcome", res.Outcome, "record", res.RecordType+":"+res.RecordID,
				"event_id", res.EventID, "version", res.Version, "conflicts", len(res.Conflicts),
				"message_id", m.ID, "delivery_attempt", m.DeliveryAttempt)
			return nil
		}
		f, ok := failure.As(err)
		if !ok {
			// The engine classifies everything it knows; anything else is
			// taken as the store being unreachable: retryable.
			f = failure.Retryable(store.StageMerge, failure.ReasonStoreUnavailable, err.Error())
			f.RecordType, f.RecordID, f.EventID = res.RecordType, res.RecordID, res.EventID
		}
		if f.Reason == failure.ReasonStoreUnavailable {
			// The database being down is not the message's fault (SPEC §6):
			// nack, so merge-sub (no dead-letter policy, 10–600 s backoff, 7
			// days) keeps it and ordering holds the record's later messages
			// behind it: no attempt is spent and no version gap is left.
			d.Log.WarnContext(ctx, "store unavailable: nack so Pub/Sub redelivers", "message_id", m.ID,
				"record", res.RecordType+":"+res.RecordID, "detail", f.Detail)
			return fmt.Errorf("merge: %s: %s", f.Reason, f.Detail)
		}
		// A store refusal rolled its transaction back, audit row included:
		// write the row now (rejected, or deferred for an unclassified
		// error). Parking goes ahead either way: the error topic has it.
		if aerr := d.Engine.AuditStoreFailure(ctx, m, res, f); aerr != nil {
			d.Log.ErrorContext(ctx, "store failure not audited", "message_id", m.ID, "reason", f.Reason, "error", aerr.Error())
		}
		return report(ctx, d, m, f)
	}
}

// report parks f on the error topic; an error means it could not (nack).
func report(ctx context.Context, d Deps, m message.Message, f *failure.Failure) error {
	if _, err := d.Reporter.Report(ctx, failure.Message(f, m)); err != nil {
		d.Log.ErrorContext(ctx, "merge failure not reported: nack for redelivery", "message_id", m.ID,
			"reason", f.Reason, "retryable", f.Retryable, "error", err.Error())
		return fmt.Errorf("merge failed (%s) and the error topic is unreachable: %w", f.Reason, err)
	}
	level := slog.LevelWarn
	if f.Retryable {
		level = slog.LevelInfo // parked for Retry: expected in normal operation
	}
	d.Log.Log(ctx, level, "merge failure parked", "reason", f.Reason, "retryable", f.Retryable,
		"record", f.RecordType+":"+f.RecordID, "event_id", f.EventID, "message_id", m.ID, "detail", f.Detail)
	return nil
}
