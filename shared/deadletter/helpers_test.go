package deadletter_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/store"
)

// rawEvent is an original message's data as a source would send it.
const rawEvent = `{"id":"0b6f3c1e-8d1f-4a57-9a43-2f0d7d6b1c55","record_type":"customer","record_id":"C-1001","source":"netsuite","timestamp":"2026-03-13T20:00:00.123456Z","base_version":7,"changes":{"email":"ada@example.com"}}`

// errorMessage builds the data of an error message the way a stage reports
// one (failure.Message), about an original delivered on subscription sub.
func errorMessage(t testing.TB, f *failure.Failure, sub string, attempt int) []byte {
	t.Helper()
	orig := message.Message{
		Data:            []byte(rawEvent),
		Attributes:      map[string]string{"env": "sandbox", "source": "netsuite"},
		ID:              "orig-" + f.Reason,
		PublishTime:     time.Date(2026, 3, 13, 20, 0, 1, 0, time.UTC),
		OrderingKey:     "customer:C-1001",
		DeliveryAttempt: attempt,
		Subscription:    "projects/backbone-test/subscriptions/" + sub,
	}
	b, err := json.Marshal(failure.Message(f, orig))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func suitexFailure(reason string) *failure.Failure {
	f := failure.Retryable(store.StageSuiteX, reason, "SuiteX answered 503")
	f.EventID, f.RecordType, f.RecordID = "7d0c6b8e-3f5a-4c1e-9b7a-1e2d3c4b5a69", "customer", "C-1001"
	return f
}

// deadLetterRows dumps dead_letters whole, so a test can prove nothing in
// it changed.
func deadLetterRows(t testing.TB, db *sql.DB) string {
	t.Helper()
	rows, err := db.QueryContext(context.Background(),
		"SELECT message_id, subscription, delivery_attempts, stage, reason, COALESCE(detail,''), COALESCE(event_id,''), COALESCE(record_type,''), COALESCE(record_id,''), HEX(data), attributes, COALESCE(publish_time,''), created_at FROM dead_letters ORDER BY message_id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var cols [13]sql.RawBytes
		ptrs := make([]any, len(cols))
		for i := range cols {
			ptrs[i] = &cols[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		for _, c := range cols {
			fmt.Fprintf(&b, "%s|", c)
		}
		b.WriteString("\n")
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
