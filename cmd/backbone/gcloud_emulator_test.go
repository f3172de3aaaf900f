package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/backbone-sync/backbone/internal/devstack/gcloudemu"
)

// These tests pin down what the gcloud Pub/Sub emulator does (docs/emulators.md
// cites them). They run where the google-cloud-cli-pubsub-emulator package
// is installed; when it is installed but does not start, they fail.

const gcloudTestProject = "backbone-emu-test"

// gcloudEmulatorInstalled reports whether the machine has the package (its
// launcher), whatever the state of Java.
func gcloudEmulatorInstalled() bool {
	if _, err := gcloudemu.Find(); err == nil || !strings.Contains(err.Error(), "not installed") {
		return true
	}
	if err := exec.Command("dpkg-query", "-W", gcloudemu.Package).Run(); err == nil {
		return true
	}
	return false
}

// startGcloudForTest starts one emulator for the test, on a free port.
func startGcloudForTest(t *testing.T) *gcloudemu.Emulator {
	t.Helper()
	if !gcloudEmulatorInstalled() {
		t.Skip("the " + gcloudemu.Package + " package is not installed on this machine")
	}
	ctx, cancel := context.WithTimeout(context.Background(), gcloudemu.Startup)
	defer cancel()
	start := time.Now()
	e, err := gcloudemu.Start(ctx, 0)
	if err != nil {
		t.Fatalf("the %s package is installed but the emulator does not start: %v", gcloudemu.Package, err)
	}
	t.Logf("gcloud emulator on %s, started in %s", e.Addr, time.Since(start).Round(10*time.Millisecond))
	t.Cleanup(e.Stop)
	return e
}

func gcloudClient(t *testing.T, addr string) *pubsub.Client {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c, err := pubsub.NewClient(context.Background(), gcloudTestProject, option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(); _ = conn.Close() })
	return c
}

// pushRecorder is a push endpoint that answers with status() and records
// every request.
type pushRecorder struct {
	mu       sync.Mutex
	status   func(n int, body pushBody) int
	got      []pushBody
	at       []time.Time
	inFlight map[string]int // per ordering key
	maxInFl  int
	delay    time.Duration
}

type pushBody struct {
	Subscription    string `json:"subscription"`
	DeliveryAttempt *int   `json:"deliveryAttempt"`
	Message         struct {
		Data        []byte            `json:"data"`
		Attributes  map[string]string `json:"attributes"`
		MessageID   string            `json:"messageId"`
		PublishTime string            `json:"publishTime"`
		OrderingKey *string           `json:"orderingKey"`
	} `json:"message"`
	raw map[string]any
}

func (p *pushRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	data, _ := io.ReadAll(r.Body)
	var b pushBody
	_ = json.Unmarshal(data, &b)
	_ = json.Unmarshal(data, &b.raw)
	key := string(b.Message.Data)
	if i := strings.IndexByte(key, '-'); i > 0 {
		key = key[:i]
	}
	p.mu.Lock()
	p.got = append(p.got, b)
	p.at = append(p.at, time.Now())
	n := len(p.got)
	if p.inFlight == nil {
		p.inFlight = map[string]int{}
	}
	p.inFlight[key]++
	p.maxInFl = max(p.maxInFl, p.inFlight[key])
	p.mu.Unlock()
	time.Sleep(p.delay)
	p.mu.Lock()
	p.inFlight[key]--
	p.mu.Unlock()
	code := http.StatusNoContent
	if p.status != nil {
		code = p.status(n, b)
	}
	w.WriteHeader(code)
}

func (p *pushRecorder) snapshot() ([]pushBody, []time.Time, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]pushBody(nil), p.got...), append([]time.Time(nil), p.at...), p.maxInFl
}

func serveRecorder(t *testing.T, p *pushRecorder) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String() + "/push"
}

func topicPath(name string) string { return "projects/" + gcloudTestProject + "/topics/" + name }
func subPath(name string) string   { return "projects/" + gcloudTestProject + "/subscriptions/" + name }

func mustTopic(t *testing.T, c *pubsub.Client, name string) {
	t.Helper()
	if _, err := c.TopicAdminClient.CreateTopic(context.Background(), &pubsubpb.Topic{Name: topicPath(name)}); err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
}

func mustSub(t *testing.T, c *pubsub.Client, s *pubsubpb.Subscription) *pubsubpb.Subscription {
	t.Helper()
	got, err := c.SubscriptionAdminClient.CreateSubscription(context.Background(), s)
	if err != nil {
		t.Fatalf("create subscription %s: %v", s.Name, err)
	}
	return got
}

func publishTo(t *testing.T, c *pubsub.Client, topic string, data, key string) string {
	t.Helper()
	p := c.Publisher(topicPath(topic))
	p.EnableMessageOrdering = key != ""
	defer p.Stop()
	id, err := p.Publish(context.Background(), &pubsub.Message{Data: []byte(data), OrderingKey: key, Attributes: map[string]string{"env": "sandbox"}}).Get(context.Background())
	if err != nil {
		t.Fatalf("publish to %s: %v", topic, err)
	}
	return id
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pullAll pulls what is available on sub for up to d (or until it has
// enough, when enough > 0), acking it.
func pullAll(t *testing.T, c *pubsub.Client, sub string, d time.Duration, enough int) []*pubsubpb.ReceivedMessage {
	t.Helper()
	var out []*pubsubpb.ReceivedMessage
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && (enough == 0 || len(out) < enough) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := c.SubscriptionAdminClient.Pull(ctx, &pubsubpb.PullRequest{Subscription: subPath(sub), MaxMessages: 100})
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "DeadlineExceeded") {
			t.Fatalf("pull %s: %v", sub, err)
		}
		for _, m := range resp.GetReceivedMessages() {
			out = append(out, m)
			_ = c.SubscriptionAdminClient.Acknowledge(context.Background(), &pubsubpb.AcknowledgeRequest{Subscription: subPath(sub), AckIds: []string{m.AckId}})
		}
		time.Sleep(100 * time.Millisecond)
	}
	return out
}

// TestGcloudEmulatorBehaviour measures push, retry policy, ordering and
// dead-lettering of the real emulator, one emulator for all of them.
func TestGcloudEmulatorBehaviour(t *testing.T) {
	e := startGcloudForTest(t)
	c := gcloudClient(t, e.Addr)

	t.Run("PushEnvelope", func(t *testing.T) {
		t.Parallel()
		rec := &pushRecorder{}
		url := serveRecorder(t, rec)
		mustTopic(t, c, "envelope")
		mustSub(t, c, &pubsubpb.Subscription{Name: subPath("envelope-push"), Topic: topicPath("envelope"), EnableMessageOrdering: true,
			PushConfig: &pubsubpb.PushConfig{PushEndpoint: url}})
		id := publishTo(t, c, "envelope", "k1-0", "k1")
		waitUntil(t, 20*time.Second, "a push", func() bool { g, _, _ := rec.snapshot(); return len(g) > 0 })
		got, _, _ := rec.snapshot()
		b := got[0]
		if b.Subscription != subPath("envelope-push") || b.Message.MessageID != id || b.Message.PublishTime == "" || b.Message.Attributes["env"] != "sandbox" || string(b.Message.Data) != "k1-0" {
			t.Errorf("push body %+v", b.raw)
		}
		// Measured: no orderingKey and no deliveryAttempt in the body.
		if b.Message.OrderingKey != nil || b.DeliveryAttempt != nil {
			t.Errorf("the emulator now sends orderingKey %v / deliveryAttempt %v: update docs/emulators.md and trust them", b.Message.OrderingKey, b.DeliveryAttempt)
		}
		t.Logf("push body keys: %v", keys(b.raw))
	})

	// Dead-lettering from a push subscription, with and without ordering.
	for _, ordered := range []bool{false, true} {
		name := "PushRetryPolicyAndDeadLetter"
		if ordered {
			name = "OrderedPushDeadLetter"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rec := &pushRecorder{status: func(int, pushBody) int { return http.StatusServiceUnavailable }}
			url := serveRecorder(t, rec)
			topic := strings.ToLower(name)
			mustTopic(t, c, topic)
			mustTopic(t, c, topic+"-dlq")
			mustSub(t, c, &pubsubpb.Subscription{Name: subPath(topic + "-dlq-sub"), Topic: topicPath(topic + "-dlq")})
			mustSub(t, c, &pubsubpb.Subscription{Name: subPath(topic + "-push"), Topic: topicPath(topic), PushConfig: &pubsubpb.PushConfig{PushEndpoint: url},
				EnableMessageOrdering: ordered,
				RetryPolicy:           &pubsubpb.RetryPolicy{MinimumBackoff: durationpb.New(time.Second), MaximumBackoff: durationpb.New(4 * time.Second)},
				DeadLetterPolicy:      &pubsubpb.DeadLetterPolicy{DeadLetterTopic: topicPath(topic + "-dlq"), MaxDeliveryAttempts: 5}})
			key := ""
			if ordered {
				key = "K"
			}
			id := publishTo(t, c, topic, "k2-0", key)
			waitUntil(t, 30*time.Second, "5 push attempts", func() bool { g, _, _ := rec.snapshot(); return len(g) >= 5 })
			fifth := time.Now()
			enough := 1
			if ordered {
				enough = 0 // measured: nothing comes; wait the whole time
			}
			dead := pullAll(t, c, topic+"-dlq-sub", 8*time.Second, enough)
			got, at, _ := rec.snapshot()
			var gaps []string
			for i := 1; i < len(at); i++ {
				gaps = append(gaps, at[i].Sub(at[i-1]).Round(100*time.Millisecond).String())
			}
			t.Logf("push attempts %d, gaps %v, dead letters forwarded %d (pulled within 8s of the 5th attempt at %s)", len(got), gaps, len(dead), fifth.Format(time.StampMilli))
			if len(got) != 5 {
				t.Errorf("push attempts = %d, want the dead-letter policy's 5", len(got))
			}
			if len(at) > 1 && at[1].Sub(at[0]) < 800*time.Millisecond {
				t.Errorf("first redelivery after %s: the retry policy's minimum is 1s", at[1].Sub(at[0]))
			}
			if ordered {
				// Measured: an ordered push subscription stops after max
				// attempts without forwarding, and the message keeps
				// blocking its key: the next one is never pushed.
				if len(dead) != 0 {
					t.Errorf("the emulator now dead-letters from ordered push subscriptions (%d): update docs/emulators.md and drop the bridge for Retry", len(dead))
				}
				publishTo(t, c, topic, "k2-1", key)
				time.Sleep(5 * time.Second)
				if g, _, _ := rec.snapshot(); len(g) != 5 {
					t.Errorf("after the give-up, %d pushes (want still 5: the key stays blocked): update docs/emulators.md", len(g))
				}
				return
			}
			if len(dead) != 1 {
				t.Fatalf("dead letters forwarded = %d, want 1", len(dead))
			}
			m := dead[0].Message
			t.Logf("dead letter id %s (source %s), key %q, attributes %v", m.MessageId, id, m.OrderingKey, m.Attributes)
			if m.Attributes["CloudPubSubDeadLetterSourceDeliveryCount"] != "5" || m.Attributes["CloudPubSubDeadLetterSourceSubscription"] != topic+"-push" {
				t.Errorf("dead letter attributes %v", m.Attributes)
			}
		})
	}

	t.Run("OrderedPushWaitsForTheKey", func(t *testing.T) {
		t.Parallel()
		// The first message fails twice; the second of its key must not be
		// pushed before the first is acked.
		rec := &pushRecorder{status: func(n int, b pushBody) int {
			if string(b.Message.Data) == "B-0" && n <= 2 {
				return http.StatusServiceUnavailable
			}
			return http.StatusNoContent
		}}
		url := serveRecorder(t, rec)
		mustTopic(t, c, "blocking")
		mustSub(t, c, &pubsubpb.Subscription{Name: subPath("blocking-push"), Topic: topicPath("blocking"), EnableMessageOrdering: true,
			PushConfig:  &pubsubpb.PushConfig{PushEndpoint: url},
			RetryPolicy: &pubsubpb.RetryPolicy{MinimumBackoff: durationpb.New(time.Second), MaximumBackoff: durationpb.New(2 * time.Second)}})
		publishTo(t, c, "blocking", "B-0", "B")
		publishTo(t, c, "blocking", "B-1", "B")
		waitUntil(t, 30*time.Second, "B-1 pushed", func() bool {
			g, _, _ := rec.snapshot()
			return len(g) > 0 && string(g[len(g)-1].Message.Data) == "B-1"
		})
		got, _, _ := rec.snapshot()
		var seq []string
		for _, b := range got {
			seq = append(seq, string(b.Message.Data))
		}
		t.Logf("ordered push with a failing head: %v", seq)
		if strings.Join(seq, ",") != "B-0,B-0,B-0,B-1" {
			t.Errorf("pushes %v, want B-0 three times (two 503s), then B-1", seq)
		}
	})

	t.Run("PushWithoutRetryPolicy", func(t *testing.T) {
		t.Parallel()
		rec := &pushRecorder{status: func(n int, _ pushBody) int {
			if n < 3 {
				return http.StatusServiceUnavailable
			}
			return http.StatusNoContent
		}}
		url := serveRecorder(t, rec)
		mustTopic(t, c, "noretry")
		mustSub(t, c, &pubsubpb.Subscription{Name: subPath("noretry-push"), Topic: topicPath("noretry"), PushConfig: &pubsubpb.PushConfig{PushEndpoint: url}})
		publishTo(t, c, "noretry", "N-0", "")
		waitUntil(t, 40*time.Second, "3 pushes", func() bool { g, _, _ := rec.snapshot(); return len(g) >= 3 })
		_, at, _ := rec.snapshot()
		t.Logf("no retry policy: redelivered after %s and %s", at[1].Sub(at[0]).Round(100*time.Millisecond), at[2].Sub(at[1]).Round(100*time.Millisecond))
	})

	for _, ordered := range []bool{false, true} {
		name := "PullDeadLetter"
		if ordered {
			name = "OrderedPullDeadLetter"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testPullDeadLetter(t, c, strings.ToLower(name), ordered)
		})
	}
	t.Run("PushOrdering", func(t *testing.T) {
		t.Parallel()
		testPushOrdering(t, c)
	})
}

// testPullDeadLetter nacks one message until the server dead-letters it.
func testPullDeadLetter(t *testing.T, c *pubsub.Client, topic string, ordered bool) {
	mustTopic(t, c, topic)
	mustTopic(t, c, topic+"-dlq")
	mustSub(t, c, &pubsubpb.Subscription{Name: subPath(topic + "-dlq-sub"), Topic: topicPath(topic + "-dlq")})
	mustSub(t, c, &pubsubpb.Subscription{Name: subPath(topic + "-sub"), Topic: topicPath(topic), AckDeadlineSeconds: 10, EnableMessageOrdering: ordered,
		DeadLetterPolicy: &pubsubpb.DeadLetterPolicy{DeadLetterTopic: topicPath(topic + "-dlq"), MaxDeliveryAttempts: 5}})
	key := ""
	if ordered {
		key = "P"
	}
	publishTo(t, c, topic, "k3-0", key)
	var attempts []int32
	for i := 0; i < 8; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := c.SubscriptionAdminClient.Pull(ctx, &pubsubpb.PullRequest{Subscription: subPath(topic + "-sub"), MaxMessages: 10})
		cancel()
		if err != nil {
			continue
		}
		for _, m := range resp.ReceivedMessages {
			attempts = append(attempts, m.DeliveryAttempt)
			_ = c.SubscriptionAdminClient.ModifyAckDeadline(context.Background(), &pubsubpb.ModifyAckDeadlineRequest{Subscription: subPath(topic + "-sub"), AckIds: []string{m.AckId}})
		}
	}
	enough := 1
	if ordered {
		enough = 0
	}
	dead := pullAll(t, c, topic+"-dlq-sub", 3*time.Second, enough)
	t.Logf("pull delivery attempts %v, dead letters forwarded %d", attempts, len(dead))
	if len(attempts) == 0 || attempts[0] != 1 {
		t.Errorf("pull delivery attempts %v: want the first to be 1", attempts)
	}
	switch {
	case ordered && (len(dead) != 0 || len(attempts) != 5):
		// Measured: an ordered subscription counts the attempts but never
		// forwards; the bridge does (pushbridge.ForwardDeadLetters).
		t.Errorf("ordered pull: %d attempts, %d dead letters: measured 5 and 0, update docs/emulators.md", len(attempts), len(dead))
	case !ordered && (len(dead) != 1 || len(attempts) != 5):
		t.Errorf("pull: %d attempts, %d dead letters: want 5 and 1", len(attempts), len(dead))
	case !ordered:
		t.Logf("dead letter attributes %v", dead[0].Message.Attributes)
	}
}

func testPushOrdering(t *testing.T, c *pubsub.Client) {

	rec := &pushRecorder{delay: 30 * time.Millisecond}
	url := serveRecorder(t, rec)
	mustTopic(t, c, "ordered")
	mustSub(t, c, &pubsubpb.Subscription{Name: subPath("ordered-push"), Topic: topicPath("ordered"), EnableMessageOrdering: true,
		PushConfig: &pubsubpb.PushConfig{PushEndpoint: url}})
	p := c.Publisher(topicPath("ordered"))
	p.EnableMessageOrdering = true
	var results []*pubsub.PublishResult
	const n = 20
	for i := 0; i < n; i++ {
		results = append(results, p.Publish(context.Background(), &pubsub.Message{Data: []byte("A-" + itoa(i)), OrderingKey: "A"}))
	}
	for _, r := range results {
		if _, err := r.Get(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	p.Stop()
	waitUntil(t, 30*time.Second, "20 pushes", func() bool { g, _, _ := rec.snapshot(); return len(g) >= n })
	got, _, maxInFlight := rec.snapshot()
	inOrder := true
	for i, b := range got[:n] {
		if string(b.Message.Data) != "A-"+itoa(i) {
			inOrder = false
		}
	}
	t.Logf("ordered push: %d delivered, in publish order %v, at most %d in flight for one key", len(got), inOrder, maxInFlight)
	if !inOrder || maxInFlight != 1 {
		t.Errorf("ordered push: in order %v, max in flight per key %d (want true, 1)", inOrder, maxInFlight)
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			for k2 := range sub {
				out = append(out, k+"."+k2)
			}
			continue
		}
		out = append(out, k)
	}
	return out
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}
