// Package pushbridge delivers Pub/Sub messages to HTTP endpoints the way
// Pub/Sub push does, for `backbone dev` and the end-to-end tests: pstest
// stores push configs but never pushes and never backs off (SPEC §8), and
// the gcloud emulator neither dead-letters from nor sends deliveryAttempt on
// an ordered subscription (docs/emulators.md), so dev bridges Retry's there.
//
// Per subscription it pulls with unary Pull in large batches (pstest serves
// that three orders of magnitude faster than streaming Receive), POSTs each
// message as a push envelope, acks on 102/200/201/202/204, and otherwise
// redelivers after an exponential backoff. Ordering is the server's: pstest
// hands out one outstanding message per ordering key. Delivery attempts are
// the server's where a dead-letter policy exists (which also dead-letters
// after max attempts), else counted here.
package pushbridge

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/backbone-sync/backbone/shared/message"
)

// Route sends one subscription's messages to one endpoint.
type Route struct {
	Subscription string // short name
	Endpoint     string // URL
}

// Options tune a Bridge; zero values take the defaults.
type Options struct {
	MinBackoff  time.Duration // default 100ms (Pub/Sub's floor is 10s; dev is shorter)
	MaxBackoff  time.Duration // default 5s
	Concurrency int           // in-flight requests per subscription, default 64
	BatchSize   int32         // messages per Pull, default 1000
	Timeout     time.Duration // per push request, default 60s (the ack deadline)
	HTTPClient  *http.Client
	Log         *slog.Logger
	// ForwardDeadLetters makes the bridge publish a message to its
	// subscription's dead-letter topic itself after the last attempt, and
	// ack it: the gcloud emulator counts delivery attempts on an ordered
	// subscription but never forwards, and the message then blocks its key
	// (docs/emulators.md). pstest forwards on its own: leave it off there.
	ForwardDeadLetters bool
}

// Bridge runs the routes until its context ends.
type Bridge struct {
	client  *pubsub.Client
	project string
	routes  []Route
	o       Options

	mu sync.Mutex
	// attempts counts deliveries where the server does not, per
	// subscription and message id: a topic's subscriptions all see its
	// message ids, and each counts its own attempts.
	attempts map[string]int
	// lastTry remembers, for subscriptions with a dead-letter policy, where
	// and how often a message was last tried: pstest forwards a dead letter
	// with its message id but without the CloudPubSubDeadLetterSource*
	// attributes Pub/Sub adds, so the bridge adds them as Pub/Sub would.
	lastTry map[string]try
	stats   Stats
}

type try struct {
	subscription string
	attempt      int
	ackID        string // of the last delivery there
}

// Attributes Pub/Sub sets on a dead-lettered message.
const (
	AttrDeadLetterDeliveryCount = "CloudPubSubDeadLetterSourceDeliveryCount"
	AttrDeadLetterSubscription  = "CloudPubSubDeadLetterSourceSubscription"
)

// Stats counts what the bridge did.
type Stats struct {
	Delivered, Nacked int64
}

// New builds a bridge over client (project is the client's project).
func New(client *pubsub.Client, project string, routes []Route, o Options) *Bridge {
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(5*time.Second, o.MinBackoff)
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 1000
	}
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Second
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.Concurrency, MaxIdleConns: 4 * o.Concurrency}}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Bridge{client: client, project: project, routes: routes, o: o, attempts: map[string]int{}, lastTry: map[string]try{}}
}

// Stats returns the counters so far.
func (b *Bridge) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// Backoff is the delay before redelivery after the given attempt (1-based):
// min·2^(attempt-1), capped at max, as Pub/Sub's exponential retry policy.
func Backoff(attempt int, minB, maxB time.Duration) time.Duration {
	d := minB
	for i := 1; i < attempt && d < maxB; i++ {
		d *= 2
	}
	return min(d, maxB)
}

// Run delivers until ctx ends, then stops pulling, lets every request in
// flight finish and settles it (ack or nack), and returns.
func (b *Bridge) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, r := range b.routes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.runRoute(ctx, r)
		}()
	}
	wg.Wait()
	return nil
}

func (b *Bridge) subPath(name string) string {
	return "projects/" + b.project + "/subscriptions/" + name
}

func (b *Bridge) runRoute(ctx context.Context, r Route) {
	sub := b.subPath(r.Subscription)
	policy := b.deadLetterPolicy(ctx, sub)
	maxAttempts := int(policy.GetMaxDeliveryAttempts())
	if !b.o.ForwardDeadLetters {
		policy = nil
	}
	sem := make(chan struct{}, b.o.Concurrency)
	var inflight sync.WaitGroup
	defer inflight.Wait()
	idle := time.Millisecond
	for ctx.Err() == nil {
		free := int32(cap(sem) - len(sem))
		if free == 0 {
			// Every slot busy: wait for one instead of pulling more.
			select {
			case sem <- struct{}{}:
				<-sem
			case <-ctx.Done():
				return
			}
			continue
		}
		resp, err := b.client.SubscriptionAdminClient.Pull(ctx, &pubsubpb.PullRequest{
			Subscription: sub, MaxMessages: min(free, b.o.BatchSize), ReturnImmediately: true,
		})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			b.o.Log.Warn("pull failed", "subscription", r.Subscription, "error", err.Error())
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		if len(resp.ReceivedMessages) == 0 {
			// Poll fast when busy, back off to 20ms when idle.
			sleep(ctx, idle)
			idle = min(idle*2, 20*time.Millisecond)
			continue
		}
		idle = time.Millisecond
		for _, rm := range resp.ReceivedMessages {
			sem <- struct{}{}
			inflight.Add(1)
			go func() {
				defer func() { <-sem; inflight.Done() }()
				b.deliver(r, sub, rm, maxAttempts, policy)
			}()
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// deliver pushes one message and settles it. It deliberately does not use
// the Run context: a request in flight at shutdown completes and is acked.
func (b *Bridge) deliver(r Route, sub string, rm *pubsubpb.ReceivedMessage, maxAttempts int, forward *pubsubpb.DeadLetterPolicy) {
	pm := rm.Message
	attempt := int(rm.DeliveryAttempt)
	attrs := pm.Attributes
	b.mu.Lock()
	var forwardedFrom *try
	if prev, ok := b.lastTry[pm.MessageId]; ok && prev.subscription != r.Subscription {
		// A dead letter forwarded from prev.subscription.
		attrs = make(map[string]string, len(pm.Attributes)+2)
		for k, v := range pm.Attributes {
			attrs[k] = v
		}
		if attrs[AttrDeadLetterDeliveryCount] == "" {
			attrs[AttrDeadLetterDeliveryCount] = fmt.Sprint(prev.attempt)
			attrs[AttrDeadLetterSubscription] = prev.subscription
		}
		// Kept until this delivery is acked: until pstest has let go of the
		// source (below), a second copy can be forwarded and delivered
		// concurrently, and it must carry the same attributes.
		forwardedFrom = &prev
	}
	attemptKey := r.Subscription + "/" + pm.MessageId
	if attempt > 0 {
		b.lastTry[pm.MessageId] = try{subscription: r.Subscription, attempt: attempt, ackID: rm.AckId}
	} else {
		b.attempts[attemptKey]++
		attempt = b.attempts[attemptKey]
	}
	b.mu.Unlock()
	if forwardedFrom != nil {
		// pstest (v2.9.0) forwards a dead letter without removing it from
		// the source subscription: it "acks" it there by message id, which
		// its ack-id check ignores as stale. Left there, the message is
		// forwarded again on every pull and, with ordering, blocks every
		// later message of its key for pstest's 10-minute retention (a
		// redrive of the same record would not reach Retry). Pub/Sub removes
		// it; ack it with its last ack id (kept valid by settle) so that the
		// source subscription ends the same way.
		b.settle(b.subPath(forwardedFrom.subscription), forwardedFrom.ackID, 0, true, false)
	}
	m := message.Message{
		Data: pm.Data, Attributes: attrs, ID: pm.MessageId, PublishTime: pm.PublishTime.AsTime(),
		OrderingKey: pm.OrderingKey, DeliveryAttempt: attempt, Subscription: sub,
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.o.Timeout)
	defer cancel()
	status, err := b.post(ctx, r.Endpoint, message.PushBody(m))
	if err == nil && message.Acked(status) {
		b.settle(sub, rm.AckId, 0, true, false)
		b.mu.Lock()
		delete(b.attempts, attemptKey)
		if rm.DeliveryAttempt > 0 || forwardedFrom != nil {
			delete(b.lastTry, pm.MessageId)
		}
		b.stats.Delivered++
		b.mu.Unlock()
		return
	}
	if forward != nil && attempt >= maxAttempts && b.forwardDeadLetter(forward.DeadLetterTopic, r.Subscription, pm, attempt) {
		b.settle(sub, rm.AckId, 0, true, false)
		return
	}
	delay := Backoff(attempt, b.o.MinBackoff, b.o.MaxBackoff)
	b.o.Log.Debug("push nacked", "subscription", r.Subscription, "message_id", pm.MessageId,
		"attempt", attempt, "status", status, "error", fmt.Sprint(err), "retry_in", delay.String())
	b.mu.Lock()
	b.stats.Nacked++
	b.mu.Unlock()
	// Release the slot now; the redelivery happens after the backoff.
	// The server dead-letters the message on its next pull after the last
	// attempt; the nack must then leave pstest's ack id valid (see settle).
	last := maxAttempts > 0 && int(rm.DeliveryAttempt) >= maxAttempts
	time.AfterFunc(min(delay, 10*time.Second), func() { b.settle(sub, rm.AckId, delay, false, last) })
}

func (b *Bridge) post(ctx context.Context, url string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.o.HTTPClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var buf [512]byte
	for {
		if _, err := resp.Body.Read(buf[:]); err != nil {
			break
		}
	}
	return resp.StatusCode, nil
}

// deadLetterPolicy returns the subscription's dead-letter policy; nil when
// it has none (or it cannot be read: then the bridge only loses the pstest
// workaround in deliver).
func (b *Bridge) deadLetterPolicy(ctx context.Context, sub string) *pubsubpb.DeadLetterPolicy {
	s, err := b.client.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: sub})
	if err != nil {
		b.o.Log.Warn("read subscription", "subscription", sub, "error", err.Error())
		return nil
	}
	return s.GetDeadLetterPolicy()
}

// forwardDeadLetter publishes pm to topic as Pub/Sub dead-letters it, with
// the source attributes; false when that failed (the message is then
// nacked and forwarded on its next delivery).
func (b *Bridge) forwardDeadLetter(topic, subscription string, pm *pubsubpb.PubsubMessage, attempt int) bool {
	attrs := make(map[string]string, len(pm.Attributes)+3)
	for k, v := range pm.Attributes {
		attrs[k] = v
	}
	attrs[AttrDeadLetterDeliveryCount] = fmt.Sprint(attempt)
	attrs[AttrDeadLetterSubscription] = subscription
	attrs["CloudPubSubDeadLetterSourceSubscriptionProject"] = b.project
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := b.client.TopicAdminClient.Publish(ctx, &pubsubpb.PublishRequest{Topic: topic, Messages: []*pubsubpb.PubsubMessage{
		{Data: pm.Data, Attributes: attrs, OrderingKey: pm.OrderingKey}}})
	if err != nil {
		b.o.Log.Warn("forward dead letter", "subscription", subscription, "message_id", pm.MessageId, "error", err.Error())
		return false
	}
	b.o.Log.Debug("dead-lettered", "subscription", subscription, "message_id", pm.MessageId, "attempts", attempt, "topic", topic)
	return true
}

// settle acks, or makes the message available again. The caller has held
// a nacked message for up to 10s of its delay (the server's deadline has a
// granularity of a second); the rest is left to the ack deadline. last
// marks the nack of a message's last attempt before dead-lettering: a nack
// by deadline 0 makes pstest forget the ack id, and the bridge needs it
// valid to remove the dead letter from the source subscription once it has
// been forwarded (deliver), so it expires the lease after a second instead.
func (b *Bridge) settle(sub, ackID string, delay time.Duration, ack, last bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ack {
		if err := b.client.SubscriptionAdminClient.Acknowledge(ctx, &pubsubpb.AcknowledgeRequest{Subscription: sub, AckIds: []string{ackID}}); err != nil {
			b.o.Log.Warn("ack failed", "subscription", sub, "error", err.Error())
		}
		return
	}
	secs := int32(0)
	if delay > 10*time.Second {
		secs = int32((delay - 10*time.Second + time.Second - 1) / time.Second)
	}
	if last {
		secs = max(secs, 1)
	}
	if err := b.client.SubscriptionAdminClient.ModifyAckDeadline(ctx, &pubsubpb.ModifyAckDeadlineRequest{Subscription: sub, AckIds: []string{ackID}, AckDeadlineSeconds: secs}); err != nil {
		b.o.Log.Warn("nack failed", "subscription", sub, "error", err.Error())
	}
}
