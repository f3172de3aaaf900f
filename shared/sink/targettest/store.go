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
