// Package dlqarchivefunc is the DLQArchive function: triggered by
// events.dlq.{env}-sub, it stores every dead letter append-only for
// inspection and redrive (SPEC §6). The work is deadletter.Archive; this
// handler adds the nack-while-down contract and the alerting log lines.
package dlqarchivefunc

import (
	"context"
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

type handler struct {
	store store.Store
	log   *slog.Logger
	env   config.Env
}

// Option configures the handler.
type Option func(*handler)

// WithEnv sets the environment whose DLQ this is, for the `env` attribute
// check. Without it the environment is read from the delivering
// subscription's name (events.dlq.{env}-sub).
func WithEnv(env config.Env) Option { return func(h *handler) { h.env = env } }

// New returns the DLQArchive handler over s. It acks once the dead letter is
// stored (or was already), and nacks while the store cannot be written, so
// the subscription keeps the message until the database is back.
func New(s store.Store, log *slog.Logger, opts ...Option) message.Handler {
	h := &handler{store: s, log: log}
	for _, o := range opts {
		o(h)
	}
	return h.handle
}

func (h *handler) handle(ctx context.Context, m message.Message) error {
	home := h.env
	if home == "" {
		home = envOfSubscription(m.SubscriptionName())
	}
	if m.Invalid != nil && len(m.Data) == 0 {
		// A CloudEvent that is not a Pub/Sub message: archive what came,
		// whatever it is, so that nothing is lost.
		m.Data = m.Invalid.Data
	}
	a, err := deadletter.Archive(ctx, h.store, home, m)
	if a.New {
		// The row is in even if its audit row then failed (err, nack): the
		// redelivery will find the row and stay quiet, so alert now.
		h.alert(ctx, a, home)
	} else if err == nil {
		h.log.InfoContext(ctx, "dead letter already archived", "message_id", m.ID, "stage", a.DeadLetter.Stage, "reason", a.DeadLetter.Reason)
	}
	return err
}

func (h *handler) alert(ctx context.Context, a deadletter.Archived, home config.Env) {
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
	h.log.ErrorContext(ctx, "dead letter archived", attrs...)
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
