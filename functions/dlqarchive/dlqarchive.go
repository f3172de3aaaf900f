// Package dlqarchivefunc is the DLQArchive function: triggered by
// events.dlq.{env}-sub, it stores every dead letter append-only for
// inspection and redrive (SPEC §6). The work is deadletter.Archive; this
// handler adds the nack-while-down contract and the alerting log lines.
package dlqarchivefunc

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/deadletter"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/store"
)

// Name is the function target.
const Name = config.TargetDLQArchive

// Deps is what the handler needs.
type Deps struct {
	Store store.Store
	Log   *slog.Logger // nil discards
	// Env is the environment whose DLQ this is, for the `env` attribute
	// check. "" reads it from the delivering subscription's name
	// (events.dlq.{env}-sub).
	Env config.Env
}

// New returns the DLQArchive handler. It acks once the dead letter is stored
// (or was already), and nacks while the store cannot be written, so the
// subscription keeps the message until the database is back. It is under
// Recover (shared/failure), never Park: a dead letter that cannot be
// archived is nacked, not sent back to the error topic.
func New(d Deps) (message.Handler, error) {
	if d.Store == nil {
		return nil, errors.New(Name + ": Store is required")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	return failure.Recover(store.StageDLQ, d.Log)(d.handle), nil
}

func (h Deps) handle(ctx context.Context, m message.Message) error {
	home := h.Env
	if home == "" {
		home = envOfSubscription(m.SubscriptionName())
	}
	if m.Invalid != nil && len(m.Data) == 0 {
		// A CloudEvent that is not a Pub/Sub message: archive what came,
		// whatever it is, so that nothing is lost.
		m.Data = m.Invalid.Data
	}
	a, err := deadletter.Archive(ctx, h.Store, home, m)
	if a.New {
		// The row is in even if its audit row then failed (err, nack): the
		// redelivery will find the row and stay quiet, so alert now.
		h.alert(ctx, a, home)
	} else if err == nil {
		h.Log.InfoContext(ctx, "dead letter already archived", "message_id", m.ID, "stage", a.DeadLetter.Stage, "reason", a.DeadLetter.Reason)
	}
	return err
}

func (h Deps) alert(ctx context.Context, a deadletter.Archived, home config.Env) {
	d := a.DeadLetter
	// Exactly one ERROR line per new dead letter: that is what the alert
	// counts. It names the failure and never carries data, attributes or
	// detail: those may hold customer data, and the archive keeps them for
	// whoever looks.
	attrs := []any{
		"message_id", d.MessageID,
		"stage", d.Stage,
		"reason", d.Reason,
		"record", record(d),
		"event_id", d.EventID,
		"delivery_attempts", d.DeliveryAttempts,
		"source_subscription", d.Subscription,
		"env", a.Env,
	}
	if a.Why != "" {
		attrs = append(attrs, "parked_by_retry", a.Why)
	}
	if a.DecodeErr != nil {
		attrs = append(attrs, "undecodable", a.DecodeErr.Error())
	}
	if a.WrongEnv {
		// Another environment's message reached this DLQ: the guard or the
		// IAM bindings are wrong somewhere. Archived (nothing is lost) but
		// not redrivable from here.
		attrs = append(attrs, failure.ReasonWrongEnv, true, "dlq_env", string(home))
	}
	h.Log.ErrorContext(ctx, "dead letter archived", attrs...)
}

// envOfSubscription reads {env} from events.dlq.{env}-sub; "" when the name
// is not that (then the env check is skipped).
func envOfSubscription(sub string) config.Env {
	rest, ok := strings.CutPrefix(sub, "events."+config.KindDLQ+".")
	if !ok {
		return ""
	}
	rest, ok = strings.CutSuffix(rest, "-sub")
	if !ok {
		return ""
	}
	env, err := config.ParseEnv(rest)
	if err != nil {
		return ""
	}
	return env
}

func record(d store.DeadLetter) string {
	if d.RecordType == "" {
		return ""
	}
	return d.RecordType + ":" + d.RecordID
}
