// Package pubsubtest runs a real pstest server for tests, with one
// environment's topology (the four topics and five subscriptions of SPEC §2,
// as topology.Desired defines them), and helpers to pull what was published.
package pubsubtest

import (
	"context"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/topology"
)

// Project is the project id tests use.
const Project = "backbone-test"

// Server is a pstest server with a connected client.
type Server struct {
	Srv    *pstest.Server
	Client *pubsub.Client
	Env    config.Env
	Names  config.Names
	opts   []option.ClientOption
}

// New starts pstest and a client; both stop when the test ends. With
// withTopology true, env's topics and subscriptions are created.
func New(t testing.TB, env config.Env, withTopology bool) *Server {
	t.Helper()
	ctx := context.Background()
	srv := pstest.NewServer()
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("pubsubtest: dial pstest: %v", err)
	}
	opts := []option.ClientOption{option.WithGRPCConn(conn)}
	c, err := pubsub.NewClient(ctx, Project, opts...)
	if err != nil {
		t.Fatalf("pubsubtest: client: %v", err)
	}
	s := &Server{Srv: srv, Client: c, Env: env, Names: env.Names(), opts: opts}
	t.Cleanup(func() {
		_ = c.Close()
		_ = conn.Close()
		_ = srv.Close()
	})
	if withTopology {
		s.CreateTopology(t)
	}
	return s
}

// Addr is the pstest address (for PUBSUB_EMULATOR_HOST).
func (s *Server) Addr() string { return s.Srv.Addr }

// TopicPath returns projects/P/topics/NAME.
func TopicPath(name string) string { return "projects/" + Project + "/topics/" + name }

// SubPath returns projects/P/subscriptions/NAME.
func SubPath(name string) string { return "projects/" + Project + "/subscriptions/" + name }

// CreateTopology creates the environment's topics and pull subscriptions as
// topology.Desired defines them, so that tests run against the attempts,
// backoffs, ack deadline and retention `backbone provision` and `backbone
// dev` use, not a copy of them that could drift.
func (s *Server) CreateTopology(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	want, err := topology.Desired(s.Env, nil, topology.Options{})
	if err != nil {
		t.Fatalf("pubsubtest: topology of %s: %v", s.Env, err)
	}
	for _, topic := range want.Topics {
		if _, err := s.Client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: TopicPath(topic)}); err != nil {
			t.Fatalf("pubsubtest: create topic %s: %v", topic, err)
		}
	}
	for _, sub := range want.Subscriptions {
		if _, err := s.Client.SubscriptionAdminClient.CreateSubscription(ctx, sub.Proto(Project)); err != nil {
			t.Fatalf("pubsubtest: create subscription %s: %v", sub.Name, err)
		}
	}
}

// Received is a message pulled from a subscription.
type Received struct {
	AckID           string
	ID              string
	Data            []byte
	Attributes      map[string]string
	OrderingKey     string
	DeliveryAttempt int
	PublishTime     time.Time
}

// Pull pulls up to max messages from subscription sub (short name) without
// waiting long, and acks them when ack is true.
func (s *Server) Pull(t testing.TB, sub string, max int, ack bool) []Received {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := s.Client.SubscriptionAdminClient.Pull(ctx, &pubsubpb.PullRequest{Subscription: SubPath(sub), MaxMessages: int32(max)})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		t.Fatalf("pubsubtest: pull %s: %v", sub, err)
	}
	var out []Received
	var ackIDs []string
	for _, rm := range resp.ReceivedMessages {
		m := rm.Message
		out = append(out, Received{AckID: rm.AckId, ID: m.MessageId, Data: m.Data, Attributes: m.Attributes,
			OrderingKey: m.OrderingKey, DeliveryAttempt: int(rm.DeliveryAttempt), PublishTime: m.PublishTime.AsTime()})
		ackIDs = append(ackIDs, rm.AckId)
	}
	if ack && len(ackIDs) > 0 {
		if err := s.Client.SubscriptionAdminClient.Acknowledge(context.Background(), &pubsubpb.AcknowledgeRequest{Subscription: SubPath(sub), AckIds: ackIDs}); err != nil {
			t.Fatalf("pubsubtest: ack %s: %v", sub, err)
		}
	}
	return out
}

// Drain pulls and acks everything currently on sub.
func (s *Server) Drain(t testing.TB, sub string) []Received {
	t.Helper()
	var all []Received
	for {
		got := s.Pull(t, sub, 1000, true)
		if len(got) == 0 {
			return all
		}
		all = append(all, got...)
	}
}

// Nack makes the given messages available again at once.
func (s *Server) Nack(t testing.TB, sub string, ackIDs ...string) {
	t.Helper()
	if err := s.Client.SubscriptionAdminClient.ModifyAckDeadline(context.Background(), &pubsubpb.ModifyAckDeadlineRequest{Subscription: SubPath(sub), AckIds: ackIDs, AckDeadlineSeconds: 0}); err != nil {
		t.Fatalf("pubsubtest: nack %s: %v", sub, err)
	}
}
