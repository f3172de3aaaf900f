package main

import (
	"bytes"
	"context"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/internal/devstack"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/deadletter"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// The "must show" tests of retry, dead-letter archive and redrive (issue
// #5): each runs the whole dev stack on its own database and its own pstest,
// with the real dead-letter policy of events.error.{env}-retry-sub (5
// attempts). pstest does not back off; the push bridge does, shortened here
// so that five attempts take well under a second.

// startPipeline starts a dev stack on a fresh database and stops it when the
// test ends (a test may stop it earlier: stop is idempotent).
func startPipeline(t *testing.T) *e2e {
	t.Helper()
	db := mysqltest.Empty(t) // startDev creates the schema, as `backbone dev` does
	d, err := startDev(context.Background(), devstack.Options{Env: config.Sandbox, DSN: db.DSN, FuncAddr: "127.0.0.1:0",
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Serve: devstack.ServeInProcess})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	return &e2e{t: t, d: d, db: db, pub: publish.Guard(config.Sandbox, d.PubSub), clock: time.Date(2026, 3, 13, 20, 0, 0, 0, time.UTC)}
}

// createFromNetSuite publishes a NetSuite create of customer rid (so the
// SuiteX sink is the one that delivers it), waits until it is merged, and
// returns the stored event.
func (x *e2e) createFromNetSuite(rid string) store.Event {
	x.t.Helper()
	x.raw(uuid.NewString(), "customer", rid, "netsuite", 0, map[string]any{"email": strings.ToLower(rid) + "@example.com"})
	var ev store.Event
	x.waitFor("the event of "+rid+" to be stored", func() bool {
		hist, err := x.db.Store.History(context.Background(), "customer", rid)
		if err != nil {
			x.t.Fatal(err)
		}
		if len(hist) == 1 {
			ev = hist[0]
		}
		return len(hist) == 1
	})
	return ev
}

// waitDeadLetters waits until dead_letters holds n rows and returns them.
func (x *e2e) waitDeadLetters(n int) []store.DeadLetter {
	x.t.Helper()
	x.waitFor("dead letters", func() bool { return x.count("SELECT COUNT(*) FROM dead_letters") >= n })
	dls, err := x.db.Store.DeadLetters(context.Background(), store.DeadLetterFilter{Limit: 100})
	if err != nil {
		x.t.Fatal(err)
	}
	return dls
}

// audits counts the audit rows of one event with the given stage and outcome.
func (x *e2e) audits(eventID, stage, outcome string) int {
	x.t.Helper()
	return x.count("SELECT COUNT(*) FROM event_audit_log WHERE event_id = ? AND stage = ? AND processing_outcome = ?", eventID, stage, outcome)
}

// errorMessage decodes the error message a dead letter carries.
func errorMessage(t *testing.T, dl store.DeadLetter) event.Error {
	t.Helper()
	e, err := failure.Decode(dl.Data)
	if err != nil {
		t.Fatalf("dead letter %s does not hold an error message: %v", dl.MessageID, err)
	}
	return e
}

// TestPipelineSinkDownDeadLettersAfterFiveAttempts: SuiteX answers 503 for
// good. The SuiteX sink fails once and parks the failure; Retry re-runs the
// delivery 5 times (Pub/Sub's max attempts), pstest's dead-letter policy
// forwards the error message to events.dlq.sandbox, and DLQArchive stores it
// once with delivery_attempts = 5. V10 left exactly this routing to manual QA.
func TestPipelineSinkDownDeadLettersAfterFiveAttempts(t *testing.T) {
	t.Parallel()
	x := startPipeline(t)
	names := config.Sandbox.Names()

	// The real policy is in force on the stack's retry subscription.
	sub, err := x.d.PubSub.Client().SubscriptionAdminClient.GetSubscription(context.Background(),
		&pubsubpb.GetSubscriptionRequest{Subscription: "projects/" + devstack.Project + "/subscriptions/" + names.RetrySub})
	if err != nil {
		t.Fatal(err)
	}
	if p := sub.GetDeadLetterPolicy(); p.GetMaxDeliveryAttempts() != 5 || !strings.HasSuffix(p.GetDeadLetterTopic(), "/"+names.DLQTopic) {
		t.Fatalf("retry subscription dead-letter policy %v, want %s after 5 attempts", p, names.DLQTopic)
	}

	x.d.SuiteX.SetDown(http.StatusServiceUnavailable)
	ev := x.createFromNetSuite("PIPE-DOWN-1")
	dls := x.waitDeadLetters(1)
	// The dead letter is archived after Pub/Sub stopped redelivering: every
	// attempt has happened. Stop the stack so that nothing is in flight.
	x.d.Stop()

	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	dl := dls[0]
	if dl.DeliveryAttempts != 5 {
		t.Errorf("dead_letters.delivery_attempts = %d, want 5", dl.DeliveryAttempts)
	}
	if dl.Attributes[deadletter.AttrSourceDeliveryCount] != "5" {
		t.Errorf("attribute %s = %q, want 5", deadletter.AttrSourceDeliveryCount, dl.Attributes[deadletter.AttrSourceDeliveryCount])
	}
	if dl.Subscription != names.RetrySub {
		t.Errorf("dead letter from %q, want %s", dl.Subscription, names.RetrySub)
	}
	if dl.Stage != store.StageSuiteX || dl.Reason != "http_503" || dl.EventID != ev.ID ||
		dl.RecordType != "customer" || dl.RecordID != "PIPE-DOWN-1" {
		t.Errorf("dead letter %s: stage %q reason %q event %q record %s:%s; want suitex http_503 %s customer:PIPE-DOWN-1",
			dl.MessageID, dl.Stage, dl.Reason, dl.EventID, dl.RecordType, dl.RecordID, ev.ID)
	}
	if why := dl.Attributes[deadletter.AttrDeadLetterReason]; why != "" {
		t.Errorf("Retry parked it itself (%s): Pub/Sub's policy must have dead-lettered it", why)
	}
	e := errorMessage(t, dl)
	if !e.Retryable || e.Original.Subscription == "" || !strings.HasSuffix(e.Original.Subscription, names.SuiteXSub) {
		t.Errorf("error message: retryable %v, original from %q; want retryable, from %s", e.Retryable, e.Original.Subscription, names.SuiteXSub)
	}
	// SuiteXSink failed on its first delivery of the merged message (the
	// NetSuite sink's delivery of the same message id counts on its own).
	if e.Original.DeliveryAttempt != 1 {
		t.Errorf("original delivery attempt %d, want 1", e.Original.DeliveryAttempt)
	}

	// 1 request from SuiteXSink + 5 from Retry, each one audited as failed.
	if n := x.d.SuiteX.OutageHits(); n != 6 {
		t.Errorf("SuiteX answered %d requests with 503, want 6 (1 sink + 5 Retry attempts)", n)
	}
	if n := x.audits(ev.ID, store.StageSuiteX, store.OutcomeFailed); n != 6 {
		t.Errorf("%d failed SuiteX deliveries audited, want 6", n)
	}
	if n := x.audits(ev.ID, store.StageRetry, store.OutcomeRetried); n != 0 {
		t.Errorf("%d successful retries audited, want 0", n)
	}
	if n := len(x.d.SuiteX.Deliveries()); n != 0 {
		t.Errorf("SuiteX received %d deliveries while down", n)
	}
	// Stored once, audited once.
	if n := x.count("SELECT COUNT(*) FROM dead_letters"); n != 1 {
		t.Errorf("%d dead_letters rows, want 1", n)
	}
	if n := x.count("SELECT COUNT(*) FROM event_audit_log WHERE stage = ? AND processing_outcome = ? AND message_id = ?",
		store.StageDLQ, store.OutcomeDeadLetter, dl.MessageID); n != 1 {
		t.Errorf("%d dead_lettered audit rows, want 1", n)
	}
}

// TestPipelineSinkRecoversAfterTwoFailures: SuiteX fails twice, then
// accepts. The sink's attempt and Retry's first fail; Retry's second
// delivers. The event arrives once and nothing is dead-lettered.
func TestPipelineSinkRecoversAfterTwoFailures(t *testing.T) {
	t.Parallel()
	x := startPipeline(t)
	x.d.SuiteX.FailNext(2, http.StatusServiceUnavailable)
	ev := x.createFromNetSuite("PIPE-FLAKY-1")
	// Retry acks only after the delivery succeeded and audits that: once the
	// row is there, the error message is settled and cannot dead-letter.
	x.waitFor("the retry to succeed", func() bool { return x.audits(ev.ID, store.StageRetry, store.OutcomeRetried) > 0 })
	x.d.Stop()

	ds := x.d.SuiteX.Deliveries()
	if len(ds) != 1 || ds[0].EventID != ev.ID || ds[0].Duplicate {
		t.Fatalf("SuiteX deliveries %+v, want event %s once", ds, ev.ID)
	}
	if n := x.d.SuiteX.OutageHits(); n != 2 {
		t.Errorf("SuiteX failed %d requests, want 2", n)
	}
	if n := x.audits(ev.ID, store.StageSuiteX, store.OutcomeFailed); n != 2 {
		t.Errorf("%d failed SuiteX deliveries audited, want 2 (sink + first retry)", n)
	}
	if n := x.audits(ev.ID, store.StageSuiteX, store.OutcomeDelivered); n != 1 {
		t.Errorf("%d deliveries to SuiteX audited, want 1", n)
	}
	var detail string
	if err := x.db.Root.QueryRow("SELECT detail FROM event_audit_log WHERE event_id = ? AND stage = ? AND processing_outcome = ?",
		ev.ID, store.StageRetry, store.OutcomeRetried).Scan(&detail); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(detail, "delivery attempt 2") {
		t.Errorf("retried at %q, want Retry's delivery attempt 2", detail)
	}
	if n := x.count("SELECT COUNT(*) FROM dead_letters"); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
	if n := x.count("SELECT COUNT(*) FROM event_audit_log WHERE stage = ?", store.StageDLQ); n != 0 {
		t.Errorf("%d dead-letter audit rows, want none", n)
	}
}

// TestPipelineNonRetryableDeadLettersWithoutRetry: a permanent failure goes
// to the archive after one delivery on the retry subscription, and Retry
// never re-runs the stage.
func TestPipelineNonRetryableDeadLettersWithoutRetry(t *testing.T) {
	t.Parallel()
	names := config.Sandbox.Names()

	t.Run("SuiteX answers 400", func(t *testing.T) {
		t.Parallel()
		x := startPipeline(t)
		// Only the first request is refused: had Retry re-run the delivery,
		// it would have succeeded and SuiteX would have the event.
		x.d.SuiteX.FailNext(1, http.StatusBadRequest)
		ev := x.createFromNetSuite("PIPE-400-1")
		dls := x.waitDeadLetters(1)
		x.d.Stop()

		if n := x.d.SuiteX.OutageHits(); n != 1 {
			t.Errorf("SuiteX saw %d refused requests, want exactly 1 (no retry)", n)
		}
		if n := len(x.d.SuiteX.Deliveries()); n != 0 {
			t.Errorf("SuiteX accepted %d deliveries: Retry re-ran a permanent failure", n)
		}
		if len(dls) != 1 {
			t.Fatalf("%d dead letters, want 1", len(dls))
		}
		dl := dls[0]
		if dl.Stage != store.StageSuiteX || dl.Reason != "http_400" || dl.EventID != ev.ID || dl.DeliveryAttempts != 1 {
			t.Errorf("dead letter: stage %q reason %q event %q attempts %d; want suitex http_400 %s 1",
				dl.Stage, dl.Reason, dl.EventID, dl.DeliveryAttempts, ev.ID)
		}
		if why := dl.Attributes[deadletter.AttrDeadLetterReason]; why != "not_retryable" {
			t.Errorf("dead_letter_reason %q, want not_retryable (parked by Retry at once)", why)
		}
		if dl.Subscription != names.RetrySub {
			t.Errorf("dead letter from %q, want %s", dl.Subscription, names.RetrySub)
		}
		if e := errorMessage(t, dl); e.Retryable {
			t.Error("error message of a 400 says retryable")
		}
		// A 400 is a clear refusal (SuiteX did not apply it): refused.
		if n := x.audits(ev.ID, store.StageSuiteX, store.OutcomeRefused); n != 1 {
			t.Errorf("%d refused SuiteX deliveries audited, want 1", n)
		}
		if n := x.audits(ev.ID, store.StageSuiteX, store.OutcomeSending); n != 1 {
			t.Errorf("%d SuiteX attempts audited, want 1", n)
		}
		if n := x.audits(ev.ID, store.StageRetry, store.OutcomeRetried); n != 0 {
			t.Errorf("%d retries audited, want 0", n)
		}
	})

	t.Run("poison raw message", func(t *testing.T) {
		t.Parallel()
		x := startPipeline(t)
		x.publish([]byte(`{"record_type":"customer","record_id":"PIPE-POISON-1",`), "customer:PIPE-POISON-1")
		x.mu.Lock()
		rawID := x.sent[0]
		x.mu.Unlock()
		dls := x.waitDeadLetters(1)
		x.d.Stop()

		if len(dls) != 1 {
			t.Fatalf("%d dead letters, want 1", len(dls))
		}
		dl := dls[0]
		e := errorMessage(t, dl)
		if dl.Stage != store.StageMerge || dl.Reason == "" || e.Retryable || e.Original.MessageID != rawID || dl.DeliveryAttempts != 1 {
			t.Errorf("dead letter: stage %q reason %q retryable %v original %q attempts %d; want merge, a reason, not retryable, %s, 1",
				dl.Stage, dl.Reason, e.Retryable, e.Original.MessageID, dl.DeliveryAttempts, rawID)
		}
		if !bytes.Equal(e.Original.Data, []byte(`{"record_type":"customer","record_id":"PIPE-POISON-1",`)) {
			t.Errorf("the original data was not kept whole: %q", e.Original.Data)
		}
		if why := dl.Attributes[deadletter.AttrDeadLetterReason]; why != "not_retryable" {
			t.Errorf("dead_letter_reason %q, want not_retryable", why)
		}
		// The merge ran once (rejected); Retry never ran it again.
		if n := x.count("SELECT COUNT(*) FROM event_audit_log WHERE stage = ? AND message_id = ?", store.StageMerge, rawID); n != 1 {
			t.Errorf("%d merge audit rows for the poison message, want 1 (rejected, never re-run)", n)
		}
		if n := x.count("SELECT COUNT(*) FROM event_audit_log WHERE stage = ? AND message_id = ? AND processing_outcome = ?",
			store.StageMerge, rawID, store.OutcomeRejected); n != 1 {
			t.Errorf("poison message not audited rejected (%d rows)", n)
		}
		if n := x.count("SELECT COUNT(*) FROM event_audit_log WHERE stage = ?", store.StageRetry); n != 0 {
			t.Errorf("%d Retry audit rows, want none", n)
		}
		if n := x.count("SELECT COUNT(*) FROM events"); n != 0 {
			t.Errorf("%d events stored from a poison message", n)
		}
	})
}

// TestPipelineRedriveAfterRecovery: SuiteX is down until the delivery is
// dead-lettered; it comes back; the operator runs `backbone dlq redrive ID`
// against the running stack. The event is delivered once, the redrive is
// audited, and the archived row is still there, unchanged.
func TestPipelineRedriveAfterRecovery(t *testing.T) {
	t.Parallel()
	x := startPipeline(t)
	ctx := context.Background()
	x.d.SuiteX.SetDown(http.StatusServiceUnavailable)
	ev := x.createFromNetSuite("PIPE-REDRIVE-1")
	dls := x.waitDeadLetters(1)
	if len(dls) != 1 || dls[0].EventID != ev.ID {
		t.Fatalf("dead letters %+v, want one for event %s", dls, ev.ID)
	}
	id := dls[0].MessageID
	before, err := x.db.Store.DeadLetter(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(x.d.SuiteX.Deliveries()); n != 0 {
		t.Fatalf("SuiteX received %d deliveries while down", n)
	}

	x.d.SuiteX.SetDown(0)
	env := map[string]string{
		"BACKBONE_ENV":         string(config.Sandbox),
		"PUBSUB_EMULATOR_HOST": x.d.Emulator,
		"GCP_PROJECT":          devstack.Project,
		"EVENT_STORE_DSN":      x.db.DSN,
	}
	code, out, errOut := dlqRun(t, env, "dlq", "redrive", id)
	if code != 0 {
		t.Fatalf("dlq redrive: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if !strings.Contains(out, "redriven "+id) {
		t.Errorf("redrive output %q does not name %s", out, id)
	}
	x.waitFor("the redriven event to be delivered", func() bool {
		return x.audits(ev.ID, store.StageSuiteX, store.OutcomeDelivered) > 0 &&
			x.audits(ev.ID, store.StageRetry, store.OutcomeRetried) > 0
	})
	x.d.Stop()

	ds := x.d.SuiteX.Deliveries()
	if len(ds) != 1 || ds[0].EventID != ev.ID {
		t.Fatalf("SuiteX deliveries %+v, want event %s once", ds, ev.ID)
	}
	if n := x.audits(ev.ID, store.StageSuiteX, store.OutcomeDelivered); n != 1 {
		t.Errorf("%d deliveries audited, want 1", n)
	}
	var detail string
	if err := x.db.Root.QueryRow("SELECT detail FROM event_audit_log WHERE stage = ? AND processing_outcome = ? AND message_id = ?",
		store.StageRedrive, store.OutcomeRedriven, id).Scan(&detail); err != nil {
		t.Fatalf("redrive of %s not audited: %v", id, err)
	}
	if !strings.Contains(detail, config.Sandbox.Names().ErrorTopic) {
		t.Errorf("redrive audit detail %q does not name the error topic", detail)
	}
	if n := x.count("SELECT COUNT(*) FROM event_audit_log WHERE stage = ? AND processing_outcome = ?", store.StageRedrive, store.OutcomeRedriven); n != 1 {
		t.Errorf("%d redrive audit rows, want 1", n)
	}
	// The archive is append-only: the row is still there, as it was, and
	// the redrive did not come back as a second dead letter.
	after, err := x.db.Store.DeadLetter(ctx, id)
	if err != nil {
		t.Fatalf("dead letter %s gone after redrive: %v", id, err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Errorf("dead letter changed by redrive:\nbefore %+v\nafter  %+v", before, after)
	}
	if n := x.count("SELECT COUNT(*) FROM dead_letters"); n != 1 {
		t.Errorf("%d dead_letters rows, want 1", n)
	}
	// The stage re-run by Retry was the redriven message (redrive 1).
	var redrives int
	if err := x.db.Root.QueryRow(`SELECT COUNT(*) FROM event_audit_log WHERE stage = ? AND processing_outcome = ? AND event_id = ? AND message_id <> ?`,
		store.StageRetry, store.OutcomeRetried, ev.ID, id).Scan(&redrives); err != nil {
		t.Fatal(err)
	}
	if redrives != 1 {
		t.Errorf("%d successful retries of a new message, want 1 (the redriven one)", redrives)
	}
}
