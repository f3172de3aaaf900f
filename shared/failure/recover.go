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
// it again and dead-letters it after its attempts.
func Recover(stage string, log *slog.Logger) func(message.Handler) message.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return func(next message.Handler) message.Handler {
		return func(ctx context.Context, m message.Message) (err error) {
			defer func() {
				if p := recover(); p != nil {
					log.ErrorContext(ctx, stage+" panicked", "message_id", m.ID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
					err = Retryable(stage, ReasonInternal, fmt.Sprintf("%s panicked: %v", stage, p))
				}
			}()
			return next(ctx, m)
		}
	}
}
