package devstack_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/internal/devstack"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/publish/pubsub"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/sink/netsuite"
	"github.com/backbone-sync/backbone/shared/sink/suitex"
	"github.com/backbone-sync/backbone/shared/store/mysql"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// TestStackWiresFakesPubSubAndFunctions: the configuration the wiring gets
// reaches the store as the least-privilege user and the local fakes with
// credentials they accept, and the bridge pushes a raw message to Merge.
func TestStackWiresFakesPubSubAndFunctions(t *testing.T) {
	t.Parallel()
	db := mysqltest.Empty(t)
	ctx := context.Background()
	var merged atomic.Int32
	var cfgSeen config.Config
	wire := func(ctx context.Context, cfg config.Config, _ *pubsub.Publisher, _ *slog.Logger) (devstack.Functions, error) {
		cfgSeen = cfg
		sqlDB, closeDB, err := mysql.Open(ctx, cfg.DB)
		if err != nil {
			return devstack.Functions{}, err
		}
		handlers := map[string]message.Handler{}
		for _, target := range config.Targets {
			handlers[target] = func(context.Context, message.Message) error { return nil }
		}
		handlers[config.TargetMerge] = func(context.Context, message.Message) error { merged.Add(1); return nil }
		return devstack.Functions{Handlers: handlers, Store: mysql.New(sqlDB, closeDB)}, nil
	}
	s, err := devstack.Start(ctx, devstack.Options{Env: config.Sandbox, DSN: db.DSN, FuncAddr: "127.0.0.1:0",
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Serve: devstack.ServeInProcess}, wire)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	if cfgSeen.DB.DSN != s.WorkerDSN || s.WorkerDSN == db.DSN || s.NetSuite == nil || s.SuiteX == nil {
		t.Fatalf("functions' DSN %q, worker %q; fakes %v %v", cfgSeen.DB.DSN, s.WorkerDSN, s.NetSuite != nil, s.SuiteX != nil)
	}

	ev := event.Merged{ID: "0b6f3c1e-8d1f-4a57-9a43-2f0d7d6b1c55", RecordType: "customer", RecordID: "C-1", Source: "suitex",
		Timestamp: event.NewTime(time.Now()), Version: 1, Changes: map[string]json.RawMessage{"email": json.RawMessage(`"a@x"`)}}
	d := sink.Delivery{Merged: ev, IdempotencyKey: ev.ID + ":0123456789abcdef"}
	ns, err := netsuite.New(cfgSeen.NetSuite)
	if err != nil {
		t.Fatal(err)
	}
	sx, err := suitex.New(cfgSeen.SuiteX)
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Deliver(ctx, d); err != nil {
		t.Fatalf("the local NetSuite refused the configured credentials: %v (%v)", err, s.NetSuite.Refused())
	}
	if err := sx.Deliver(ctx, d); err != nil {
		t.Fatalf("the local SuiteX refused the configured secret: %v (%v)", err, s.SuiteX.Refused())
	}
	if len(s.NetSuite.Deliveries()) != 1 || len(s.SuiteX.Deliveries()) != 1 {
		t.Fatalf("deliveries: NetSuite %v, SuiteX %v", s.NetSuite.Deliveries(), s.SuiteX.Deliveries())
	}

	if _, err := publish.Guard(config.Sandbox, s.PubSub).Publish(ctx, config.Sandbox.Names().RawTopic,
		publish.Message{Data: []byte(`{}`), OrderingKey: "customer:C-1"}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); merged.Load() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the bridge did not push the raw message to Merge")
		}
	}
	s.Stop()
	s.Stop() // a second Stop does nothing
}

func TestWorkerNameFitsMySQL(t *testing.T) {
	t.Parallel()
	if got := devstack.WorkerName("backbone_dev"); got != "backbone_dev_worker" {
		t.Errorf("WorkerName(backbone_dev) = %q", got)
	}
	long := devstack.WorkerName("a_database_name_of_more_than_25_chars")
	if len(long) > 32 || long != devstack.WorkerName("a_database_name_of_more_than_25_chars") {
		t.Errorf("WorkerName of a long name: %q (%d characters)", long, len(long))
	}
}
