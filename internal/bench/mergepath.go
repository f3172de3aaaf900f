package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/internal/devstack"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/publish/pubsub"
)

// Mode b, the merge path: push requests to the Merge function.

// topicsOnly starts an in-process pstest server with the run's four topics and
// no subscriptions: the merged events are published (the merge waits for
// the server's ack, as in production) and then dropped, so nothing
// accumulates and nothing downstream runs.
func (b *benchmark) topicsOnly(ctx context.Context) (*pstest.Server, *pubsub.Publisher, error) {
	srv := pstest.NewServer()
	ps, err := pubsub.New(ctx, devstack.Project, srv.Addr)
	if err != nil {
		_ = srv.Close()
		return nil, nil, err
	}
	for _, t := range b.o.Env.Names().Topics() {
		if _, err := ps.Client().TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: "projects/" + devstack.Project + "/topics/" + t}); err != nil {
			_ = ps.Close()
			_ = srv.Close()
			return nil, nil, fmt.Errorf("create topic %s: %w", t, err)
		}
	}
	return srv, ps, nil
}

// mergeServer is the Merge function wired as `serve` wires it, behind
// message.HTTP, on an in-process HTTP server.
type mergeServer struct {
	url  string
	once sync.Once
	shut func()
}

func (m *mergeServer) stop() { m.once.Do(m.shut) }

func (b *benchmark) startMergeServer(ctx context.Context, workerDSN string, ps *pubsub.Publisher, emulator string) (*mergeServer, error) {
	vars := map[string]string{"BACKBONE_ENV": string(b.o.Env), "GCP_PROJECT": devstack.Project, "EVENT_STORE_DSN": workerDSN, "PUBSUB_EMULATOR_HOST": emulator}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		return nil, err
	}
	// The dev stack's pool size, so that (b) and (c) differ only in the
	// pipeline around the merge.
	cfg.DB.MaxOpenConns = 32
	h, closeStore, err := b.w.Merge(ctx, cfg, ps, b.log)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/"+config.TargetMerge, message.HTTP(b.log.With("function", config.TargetMerge), devstack.Project, h))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = closeStore()
		return nil, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return &mergeServer{url: "http://" + ln.Addr().String() + "/" + config.TargetMerge, shut: func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		// The store only: the Pub/Sub client is shared.
		_ = closeStore()
	}}, nil
}

// pushClient posts push requests with a connection per worker kept alive.
func pushClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 256}}
}

// pushOp is one worker posting raw events as push requests to url.
func (b *benchmark) pushOp(client *http.Client, url, prefix string, worker int, msgSeq *atomic.Int64) Op {
	env := b.o.Env
	s := NewStream(prefix, SourceOf(worker), RecordsPerWorker)
	sub := "projects/" + devstack.Project + "/subscriptions/" + env.Names().MergeSub
	return func(ctx context.Context) error {
		e := s.Next()
		body := message.PushBody(message.Message{
			Data: e.Raw(uuid.NewString()), Attributes: map[string]string{publish.AttrEnv: string(env)},
			ID: strconv.FormatInt(msgSeq.Add(1), 10), PublishTime: time.Now(), OrderingKey: publish.OrderingKey(RecordType, e.RecordID),
			Subscription: sub,
		})
		err := post(ctx, client, url, body)
		s.Done(err == nil)
		return err
	}
}

// post sends one push request and wants the ack.
func post(ctx context.Context, client *http.Client, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != message.StatusAck {
		return fmt.Errorf("push answered %d: %s", resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	return nil
}

// countedMerge counts b's statements per event: a Merge server whose store
// connects through the proxy.
func (b *benchmark) countedMerge(ctx context.Context, workerDSN string, ps *pubsub.Publisher, emulator string, client *http.Client, seq *atomic.Int64) (Statements, error) {
	proxy, pdsn, err := b.viaProxy(workerDSN)
	if err != nil {
		return Statements{}, err
	}
	defer proxy.Close()
	ms, err := b.startMergeServer(ctx, pdsn, ps, emulator)
	if err != nil {
		return Statements{}, err
	}
	defer ms.stop()
	before := proxy.Counts()
	n, err := RunN(ctx, RefConcurrency, b.sizes.countEvents, func(w int) Op {
		return b.pushOp(client, ms.url, fmt.Sprintf("bcount-w%d", w), w, seq)
	})
	after := proxy.Counts()
	if err != nil {
		return Statements{}, err
	}
	return PerEvent(after.Sub(before), n)
}
