package merge

import (
	"context"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/message"
)

// RejectInvalid rejects a message the trigger adapter could decode only as
// bad input (m.Invalid: a CloudEvent of another type, or one missing its
// parts): audited `rejected` with the adapter's reason and returned as a
// permanent failure to park. It is never merged.
func (e *Engine) RejectInvalid(ctx context.Context, m message.Message) (Result, error) {
	res := Result{Fingerprint: event.HashHex(m.Data)}
	return e.reject(ctx, m, res, m.Invalid.Reason, m.Invalid.Detail)
}
