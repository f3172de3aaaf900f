// Package publish is how the backbone publishes to Pub/Sub: a small
// interface and the cross-environment guard that every publisher is wrapped
// in. The Cloud Pub/Sub driver is shared/publish/pubsub.
package publish

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/backbone-sync/backbone/shared/config"
)

// Message is one outgoing Pub/Sub message.
type Message struct {
	Data        []byte
	Attributes  map[string]string
	OrderingKey string // {record_type}:{record_id} for everything the backbone publishes
}

// Publisher publishes to a topic by its short name (events.raw.sandbox) and
// returns the server-assigned message id once the server has it.
type Publisher interface {
	Publish(ctx context.Context, topic string, m Message) (string, error)
}

// Func adapts a function to Publisher (tests inject failures with it).
type Func func(ctx context.Context, topic string, m Message) (string, error)

// Publish calls f.
func (f Func) Publish(ctx context.Context, topic string, m Message) (string, error) {
	return f(ctx, topic, m)
}

// ErrForeignTopic is returned for a topic of another environment.
var ErrForeignTopic = errors.New("topic belongs to another environment")

// AttrEnv is the attribute every published message carries.
const AttrEnv = "env"

// Guard wraps next so that it publishes only to env's own topics and stamps
// every message with the `env` attribute (SPEC §2, cross-environment guard).
func Guard(env config.Env, next Publisher) Publisher {
	return Func(func(ctx context.Context, topic string, m Message) (string, error) {
		if !env.OwnsTopic(topic) {
			return "", fmt.Errorf("publish to %q refused in %s: %w", topic, env, ErrForeignTopic)
		}
		attrs := make(map[string]string, len(m.Attributes)+1)
		maps.Copy(attrs, m.Attributes)
		attrs[AttrEnv] = string(env)
		m.Attributes = attrs
		return next.Publish(ctx, topic, m)
	})
}

// OrderingKey is the ordering key of every message about one record.
func OrderingKey(recordType, recordID string) string { return recordType + ":" + recordID }
