package sink

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
)

// Reporter parks a failure on events.error.{env}; *failure.Reporter is the
// implementation.
type Reporter interface {
	Report(ctx context.Context, e event.Error) (string, error)
}

var _ Reporter = (*failure.Reporter)(nil)

// Handler is the push handler of a sink function (NetSuiteSink, SuiteXSink):
// run the delivery; on failure report it to the error topic and ack (Retry
// takes it from there: retryable failures are re-run with backoff,
// permanent ones go to the dead-letter archive); nack when the store is
// unreachable (an outage must not spend a message's attempts) and when the
// report itself fails, so that Pub/Sub redelivers the original and nothing
// is lost.
func Handler(r *Runner, rep Reporter, log *slog.Logger) message.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return func(ctx context.Context, m message.Message) error {
		_, err := r.Deliver(ctx, m)
		if err == nil {
			return nil
		}
		f, ok := failure.As(err)
		if !ok {
			// Runner returns only failures; keep the contract if that changes.
			f = failure.Retryable(r.Target(), failure.ReasonInternal, err.Error())
		}
		if f.Reason == failure.ReasonStoreUnavailable {
			// The database being down is not the message's fault (SPEC §6):
			// nack, so the subscription (no dead-letter policy, 10–600 s
			// backoff, 7 days) keeps it and ordering holds the record's
			// later messages behind it, instead of spending Retry's
			// attempts on an outage.
			log.WarnContext(ctx, "store unavailable: nack so Pub/Sub redelivers", "target", r.Target(),
				"message_id", m.ID, "event_id", f.EventID, "detail", f.Detail)
			return fmt.Errorf("%s: %s: %s", r.Target(), f.Reason, f.Detail)
		}
		id, rerr := rep.Report(ctx, failure.Message(f, m))
		if rerr != nil {
			log.ErrorContext(ctx, "failure not reported: nack so Pub/Sub redelivers", "target", r.Target(),
				"message_id", m.ID, "event_id", f.EventID, "reason", f.Reason, "error", rerr.Error())
			return fmt.Errorf("%s: report failure %s of message %s: %w", r.Target(), f.Reason, m.ID, rerr)
		}
		log.InfoContext(ctx, "failure reported", "target", r.Target(), "message_id", m.ID,
			"event_id", f.EventID, "reason", f.Reason, "retryable", f.Retryable, "error_message_id", id)
		return nil
	}
}
