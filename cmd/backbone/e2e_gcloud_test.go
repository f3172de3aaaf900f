package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/internal/devstack"
	"github.com/backbone-sync/backbone/internal/devstack/gcloudemu"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// startGcloudDev runs the dev stack on the gcloud emulator: real pushes to
// the functions, Retry's subscription bridged (docs/emulators.md). It fails,
// never skips, when the emulator package is installed but does not start.
func startGcloudDev(t *testing.T, db *mysqltest.DB) *devstack.Stack {
	t.Helper()
	if !gcloudEmulatorInstalled() {
		t.Skip("the " + gcloudemu.Package + " package is not installed on this machine")
	}
	d, err := startDev(context.Background(), devstack.Options{Env: config.Sandbox, DSN: db.DSN, FuncAddr: "127.0.0.1:0", Emulator: devstack.EmulatorGcloud,
		MinBackoff: 200 * time.Millisecond, MaxBackoff: 2 * time.Second, Serve: devstack.ServeInProcess, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("the %s package is installed but dev --emulator gcloud does not start: %v", gcloudemu.Package, err)
	}
	t.Cleanup(d.Stop)
	if d.Gcloud == nil {
		t.Fatal("dev did not start the gcloud emulator")
	}
	// The emulator pushes for real; only Retry's subscription is bridged.
	for _, s := range config.Sandbox.Names().Subscriptions() {
		got, err := d.PubSub.Client().SubscriptionAdminClient.GetSubscription(context.Background(), &pubsubpb.GetSubscriptionRequest{Subscription: "projects/" + d.Project + "/subscriptions/" + s.Name})
		if err != nil {
			t.Fatal(err)
		}
		if pushed := got.GetPushConfig().GetPushEndpoint() != ""; pushed == (s.Name == config.Sandbox.Names().RetrySub) {
			t.Errorf("%s: push endpoint %q", s.Name, got.GetPushConfig().GetPushEndpoint())
		}
	}
	return d
}

// TestEndToEndGcloud is TestEndToEnd's scenario, smaller, on the gcloud
// emulator: creates (a third redelivered), updates from alternating sources
// with concurrent edits and repeats, a SuiteX outage that Retry recovers,
// echoes and poison; then the same checks.
func TestEndToEndGcloud(t *testing.T) {
	t.Parallel()
	db := devDB(t)
	d := startGcloudDev(t, db)
	x := &e2e{t: t, d: d, db: db, pub: publish.Guard(config.Sandbox, d.PubSub), clock: time.Date(2026, 3, 13, 20, 0, 0, 0, time.UTC)}
	const records = 24
	rec := func(k int) (string, string) {
		if k%2 == 0 {
			return "customer", fmt.Sprintf("G-C-%03d", k)
		}
		return "sales_order", fmt.Sprintf("G-SO-%03d", k)
	}
	for k := 0; k < records; k++ {
		rt, rid := rec(k)
		data := x.raw(uuid.NewString(), rt, rid, "netsuite", 0, map[string]any{"name": fmt.Sprintf("Record %d", k), "n": 0})
		if k%3 == 0 {
			x.publish(data, publish.OrderingKey(rt, rid))
		}
	}
	x.waitMerged("creates")
	x.waitDelivered("creates delivered")
	for round := 1; round <= 3; round++ {
		if round == 3 {
			d.SuiteX.SetDown(http.StatusServiceUnavailable)
		}
		for k := 0; k < records; k++ {
			rt, rid := rec(k)
			base := x.head(rt, rid)
			src, other := "netsuite", "suitex"
			if (k+round)%2 == 1 {
				src, other = other, src
			}
			changes := map[string]any{"n": round, "by_" + src: fmt.Sprintf("r%d", round)}
			x.raw(uuid.NewString(), rt, rid, src, base, changes)
			switch {
			case round == 2 && k%3 == 0:
				x.raw(uuid.NewString(), rt, rid, other, base, map[string]any{"n": 100 + round, "by_" + other: "concurrent"})
			case round == 3 && k%4 == 0:
				x.raw("", rt, rid, src, base, changes)
			}
		}
		if round == 3 {
			x.waitFor("the outage to refuse a delivery", func() bool { return d.SuiteX.OutageHits() > 0 })
			time.Sleep(200 * time.Millisecond)
			d.SuiteX.SetDown(0)
		}
		x.waitMerged(fmt.Sprintf("round %d", round))
		x.waitDelivered(fmt.Sprintf("round %d delivered", round))
	}
	const echoRecords = 10
	for k := 0; k < echoRecords; k++ {
		rt, rid := rec(k)
		x.raw(uuid.NewString(), rt, rid, "netsuite", x.head(rt, rid), map[string]any{"email": fmt.Sprintf("e%d@example.com", k)})
	}
	x.waitMerged("echo setup")
	x.waitDelivered("echo setup delivered")
	for k := 0; k < echoRecords; k++ {
		rt, rid := rec(k)
		x.raw(uuid.NewString(), rt, rid, "suitex", x.head(rt, rid), map[string]any{"email": fmt.Sprintf("e%d@example.com", k)})
	}
	poison := []string{
		`{not json`,
		`{"record_type":"customer","record_id":"GP-1","source":"salesforce","timestamp":"2026-03-13T20:00:00Z","base_version":0,"changes":{"a":1}}`,
		`{"record_type":"customer","record_id":"GP-2","source":"netsuite","timestamp":"noon","base_version":0,"changes":{"a":1}}`,
		`{"record_type":"customer","record_id":"GP-3","source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":0,"changes":{}}`,
	}
	poisonIDs := map[string]bool{}
	for _, p := range poison {
		x.publish([]byte(p), "poison")
		x.mu.Lock()
		poisonIDs[x.sent[len(x.sent)-1]] = true
		x.mu.Unlock()
	}
	x.waitMerged("echoes and poison")
	x.waitFor("poison dead letters", func() bool { return x.count("SELECT COUNT(*) FROM dead_letters") >= len(poison) })
	x.waitDelivered("everything delivered")
	check(t, x, poisonIDs, records, echoRecords)
}

// TestGcloudRetryDeadLetters: a delivery that keeps failing is dead-lettered
// after Retry's 5 attempts and archived, on the gcloud emulator. The
// emulator counts the attempts of Retry's ordered subscription but never
// forwards the message (TestGcloudEmulatorBehaviour/OrderedPullDeadLetter):
// the bridge does, and this shows the archive gets it.
func TestGcloudRetryDeadLetters(t *testing.T) {
	t.Parallel()
	db := devDB(t)
	d := startGcloudDev(t, db)
	x := &e2e{t: t, d: d, db: db, pub: publish.Guard(config.Sandbox, d.PubSub), clock: time.Date(2026, 3, 13, 20, 0, 0, 0, time.UTC)}
	d.SuiteX.SetDown(http.StatusServiceUnavailable)
	x.raw(uuid.NewString(), "customer", "GDL-1", "netsuite", 0, map[string]any{"name": "down"})
	x.waitFor("a SuiteX dead letter", func() bool {
		return x.count("SELECT COUNT(*) FROM dead_letters WHERE stage = 'suitex'") > 0
	})
	dls, err := db.Store.DeadLetters(context.Background(), store.DeadLetterFilter{RecordType: "customer", RecordID: "GDL-1", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || dls[0].DeliveryAttempts != 5 || dls[0].Subscription != config.Sandbox.Names().RetrySub {
		t.Fatalf("dead letters %+v: want one, after 5 attempts on %s", dls, config.Sandbox.Names().RetrySub)
	}
	// The key is not blocked: the record's next change is merged and, once
	// SuiteX is back, delivered.
	d.SuiteX.SetDown(0)
	x.raw(uuid.NewString(), "customer", "GDL-1", "netsuite", 1, map[string]any{"name": "up"})
	x.waitMerged("the next change")
	x.waitDelivered("the next change delivered")
}
