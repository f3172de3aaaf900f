package failure

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/backbone-sync/backbone/shared/message"
)

// Recover turns a panic of next into a retryable internal_error failure of
// stage. A bug must neither lose the message nor crash the instance, nor loop
// on it: returned as a retryable failure, it is parked (Park) and Retry tries
// it again and dead-letters it after its attempts. Without Park around it
// the failure nacks, so Pub/Sub redelivers.
func Recover(stage string, log *slog.Logger) func(message.Handler) message.Handler {
	return RecoverRedacted(stage, log, nil)
}

// RecoverRedacted is Recover for a stage that holds secrets (a delivery
// target's credentials): redact removes them from the panic's text before it
// is logged or returned. nil redacts nothing.
func RecoverRedacted(stage string, log *slog.Logger, redact func(string) string) func(message.Handler) message.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if redact == nil {
		redact = func(s string) string { return s }
	}
	return func(next message.Handler) message.Handler {
		return func(ctx context.Context, m message.Message) (err error) {
			defer func() {
				if p := recover(); p != nil {
					log.ErrorContext(ctx, stage+" panicked", "message_id", m.ID, "panic", redact(fmt.Sprint(p)), "stack", string(debug.Stack()))
					err = Retryable(stage, ReasonInternal, redact(fmt.Sprintf("%s panicked: %v", stage, p)))
				}
			}()
			return next(ctx, m)
		}
	}
}
