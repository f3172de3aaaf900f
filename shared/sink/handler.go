package sink

import (
	"context"
	"log/slog"

	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
)

// Handler is the push handler of a sink function (NetSuiteSink, SuiteXSink):
// run the delivery; on failure report it to the error topic and ack (Retry
// takes it from there: retryable failures are re-run with backoff,
// permanent ones go to the dead-letter archive); nack when the store is
// unreachable (an outage must not spend a message's attempts) and when the
// report itself fails, so that Pub/Sub redelivers the original and nothing
// is lost. Park and Recover (shared/failure) hold that contract. Deliver
// recovers its own panics as well, since Retry calls it without this
// handler and a panic's text must be redacted of the target's secrets.
func Handler(r *Runner, rep failure.Sender, log *slog.Logger) message.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("target", r.Target())
	deliver := func(ctx context.Context, m message.Message) error {
		_, err := r.Deliver(ctx, m)
		if err == nil {
			return nil
		}
		if _, ok := failure.As(err); !ok {
			// Runner returns only failures; keep the contract if that changes.
			return failure.Retryable(r.Target(), failure.ReasonInternal, err.Error())
		}
		return err
	}
	return failure.Park(rep, log)(failure.Recover(r.Target(), log)(deliver))
}
