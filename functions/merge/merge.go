// Package mergefunc is the Merge function: triggered by events.raw.{env}-merge-sub,
// it runs the merge engine (shared/merge) on each raw event and parks every
// failure on events.error.{env} (SPEC §1, §6). The work is the engine's; this
// handler adds the ack/nack contract.
package mergefunc

import (
	"context"
	"errors"
	"log/slog"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/merge"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/store"
)

// Name is the function target.
const Name = config.TargetMerge

// Deps is what the handler needs.
type Deps struct {
	Engine   *merge.Engine
	Reporter failure.Sender // to events.error.{env}
	Log      *slog.Logger   // nil discards
}

// New returns the Merge handler.
//
// Ack (nil) when the engine is done with the message, and also when it
// failed but the failure is parked on the error topic: permanent failures
// (bad input) go on to the dead-letter archive from there, retryable ones
// (version gap, publish trouble) are re-run by Retry with backoff. Nack
// (error) while the store is unreachable and when even the error topic
// cannot be reached, so Pub/Sub redelivers the original and nothing is
// lost. Park and Recover (shared/failure) hold that contract; a panic is
// parked as retryable, so Retry tries again and dead-letters it after its
// attempts.
func New(d Deps) (message.Handler, error) {
	if d.Engine == nil || d.Reporter == nil {
		return nil, errors.New(Name + ": Engine and Reporter are required")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	return failure.Park(d.Reporter, d.Log)(failure.Recover(store.StageMerge, d.Log)(d.handle)), nil
}

// handle runs the engine and returns nil or a classified failure.
func (d Deps) handle(ctx context.Context, m message.Message) error {
	var res merge.Result
	var err error
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
	// The database being down is not the message's fault (SPEC §6): Park
	// nacks it, so merge-sub keeps it and no attempt is spent nor version
	// gap left; there is nothing to audit, the store is not there.
	if f.Reason != failure.ReasonStoreUnavailable {
		// A store refusal rolled its transaction back, audit row included:
		// write the row now (rejected, or deferred for an unclassified
		// error). Parking goes ahead either way: the error topic has it.
		if aerr := d.Engine.AuditStoreFailure(ctx, m, res, f); aerr != nil {
			d.Log.ErrorContext(ctx, "store failure not audited", "message_id", m.ID, "reason", f.Reason, "error", aerr.Error())
		}
	}
	return f
}
