package failure

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/message"
)

// Sender reports an error message; *Reporter is the implementation, and
// tests give a fake that can fail.
type Sender interface {
	Report(ctx context.Context, e event.Error) (string, error)
}

var _ Sender = (*Reporter)(nil)

// Park gives next's failures the ack/nack contract every function shares
// (SPEC §6). A *Failure is reported to the error topic and the message is
// acked: Retry re-runs the retryable ones with backoff, the permanent ones go
// on to the dead-letter archive. The message is nacked, so that Pub/Sub
// redelivers the original and nothing is lost, when the report itself fails,
// and when the store is unavailable: the database being down is not the
// message's fault, and the subscription (no dead-letter policy, 10–600 s
// backoff, 7 days) keeps it while ordering holds the record's later messages
// behind it, instead of spending Retry's attempts on an outage.
//
// next must return nil or a *Failure: each function classifies its own
// errors, since what an unclassified error means differs between stages. Any
// other error nacks unchanged.
func Park(s Sender, log *slog.Logger) func(message.Handler) message.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return func(next message.Handler) message.Handler {
		return func(ctx context.Context, m message.Message) error {
			err := next(ctx, m)
			if err == nil {
				return nil
			}
			f, ok := As(err)
			if !ok {
				return err
			}
			if f.Reason == ReasonStoreUnavailable {
				log.WarnContext(ctx, "store unavailable: nack so Pub/Sub redelivers", "stage", f.Stage, "message_id", m.ID,
					"record", f.RecordType+":"+f.RecordID, "event_id", f.EventID, "detail", f.Detail)
				return fmt.Errorf("%s: %s: %s", f.Stage, f.Reason, f.Detail)
			}
			id, rerr := s.Report(ctx, Message(f, m))
			if rerr != nil {
				log.ErrorContext(ctx, "failure not reported: nack so Pub/Sub redelivers", "stage", f.Stage, "message_id", m.ID,
					"event_id", f.EventID, "reason", f.Reason, "retryable", f.Retryable, "error", rerr.Error())
				return fmt.Errorf("%s: report failure %s of message %s: %w", f.Stage, f.Reason, m.ID, rerr)
			}
			level := slog.LevelWarn
			if f.Retryable {
				level = slog.LevelInfo // parked for Retry: expected in normal operation
			}
			log.Log(ctx, level, "failure reported", "stage", f.Stage, "reason", f.Reason, "retryable", f.Retryable,
				"record", f.RecordType+":"+f.RecordID, "event_id", f.EventID, "message_id", m.ID,
				"error_message_id", id, "detail", f.Detail)
			return nil
		}
	}
}
