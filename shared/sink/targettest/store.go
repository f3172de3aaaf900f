package targettest

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/record"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/store"
)

// StoreMerged appends ev to st as the merge engine stores an accepted event:
// the event (processed) and its `accepted` merge audit row, which records
// the source's report of the fields it carried (SPEC §7). A Runner reads
// the record from the store, not from the message, so a test must store
// the events its messages name; a record's events are stored in version
// order from 1 (the folded state has no gaps).
func StoreMerged(t testing.TB, st store.Writer, ev event.Merged) {
	t.Helper()
	changes, err := json.Marshal(ev.Changes)
	if err != nil {
		t.Fatal(err)
	}
	fp, err := sink.Fingerprint(ev)
	if err != nil {
		t.Fatal(err)
	}
	err = st.AppendEvent(context.Background(), store.Event{ID: ev.ID, RecordType: ev.RecordType, RecordID: ev.RecordID,
		Source: ev.Source, Timestamp: ev.Timestamp.Time, BaseVersion: ev.BaseVersion, Changes: changes,
		FullSnapshotRef: ev.FullSnapshotRef, Processed: true},
		store.Audit{Fingerprint: fp, RecordType: ev.RecordType, RecordID: ev.RecordID, Outcome: store.OutcomeAccepted,
			Stage: store.StageMerge, Source: ev.Source,
			Fields: &store.FieldSet{Base: ev.BaseVersion, Fields: record.Digests(ev.Changes)}})
	if err != nil {
		t.Fatal(err)
	}
}

// Delivered returns the events of a record audited `delivered` at stage
// target, in the order written, and the highest version among them (0 when
// none): what a test checks a delivery left in the store.
func Delivered(t testing.TB, st interface {
	AuditTrail(ctx context.Context, recordType, recordID string) ([]store.Audit, error)
}, recordType, recordID, target string) (eventIDs []string, last uint64) {
	t.Helper()
	trail, err := st.AuditTrail(context.Background(), recordType, recordID)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range trail {
		if a.Stage == target && a.Outcome == store.OutcomeDelivered {
			eventIDs = append(eventIDs, a.EventID)
			last = max(last, a.Version)
		}
	}
	return eventIDs, last
}
