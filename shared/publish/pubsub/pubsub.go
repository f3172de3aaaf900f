// Package pubsub is the Cloud Pub/Sub driver of shared/publish: a
// publish.Publisher over the pubsub/v2 client, with message ordering on, and
// the pre-flight check of a topic. Wrap it in publish.Guard.
package pubsub

import (
	"context"
	"fmt"
	"sync"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/backbone-sync/backbone/shared/publish"
)

// Publisher publishes with the pubsub/v2 client, with message ordering on.
// It keeps one of the client's *pubsub.Publisher per topic, for batching and
// connection reuse. Wrap it in publish.Guard: it does not check topic names
// itself.
type Publisher struct {
	client *pubsub.Client
	owned  bool

	mu   sync.Mutex
	pubs map[string]*pubsub.Publisher
}

var _ publish.Publisher = (*Publisher)(nil)

// New connects to Pub/Sub for project, or to the emulator at emulatorHost
// when it is set (config.Config.EmulatorHost).
func New(ctx context.Context, project, emulatorHost string, opts ...option.ClientOption) (*Publisher, error) {
	c, err := NewClient(ctx, project, emulatorHost, opts...)
	if err != nil {
		return nil, err
	}
	return &Publisher{client: c, owned: true, pubs: map[string]*pubsub.Publisher{}}, nil
}

// EmulatorOptions are the client options for an emulator at host:port.
// The Go client reads PUBSUB_EMULATOR_HOST from the process environment on
// its own; configuration read through config.Load passes it explicitly, so
// tests and `backbone dev` need not touch the process environment.
func EmulatorOptions(host string) []option.ClientOption {
	if host == "" {
		return nil
	}
	return []option.ClientOption{
		option.WithEndpoint(host),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		option.WithTelemetryDisabled(),
	}
}

// NewClient connects a raw pubsub/v2 client (admin and data), to the
// emulator when emulatorHost is set.
func NewClient(ctx context.Context, project, emulatorHost string, opts ...option.ClientOption) (*pubsub.Client, error) {
	opts = append(EmulatorOptions(emulatorHost), opts...)
	c, err := pubsub.NewClient(ctx, project, opts...)
	if err != nil {
		return nil, fmt.Errorf("pubsub client for project %q: %w", project, err)
	}
	return c, nil
}

// FromClient wraps an existing client; Close then leaves the client open.
func FromClient(c *pubsub.Client) *Publisher {
	return &Publisher{client: c, pubs: map[string]*pubsub.Publisher{}}
}

// Client returns the underlying client.
func (p *Publisher) Client() *pubsub.Client { return p.client }

func (p *Publisher) publisher(topic string) *pubsub.Publisher {
	p.mu.Lock()
	defer p.mu.Unlock()
	pub, ok := p.pubs[topic]
	if !ok {
		pub = p.client.Publisher(topic)
		pub.EnableMessageOrdering = true
		// Latency over batching: a merge waits for its publish before the ack.
		pub.PublishSettings.DelayThreshold = time.Millisecond
		p.pubs[topic] = pub
	}
	return pub
}

// Publish publishes m and waits for the server's id.
func (p *Publisher) Publish(ctx context.Context, topic string, m publish.Message) (string, error) {
	pub := p.publisher(topic)
	id, err := pub.Publish(ctx, &pubsub.Message{Data: m.Data, Attributes: m.Attributes, OrderingKey: m.OrderingKey}).Get(ctx)
	if err != nil {
		if m.OrderingKey != "" {
			// A failed ordered publish pauses its key; the caller retries (or
			// Pub/Sub redelivers), so let the next attempt through.
			pub.ResumePublish(m.OrderingKey)
		}
		return "", fmt.Errorf("publish to %s (key %q): %w", topic, m.OrderingKey, err)
	}
	return id, nil
}

// Close flushes and stops every publisher, and closes the client if owned.
func (p *Publisher) Close() error {
	p.mu.Lock()
	for _, pub := range p.pubs {
		pub.Stop()
	}
	p.pubs = map[string]*pubsub.Publisher{}
	p.mu.Unlock()
	if p.owned {
		return p.client.Close()
	}
	return nil
}
