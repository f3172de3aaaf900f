package deadletter_test

import (
	"bytes"
	"context"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/deadletter"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

func TestFromMessagePrefersPubSubDeadLetterAttributes(t *testing.T) {
	t.Parallel()
	data := errorMessage(t, suitexFailure("http_503"), "events.merged.sandbox-suitex-sub", 2)
	attrs := map[string]string{
		"env": "sandbox", "stage": "suitex",
		deadletter.AttrSourceDeliveryCount:       "5",
		deadletter.AttrSourceSubscription:        "events.error.sandbox-retry-sub",
		deadletter.AttrSourceSubscriptionProject: "backbone-test",
	}
	pt := time.Date(2026, 3, 13, 21, 0, 0, 123456000, time.UTC)
	d, err := deadletter.FromMessage(message.Message{ID: "m1", Data: data, Attributes: attrs, PublishTime: pt, Subscription: "projects/p/subscriptions/events.dlq.sandbox-sub"})
	if err != nil {
		t.Fatal(err)
	}
	want := store.DeadLetter{MessageID: "m1", ContentDigest: store.DigestOf(data), Subscription: "events.error.sandbox-retry-sub", DeliveryAttempts: 5,
		Stage: "suitex", Reason: "http_503", Detail: "SuiteX answered 503", EventID: "7d0c6b8e-3f5a-4c1e-9b7a-1e2d3c4b5a69",
		RecordType: "customer", RecordID: "C-1001", PublishTime: pt}
	got := d
	got.Data, got.Attributes = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("dead letter\n got %+v\nwant %+v", got, want)
	}
	if !bytes.Equal(d.Data, data) || !maps.Equal(d.Attributes, attrs) {
		t.Errorf("data or attributes not verbatim: %s %v", d.Data, d.Attributes)
	}
}

func TestFromMessageFallsBackToTheOriginal(t *testing.T) {
	t.Parallel()
	// Retry parks a non-retryable error directly: no Pub/Sub attributes.
	f := failure.Permanent(store.StageMerge, "invalid_json", "not JSON")
	data := errorMessage(t, f, "events.raw.sandbox-merge-sub", 3)
	d, err := deadletter.FromMessage(message.Message{ID: "m2", Data: data, Attributes: map[string]string{"env": "sandbox"}})
	if err != nil {
		t.Fatal(err)
	}
	if d.DeliveryAttempts != 3 || d.Subscription != "events.raw.sandbox-merge-sub" || d.Stage != "merge" || d.Reason != "invalid_json" {
		t.Errorf("fallback: %+v", d)
	}
	if d.RecordType != "" || d.RecordID != "" || d.EventID != "" {
		t.Errorf("no record was known, got %q:%q event %q", d.RecordType, d.RecordID, d.EventID)
	}
	// A delivery count that is not a number does not override.
	d, _ = deadletter.FromMessage(message.Message{ID: "m3", Data: data, Attributes: map[string]string{deadletter.AttrSourceDeliveryCount: "five"}})
	if d.DeliveryAttempts != 3 {
		t.Errorf("attempts = %d, want the original's 3", d.DeliveryAttempts)
	}
}

func TestFromMessageUndecodable(t *testing.T) {
	t.Parallel()
	for _, data := range []string{"", "not json", `{"stage":"merge"}`, `[1,2]`, `{"stage":"merge","reason":"x","retryable":"yes"}`} {
		d, err := deadletter.FromMessage(message.Message{ID: "u", Data: []byte(data)})
		if err == nil {
			t.Errorf("%q: no decode error", data)
		}
		if d.Stage != deadletter.StageUnknown || d.Reason != deadletter.ReasonUndecodable || string(d.Data) != data || d.Data == nil || d.Attributes == nil {
			t.Errorf("%q: %+v", data, d)
		}
	}
}

func TestFromMessageFitsColumns(t *testing.T) {
	t.Parallel()
	f := suitexFailure(strings.Repeat("r", 300))
	f.Stage = strings.Repeat("s", 40)
	f.RecordID = strings.Repeat("😀", 192) // one character over VARCHAR(191)
	f.EventID = strings.Repeat("e", 37)
	f.Detail = strings.Repeat("é", 20000)
	d, err := deadletter.FromMessage(message.Message{ID: "big", Data: errorMessage(t, f, "s", 1)})
	if err != nil {
		t.Fatal(err)
	}
	if len([]rune(d.Stage)) != 32 || len([]rune(d.Reason)) != 128 {
		t.Errorf("codes not truncated: %d %d", len([]rune(d.Stage)), len([]rune(d.Reason)))
	}
	if d.RecordType != "" || d.RecordID != "" || d.EventID != "" {
		t.Errorf("identifiers that do not fit must be dropped, got %q %q %q", d.RecordType, d.RecordID, d.EventID)
	}
	if len(d.Detail) > 16<<10 || !strings.HasPrefix(d.Detail, "éé") || strings.ToValidUTF8(d.Detail, "?") != d.Detail {
		t.Errorf("detail not cut at a character boundary (%d bytes)", len(d.Detail))
	}
}

// The archive must take what does not fit, on the real server.
func TestArchiveStoresOversizedValues(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	f := suitexFailure(strings.Repeat("r", 300))
	f.RecordID = strings.Repeat("😀", 192)
	data := errorMessage(t, f, "s", 1)
	a, err := deadletter.Archive(context.Background(), d.Store, config.Sandbox, message.Message{ID: "big", Data: data})
	if err != nil || !a.New {
		t.Fatalf("archive: %+v, %v", a, err)
	}
	got, err := d.Store.DeadLetter(context.Background(), "big")
	if err != nil || !bytes.Equal(got.Data, data) {
		t.Fatalf("stored %v, %v", got, err)
	}
}

func TestArchiveAuditsOnce(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	ctx := context.Background()
	data := errorMessage(t, suitexFailure("http_503"), "events.merged.sandbox-suitex-sub", 1)
	m := message.Message{ID: "dl-1", Data: data, Attributes: map[string]string{"env": "sandbox"}}
	for i := range 3 {
		a, err := deadletter.Archive(ctx, d.Store, config.Sandbox, m)
		if err != nil {
			t.Fatal(err)
		}
		if a.New != (i == 0) {
			t.Errorf("delivery %d: New = %v", i, a.New)
		}
	}
	trail, err := d.Store.AuditTrail(ctx, "customer", "C-1001")
	if err != nil {
		t.Fatal(err)
	}
	if len(trail) != 1 {
		t.Fatalf("%d audit rows, want 1: %+v", len(trail), trail)
	}
	a := trail[0]
	if a.Outcome != store.OutcomeDeadLetter || a.Stage != store.StageDLQ || a.MessageID != "dl-1" ||
		a.EventID != "7d0c6b8e-3f5a-4c1e-9b7a-1e2d3c4b5a69" || a.Fingerprint != deadletter.Fingerprint(data) || len(a.Fingerprint) != 64 {
		t.Errorf("audit row %+v", a)
	}
}

// The first delivery stored the row, then the database went away before the
// audit row: the redelivery writes the missing audit row, once.
func TestArchiveRepairsMissingAudit(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	ctx := context.Background()
	m := message.Message{ID: "dl-2", Data: []byte("garbage")}
	row, _ := deadletter.FromMessage(m)
	if _, err := d.Store.AppendDeadLetter(ctx, row); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		a, err := deadletter.Archive(ctx, d.Store, config.Sandbox, m)
		if err != nil || a.New {
			t.Fatalf("redelivery: %+v, %v", a, err)
		}
	}
	trail, err := d.Store.AuditTrail(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(trail) != 1 || trail[0].MessageID != "dl-2" || trail[0].Outcome != store.OutcomeDeadLetter {
		t.Errorf("audit rows %+v, want one dead_lettered", trail)
	}
}

func TestArchiveFlagsWrongEnv(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	data := errorMessage(t, suitexFailure("http_503"), "s", 1)
	a, err := deadletter.Archive(context.Background(), d.Store, config.Sandbox, message.Message{ID: "p1", Data: data, Attributes: map[string]string{"env": "production"}})
	if err != nil || !a.New || !a.WrongEnv || a.Env != "production" {
		t.Fatalf("archive: %+v, %v", a, err)
	}
	a, err = deadletter.Archive(context.Background(), d.Store, config.Production, message.Message{ID: "p2", Data: data, Attributes: map[string]string{"env": "production"}})
	if err != nil || a.WrongEnv {
		t.Fatalf("own env flagged: %+v, %v", a, err)
	}
	// Retry parked a foreign message: its publisher restamped env with its
	// own, the dead_letter_reason attribute is what tells.
	a, err = deadletter.Archive(context.Background(), d.Store, config.Sandbox, message.Message{ID: "p3", Data: data,
		Attributes: map[string]string{"env": "sandbox", deadletter.AttrDeadLetterReason: failure.ReasonWrongEnv}})
	if err != nil || !a.New || !a.WrongEnv || a.Why != "wrong_env" {
		t.Fatalf("parked by Retry as wrong_env: %+v, %v", a, err)
	}
	trail, err := d.Store.AuditTrail(context.Background(), "customer", "C-1001")
	if err != nil || len(trail) != 3 || !strings.Contains(trail[2].Detail, "another environment") {
		t.Errorf("audit trail %+v, %v", trail, err)
	}
}
