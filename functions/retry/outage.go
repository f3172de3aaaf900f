package retryfunc

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/topology"
)

// AttrOutageReparks counts how often a message was parked again because the
// store was unreachable (visible in the archive if it ever gets there).
const AttrOutageReparks = "outage_reparks"

// lastAttempt says whether a nack now would make Pub/Sub dead-letter m.
// Without a delivery count (no dead-letter policy) it never would.
func lastAttempt(m message.Message) bool {
	return m.DeliveryAttempt >= topology.MaxDeliveryAttempts
}

// repark puts m back on the error topic as a new message, with fresh
// delivery attempts, and acks this one: the database being down is never a
// message's fault (SPEC §6), yet Pub/Sub counts every nack against the
// message. It waits OutageHold first, so a long outage cycles each parked
// message at the subscription's pace instead of in a tight loop. If the
// publish fails the message is nacked, and Pub/Sub dead-letters it: the
// archive keeps it and `dlq redrive --retryable` brings it back.
func (r *retry) repark(ctx context.Context, log *slog.Logger, m message.Message, cause error) error {
	select {
	case <-ctx.Done():
		return fmt.Errorf("park message %s again after a store outage: %w", m.ID, ctx.Err())
	case <-time.After(r.OutageHold):
	}
	var n int
	id, err := r.forward(ctx, r.Env.Names().ErrorTopic, m, m.Data, func(attrs map[string]string) {
		n, _ = strconv.Atoi(attrs[AttrOutageReparks])
		attrs[AttrOutageReparks] = strconv.Itoa(n + 1)
	})
	if err != nil {
		log.ErrorContext(ctx, "store unreachable on the last attempt and parking again failed: nack", "error", err.Error(), "cause", cause.Error())
		return fmt.Errorf("park message %s again after a store outage: %w", m.ID, err)
	}
	log.WarnContext(ctx, "store unreachable on the last attempt: parked again with fresh attempts", "new_message_id", id,
		"reparks", n+1, "cause", cause.Error())
	return nil
}
