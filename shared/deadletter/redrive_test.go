package deadletter_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/deadletter"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

func TestBuildIncrementsRedriveAndKeepsTheRest(t *testing.T) {
	t.Parallel()
	var fields map[string]any
	if err := json.Unmarshal(errorMessage(t, suitexFailure("http_503"), "events.merged.sandbox-suitex-sub", 1), &fields); err != nil {
		t.Fatal(err)
	}
	fields["retryable"] = false
	fields["redrive"] = 2
	fields["field_from_a_newer_version"] = map[string]any{"kept": true}
	data, _ := json.Marshal(fields)
	d := store.DeadLetter{MessageID: "dl-9", Data: data, RecordType: "customer", RecordID: "C-1001", Attributes: map[string]string{
		"env": "sandbox", "stage": "suitex", "reason": "http_503", "retryable": "false",
		deadletter.AttrSourceDeliveryCount: "5", deadletter.AttrSourceSubscription: "events.error.sandbox-retry-sub",
		deadletter.AttrSourceSubscriptionProject: "p", deadletter.AttrSourceTopicPublishTime: "2026-03-13T20:00:00Z",
		deadletter.AttrDeadLetterReason: "not_retryable",
	}}
	m, redrive, err := deadletter.Build(d)
	if err != nil {
		t.Fatal(err)
	}
	if redrive != 3 {
		t.Errorf("redrive = %d, want 3", redrive)
	}
	e, err := failure.Decode(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if e.Redrive != 3 || !e.Retryable || e.Stage != "suitex" || e.Reason != "http_503" || string(e.Original.Data) != rawEvent {
		t.Errorf("redriven error message %+v", e)
	}
	var got map[string]any
	_ = json.Unmarshal(m.Data, &got)
	if !reflect.DeepEqual(got["field_from_a_newer_version"], map[string]any{"kept": true}) {
		t.Errorf("unknown field lost: %s", m.Data)
	}
	wantAttrs := map[string]string{"env": "sandbox", "stage": "suitex", "reason": "http_503", "retryable": "true", "redrive_of": "dl-9"}
	if !reflect.DeepEqual(m.Attributes, wantAttrs) {
		t.Errorf("attributes %v, want %v", m.Attributes, wantAttrs)
	}
	if m.OrderingKey != "customer:C-1001" {
		t.Errorf("ordering key %q", m.OrderingKey)
	}
	if d.Attributes[deadletter.AttrSourceDeliveryCount] != "5" {
		t.Error("Build changed the dead letter's attributes")
	}
}

func TestBuildOrderingKeyFallsBackToTheOriginal(t *testing.T) {
	t.Parallel()
	data, _ := json.Marshal(event.Error{Stage: "merge", Reason: "invalid_json", Original: event.Original{MessageID: "o", OrderingKey: "orig-key"}})
	m, redrive, err := deadletter.Build(store.DeadLetter{MessageID: "x", Data: data})
	if err != nil || m.OrderingKey != "orig-key" || redrive != 1 || m.Attributes[deadletter.AttrRedriveOf] != "x" {
		t.Errorf("build: %+v %d %v", m, redrive, err)
	}
}

func TestBuildRefusesUndecodable(t *testing.T) {
	t.Parallel()
	for _, data := range []string{"", "nope", `{"stage":"merge"}`} {
		if _, _, err := deadletter.Build(store.DeadLetter{MessageID: "u", Data: []byte(data)}); !errors.Is(err, deadletter.ErrCannotRedrive) {
			t.Errorf("%q: err = %v, want ErrCannotRedrive", data, err)
		}
	}
}

// fakeClock advances only when slept on (or by hand), and records sleeps.
type fakeClock struct {
	now   time.Time
	slept []time.Duration
}

func (c *fakeClock) Now() time.Time { return c.now }
func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.slept = append(c.slept, d)
	c.now = c.now.Add(d)
	return nil
}

func TestPacerSpacesCalls(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	p, err := deadletter.NewPacer(10, clk)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 4 {
		if err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := []time.Duration{100 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond}
	if !slices.Equal(clk.slept, want) {
		t.Errorf("sleeps %v, want %v (first call at once, then one interval each)", clk.slept, want)
	}
	// Work that takes longer than the interval needs no sleep; no credit
	// piles up while idle either (no burst after a pause).
	clk.now = clk.now.Add(5 * time.Second)
	clk.slept = nil
	_ = p.Wait(ctx)
	clk.now = clk.now.Add(30 * time.Millisecond)
	_ = p.Wait(ctx)
	if !slices.Equal(clk.slept, []time.Duration{70 * time.Millisecond}) {
		t.Errorf("after idle: sleeps %v, want [70ms]", clk.slept)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := p.Wait(cancelled); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled wait: %v", err)
	}
	for _, bad := range []float64{0, -1, math.NaN(), math.Inf(1), deadletter.MaxRate + 1} {
		if _, err := deadletter.NewPacer(bad, clk); err == nil {
			t.Errorf("rate %v accepted", bad)
		}
	}
}

// archiveAll stores the test's dead letters through the real archive path.
func archiveAll(t *testing.T, s store.Store, msgs ...message.Message) {
	t.Helper()
	for _, m := range msgs {
		if _, err := deadletter.Archive(context.Background(), s, config.Sandbox, m); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRedrive(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ps := pubsubtest.New(t, config.Sandbox, true)
	d := mysqltest.New(t)
	worker, _ := d.Worker(t) // redrive needs nothing beyond the sync_worker grants
	retryable := errorMessage(t, suitexFailure("http_503"), "events.merged.sandbox-suitex-sub", 1)
	permanent := errorMessage(t, failure.Permanent(store.StageMerge, "invalid_json", "x"), "events.raw.sandbox-merge-sub", 1)
	dlAttrs := map[string]string{"env": "sandbox", "stage": "suitex", "retryable": "true",
		deadletter.AttrSourceDeliveryCount: "5", deadletter.AttrSourceSubscription: "events.error.sandbox-retry-sub"}
	archiveAll(t, d.Store,
		message.Message{ID: "dl-a", Data: retryable, Attributes: dlAttrs},
		message.Message{ID: "dl-b", Data: permanent, Attributes: map[string]string{"env": "sandbox"}},
		message.Message{ID: "dl-u", Data: []byte("not an error message")},
		message.Message{ID: "dl-p", Data: retryable, Attributes: map[string]string{"env": "production"}},
		message.Message{ID: "dl-w", Data: retryable, Attributes: map[string]string{"env": "sandbox", deadletter.AttrDeadLetterReason: failure.ReasonWrongEnv}},
	)
	before := deadLetterRows(t, d.Root)
	letters, err := deadletter.Select(ctx, worker, []string{"dl-a", "dl-b", "dl-u", "dl-p", "dl-a", "dl-w"}, store.DeadLetterFilter{})
	if err != nil || len(letters) != 5 {
		t.Fatalf("select: %d, %v", len(letters), err)
	}

	// Dry run: nothing published, nothing audited, all reported.
	noPub := publish.Func(func(context.Context, string, publish.Message) (string, error) {
		t.Error("dry run published")
		return "", errors.New("no")
	})
	clk := &fakeClock{now: time.Now()}
	pacer, _ := deadletter.NewPacer(10, clk)
	r := &deadletter.Redriver{Store: worker, Pub: noPub, Env: config.Sandbox, Limiter: pacer}
	var outs []deadletter.Outcome
	res, err := r.Redrive(ctx, letters, true, func(o deadletter.Outcome) { outs = append(outs, o) })
	if err != nil || res != (deadletter.Result{WouldRedrive: 2, Skipped: 3}) {
		t.Fatalf("dry run: %+v, %v", res, err)
	}
	if outs[0].Action != deadletter.ActionWouldRedrive || outs[0].PreviousRedrives != 0 || outs[0].Redrive != 1 || outs[0].OrderingKey != "customer:C-1001" {
		t.Errorf("dry run outcome %+v", outs[0])
	}
	if outs[2].Action != deadletter.ActionSkipped || outs[3].Action != deadletter.ActionSkipped || !strings.Contains(outs[3].Error, "production") {
		t.Errorf("skips: %+v / %+v", outs[2], outs[3])
	}
	if outs[4].Action != deadletter.ActionSkipped || !strings.Contains(outs[4].Error, "another environment") {
		t.Errorf("parked as wrong_env by Retry: %+v", outs[4])
	}
	if got := ps.Pull(t, ps.Names.RetrySub, 10, false); len(got) != 0 {
		t.Fatalf("dry run published %d messages", len(got))
	}
	if len(clk.slept) != 0 {
		t.Errorf("dry run paced: %v", clk.slept)
	}

	// The real thing.
	r.Pub = ps.Publisher(t)
	outs = nil
	res, err = r.Redrive(ctx, letters, false, func(o deadletter.Outcome) { outs = append(outs, o) })
	if err != nil || res != (deadletter.Result{Redriven: 2, Skipped: 3}) {
		t.Fatalf("redrive: %+v, %v (%+v)", res, err, outs)
	}
	if !slices.Equal(clk.slept, []time.Duration{100 * time.Millisecond}) {
		t.Errorf("pacing: sleeps %v, want one interval between the two publishes", clk.slept)
	}
	got := ps.Drain(t, ps.Names.RetrySub)
	if len(got) != 2 {
		t.Fatalf("%d messages on the retry subscription, want 2", len(got))
	}
	byOrigin := map[string]pubsubtest.Received{}
	for _, m := range got {
		byOrigin[m.Attributes[deadletter.AttrRedriveOf]] = m
	}
	a := byOrigin["dl-a"]
	if a.ID != outs[0].PublishedID || a.OrderingKey != "customer:C-1001" || a.Attributes["env"] != "sandbox" ||
		a.Attributes["retryable"] != "true" || a.Attributes[deadletter.AttrSourceDeliveryCount] != "" {
		t.Errorf("redriven dl-a: %+v (published id %s)", a, outs[0].PublishedID)
	}
	e, err := failure.Decode(a.Data)
	if err != nil || e.Redrive != 1 || !e.Retryable || e.Stage != "suitex" || string(e.Original.Data) != rawEvent || e.EventID != "7d0c6b8e-3f5a-4c1e-9b7a-1e2d3c4b5a69" {
		t.Errorf("redriven dl-a data %+v, %v", e, err)
	}
	b := byOrigin["dl-b"]
	if e, err := failure.Decode(b.Data); err != nil || !e.Retryable || e.Reason != "invalid_json" || b.OrderingKey != "customer:C-1001" {
		t.Errorf("redriven dl-b: %+v %+v %v", b, e, err)
	}

	// Audited, and the archive unchanged.
	trail, err := d.Store.AuditTrail(ctx, "customer", "C-1001")
	if err != nil {
		t.Fatal(err)
	}
	var redriven []store.Audit
	for _, x := range trail {
		if x.Outcome == store.OutcomeRedriven {
			redriven = append(redriven, x)
		}
	}
	if len(redriven) != 1 || redriven[0].Stage != store.StageRedrive || redriven[0].MessageID != "dl-a" ||
		redriven[0].Fingerprint != deadletter.Fingerprint(retryable) || redriven[0].EventID != "7d0c6b8e-3f5a-4c1e-9b7a-1e2d3c4b5a69" ||
		!strings.Contains(redriven[0].Detail, a.ID) {
		t.Errorf("redrive audit rows %+v", redriven)
	}
	noRecord, _ := d.Store.AuditTrail(ctx, "", "")
	if n := countOutcome(noRecord, store.OutcomeRedriven); n != 1 {
		t.Errorf("dl-b redrive audits: %d, want 1", n)
	}
	if after := deadLetterRows(t, d.Root); after != before {
		t.Errorf("dead_letters changed by redrive:\nbefore %s\nafter  %s", before, after)
	}

	// A second dry run knows it was redriven; a second redrive is allowed.
	outs = nil
	r.Pub = noPub
	if _, err := r.Redrive(ctx, letters[:1], true, func(o deadletter.Outcome) { outs = append(outs, o) }); err != nil {
		t.Fatal(err)
	}
	if outs[0].PreviousRedrives != 1 || outs[0].LastRedrivenAt == nil {
		t.Errorf("second dry run: %+v", outs[0])
	}
	r.Pub = ps.Publisher(t)
	if res, err := r.Redrive(ctx, letters[:1], false, nil); err != nil || res.Redriven != 1 {
		t.Errorf("second redrive: %+v, %v", res, err)
	}
	v, err := deadletter.Show(ctx, d.Store, "dl-a")
	if err != nil || len(v.Redrives) != 2 {
		t.Errorf("show after two redrives: %d redrives, %v", len(v.Redrives), err)
	}
}

func countOutcome(trail []store.Audit, outcome string) int {
	n := 0
	for _, a := range trail {
		if a.Outcome == outcome {
			n++
		}
	}
	return n
}

func TestRedrivePublishFailureIsReportedNotAudited(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := mysqltest.New(t)
	archiveAll(t, d.Store, message.Message{ID: "dl-f", Data: errorMessage(t, suitexFailure("http_503"), "s", 1)})
	letters, err := deadletter.Select(ctx, d.Store, []string{"dl-f"}, store.DeadLetterFilter{})
	if err != nil {
		t.Fatal(err)
	}
	down := publish.Func(func(context.Context, string, publish.Message) (string, error) { return "", errors.New("unavailable") })
	var out deadletter.Outcome
	res, err := (&deadletter.Redriver{Store: d.Store, Pub: down, Env: config.Sandbox}).Redrive(ctx, letters, false, func(o deadletter.Outcome) { out = o })
	if err != nil || res.Failed != 1 || out.Action != deadletter.ActionFailed || !strings.Contains(out.Error, "unavailable") {
		t.Fatalf("redrive: %+v %+v %v", res, out, err)
	}
	trail, _ := d.Store.AuditTrail(ctx, "customer", "C-1001")
	if n := countOutcome(trail, store.OutcomeRedriven); n != 0 {
		t.Errorf("%d redriven audit rows for a failed publish", n)
	}
	if _, err := deadletter.Select(ctx, d.Store, []string{"nope"}, store.DeadLetterFilter{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("select of a missing id: %v", err)
	}
}
