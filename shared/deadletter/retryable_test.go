package deadletter_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/deadletter"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// mergedFailure is an error message of the SuiteX sink about version v of
// record rid: its original is the merged event of that version.
func mergedFailure(t *testing.T, rid string, v uint64, reason string, retryable bool) []byte {
	t.Helper()
	f := failure.Permanent(store.StageSuiteX, reason, "SuiteX answered "+reason)
	if retryable {
		f = failure.Retryable(store.StageSuiteX, reason, "SuiteX answered "+reason)
	}
	f.EventID, f.RecordType, f.RecordID = fmt.Sprintf("00000000-0000-0000-0000-%012d", v), "customer", rid
	orig := message.Message{
		Data: []byte(fmt.Sprintf(`{"id":%q,"record_type":"customer","record_id":%q,"source":"netsuite","base_version":%d,"version":%d,"changes":{"n":%d}}`,
			f.EventID, rid, v-1, v, v)),
		Attributes: map[string]string{"env": "sandbox"}, ID: fmt.Sprintf("orig-%s-%d", rid, v),
		OrderingKey: "customer:" + rid, DeliveryAttempt: 5, Subscription: "projects/backbone-test/subscriptions/events.merged.sandbox-suitex-sub",
	}
	b, err := json.Marshal(failure.Message(f, orig))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOrderPutsEachRecordsOldestVersionFirst(t *testing.T) {
	t.Parallel()
	dl := func(id, rid string, v uint64) store.DeadLetter {
		d, _ := deadletter.FromMessage(message.Message{ID: id, Data: mergedFailure(t, rid, v, "http_503", true)})
		return d
	}
	noRecord, _ := deadletter.FromMessage(message.Message{ID: "junk", Data: []byte("junk")})
	letters := []store.DeadLetter{dl("a3", "A", 3), dl("b2", "B", 2), noRecord, dl("a1", "A", 1), dl("b1", "B", 1), dl("a2", "A", 2)}
	var got []string
	for _, d := range deadletter.Order(letters) {
		got = append(got, d.MessageID)
	}
	// A's slots (0, 3, 5) get v1, v2, v3; B's (1, 4) v1, v2; the rest stays.
	if want := []string{"a1", "b1", "junk", "a2", "b2", "a3"}; !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
}

// A record's dead letters archived newest first (v2 failed, was archived,
// then v1) are redriven v1 then v2, so v1 is not skipped as stale.
func TestRedriveReplaysOldestVersionFirst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ps := pubsubtest.New(t, config.Sandbox, true)
	d := mysqltest.New(t)
	worker, _ := d.Worker(t)
	archiveAll(t, d.Store,
		message.Message{ID: "v3", Data: mergedFailure(t, "C-1", 3, "http_503", true)},
		message.Message{ID: "v2", Data: mergedFailure(t, "C-1", 2, "http_503", true)},
		message.Message{ID: "v1", Data: mergedFailure(t, "C-1", 1, "http_503", true)},
	)
	letters, err := deadletter.Select(ctx, worker, nil, store.DeadLetterFilter{Stage: "suitex", OldestFirst: true})
	if err != nil || len(letters) != 3 {
		t.Fatalf("select: %d, %v", len(letters), err)
	}
	r := &deadletter.Redriver{Store: worker, Pub: ps.Publisher(t), Env: config.Sandbox}
	var order []string
	res, err := r.Redrive(ctx, letters, false, func(o deadletter.Outcome) { order = append(order, o.MessageID) })
	if err != nil || res.Redriven != 3 {
		t.Fatalf("redrive: %+v, %v", res, err)
	}
	if want := []string{"v1", "v2", "v3"}; !slices.Equal(order, want) {
		t.Errorf("redriven in order %v, want %v", order, want)
	}
	var published []string
	for _, m := range ps.Drain(t, ps.Names.RetrySub) {
		published = append(published, m.Attributes[deadletter.AttrRedriveOf])
	}
	if want := []string{"v1", "v2", "v3"}; !slices.Equal(published, want) {
		t.Errorf("on the error topic in order %v, want %v", published, want)
	}
}

func TestTransientReasons(t *testing.T) {
	t.Parallel()
	for reason, want := range map[string]bool{
		"http_503": true, "http_500": true, "http_429": true, "timeout": true, "store_unavailable": true,
		"version_gap": true, "publish_failed": true, "connection_refused": true, "CONCURRENCY_LIMIT_EXCEEDED": true,
		"http_400": false, "http_404": false, "http_5": false, "http_5000": false, "invalid_json": false,
		"id_conflict": false, "store_error": false, "INVALID_FLD_VALUE": false, "": false,
	} {
		if got := deadletter.TransientReason(reason); got != want {
			t.Errorf("TransientReason(%q) = %v, want %v", reason, got, want)
		}
	}
}

// --retryable's plan over one archive: the transient failures of healthy
// targets are redriven, each once; a permanent rejection never is, whatever
// its stage; an unhealthy target's letters wait.
func TestPlanRetryableSkipsPermanentAndWaitsForHealth(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ps := pubsubtest.New(t, config.Sandbox, true)
	d := mysqltest.New(t)
	worker, _ := d.Worker(t)
	storeDown := failure.Retryable(store.StageMerge, "store_unavailable", "connection refused")
	storeDown.RecordType, storeDown.RecordID = "customer", "C-2"
	netsuite503 := failure.Retryable(store.StageNetSuite, "http_503", "down")
	netsuite503.RecordType, netsuite503.RecordID = "customer", "C-3"
	permanent := failure.Permanent(store.StageSuiteX, "http_400", "bad field")
	permanent.RecordType, permanent.RecordID = "customer", "C-4"
	parked := map[string]string{"env": "sandbox", deadletter.AttrDeadLetterReason: "not_retryable"}
	archiveAll(t, d.Store,
		message.Message{ID: "transient", Data: mergedFailure(t, "C-1", 1, "http_503", true), Attributes: map[string]string{"env": "sandbox"}},
		message.Message{ID: "store", Data: errorMessage(t, storeDown, "events.raw.sandbox-merge-sub", 5), Attributes: map[string]string{"env": "sandbox"}},
		message.Message{ID: "netsuite", Data: errorMessage(t, netsuite503, "events.merged.sandbox-netsuite-sub", 5), Attributes: map[string]string{"env": "sandbox"}},
		message.Message{ID: "rejected", Data: errorMessage(t, permanent, "events.merged.sandbox-suitex-sub", 1), Attributes: parked},
		// Exhausted after an operator's redrive of a permanent rejection: the
		// redrive set retryable, Retry then parked it failed_permanently.
		message.Message{ID: "refused-again", Data: mergedFailure(t, "C-5", 1, "http_422", false),
			Attributes: map[string]string{"env": "sandbox", deadletter.AttrDeadLetterReason: "failed_permanently"}},
		message.Message{ID: "junk", Data: []byte("not an error message")},
	)
	suitex := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotFound) }))
	defer suitex.Close()
	netsuite := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	defer netsuite.Close()
	client := &http.Client{Timeout: 2 * time.Second}
	checks := map[string]deadletter.HealthCheck{
		store.StageSuiteX:   deadletter.HTTPReachable(client, suitex.URL, 2*time.Second),
		store.StageNetSuite: deadletter.HTTPReachable(client, netsuite.URL, 2*time.Second),
		store.StageMerge:    worker.Ping,
	}
	all, err := worker.DeadLetters(ctx, store.DeadLetterFilter{OldestFirst: true})
	if err != nil || len(all) != 6 {
		t.Fatalf("archive: %d, %v", len(all), err)
	}
	plan, err := deadletter.PlanRetryable(ctx, worker, all, deadletter.DefaultMaxAutoRedrives, checks)
	if err != nil {
		t.Fatal(err)
	}
	var ready []string
	for _, d := range plan.Ready {
		ready = append(ready, d.MessageID)
	}
	if !slices.Equal(ready, []string{"transient", "store"}) || plan.Permanent != 3 || plan.Redriven != 0 ||
		len(plan.Held) != 1 || plan.Held[0].Stage != "netsuite" || plan.Held[0].Count != 1 {
		t.Fatalf("plan: ready %v, permanent %d, redriven %d, held %+v", ready, plan.Permanent, plan.Redriven, plan.Held)
	}
	r := &deadletter.Redriver{Store: worker, Pub: ps.Publisher(t), Env: config.Sandbox, Note: "automatic"}
	if res, err := r.Redrive(ctx, plan.Ready, false, nil); err != nil || res.Redriven != 2 {
		t.Fatalf("redrive: %+v, %v", res, err)
	}
	if got := len(ps.Drain(t, ps.Names.RetrySub)); got != 2 {
		t.Errorf("%d published, want 2", got)
	}
	// The next scheduled run redrives nothing again.
	plan, err = deadletter.PlanRetryable(ctx, worker, all, deadletter.DefaultMaxAutoRedrives, checks)
	if err != nil || len(plan.Ready) != 0 || plan.Redriven != 2 {
		t.Errorf("second plan: %+v, %v; want nothing ready, 2 redriven before", plan, err)
	}
	// A check that fails holds its stage.
	checks[store.StageSuiteX] = func(context.Context) error { return errors.New("down") }
	plan, _ = deadletter.PlanRetryable(ctx, worker, all[:1], deadletter.DefaultMaxAutoRedrives, checks)
	if len(plan.Ready) != 0 {
		t.Errorf("redriven before, so not ready whatever the health: %+v", plan)
	}
}

func TestHTTPReachable(t *testing.T) {
	t.Parallel()
	status := http.StatusUnauthorized
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status) }))
	defer srv.Close()
	check := deadletter.HTTPReachable(srv.Client(), srv.URL, time.Second)
	if err := check(context.Background()); err != nil {
		t.Errorf("401 means up: %v", err)
	}
	for _, s := range []int{500, 503, 429} {
		status = s
		if err := check(context.Background()); err == nil {
			t.Errorf("%d counted healthy", s)
		}
	}
	if err := deadletter.HTTPReachable(srv.Client(), "", time.Second)(context.Background()); err == nil {
		t.Error("no base URL counted healthy")
	}
	if err := deadletter.HTTPReachable(srv.Client(), "http://127.0.0.1:1", time.Second)(context.Background()); err == nil {
		t.Error("nothing listening counted healthy")
	}
}
