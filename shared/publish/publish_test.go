package publish_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
)

func TestGuardRefusesOtherEnvironment(t *testing.T) {
	t.Parallel()
	ps := pubsubtest.New(t, config.Sandbox, true)
	pub := ps.Publisher(t)
	ctx := context.Background()
	for _, topic := range config.Production.Names().Topics() {
		_, err := pub.Publish(ctx, topic, publish.Message{Data: []byte("{}")})
		if !errors.Is(err, publish.ErrForeignTopic) {
			t.Errorf("sandbox publish to %s: err = %v, want ErrForeignTopic", topic, err)
		}
	}
	for _, topic := range []string{"projects/p/topics/events.raw.production", "events.raw", "events.raw.sandbox2", ""} {
		if _, err := pub.Publish(ctx, topic, publish.Message{}); !errors.Is(err, publish.ErrForeignTopic) {
			t.Errorf("publish to %q: err = %v, want ErrForeignTopic", topic, err)
		}
	}
}

func TestGuardStampsEnvAndOrderingKey(t *testing.T) {
	t.Parallel()
	ps := pubsubtest.New(t, config.Sandbox, true)
	pub := ps.Publisher(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key := publish.OrderingKey("customer", "C-1")
	id, err := pub.Publish(ctx, ps.Names.RawTopic, publish.Message{Data: []byte(`{"a":1}`), Attributes: map[string]string{"env": "production", "x": "y"}, OrderingKey: key})
	if err != nil {
		t.Fatal(err)
	}
	got := ps.Drain(t, ps.Names.MergeSub)
	if len(got) != 1 {
		t.Fatalf("got %d messages, want 1", len(got))
	}
	m := got[0]
	if m.ID != id || m.Attributes["env"] != "sandbox" || m.Attributes["x"] != "y" || m.OrderingKey != "customer:C-1" || string(m.Data) != `{"a":1}` {
		t.Errorf("message = %+v (id %s)", m, id)
	}
}
