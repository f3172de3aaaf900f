package merge

import (
	"encoding/json"
	"fmt"
	"maps"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/store"
)

// stateFormat versions the JSON of recordState. A state in another format
// (or none) is rebuilt from the record's events.
const stateFormat = 1

// recordState is the folded state of a record after one accepted event. It
// is stored in that event's audit row (event_audit_log.state) and read back
// with the record lock (store.Head), so a merge costs the same whatever the
// record's history: one index probe gives everything steps 1, 3 and 4 of
// SPEC §5 need. It is derived from `events` alone and rebuildable from them
// (foldEvents).
//
//	{"format":1,"version":5,"event_id":"…","fields":{"email":{"value":"a@x",
//	 "version":5,"source":"netsuite","timestamp":"…","by_source":{"netsuite":5,"suitex":3}}}}
type recordState struct {
	Format int `json:"format"`
	// Version is the record version this state is after (V).
	Version uint64 `json:"version"`
	// EventID is the event that produced it: the record's newest event,
	// which the outbox gate checks before storing a newer one.
	EventID string                 `json:"event_id"`
	Fields  map[string]*fieldState `json:"fields"`
}

// fieldState is one field of the record.
type fieldState struct {
	// Value is the current value in canonical JSON (RFC 8785); null when the
	// field was cleared.
	Value json.RawMessage `json:"value"`
	// Version, Source and Timestamp are of the accepted event that last
	// changed the field: step 3 weighs an incoming change against them.
	Version   uint64     `json:"version"`
	Source    string     `json:"source"`
	Timestamp event.Time `json:"timestamp"`
	// BySource is, per source, the last version at which that source changed
	// the field: the echo test asks whether the source changed it itself
	// after the backbone delivered a value to it.
	BySource map[string]uint64 `json:"by_source"`
}

func emptyState() *recordState {
	return &recordState{Format: stateFormat, Fields: map[string]*fieldState{}}
}

// parseState reads the state stored with the head event. ok is false when it
// must be rebuilt: none stored (events appended by another tool), another
// format, or not the head's.
func parseState(h store.Head) (st *recordState, ok bool) {
	if h.Version == 0 {
		return emptyState(), true
	}
	if len(h.State) == 0 {
		return nil, false
	}
	st = &recordState{}
	if err := json.Unmarshal(h.State, st); err != nil || st.Format != stateFormat || st.Version != h.Version {
		return nil, false
	}
	if st.Fields == nil {
		st.Fields = map[string]*fieldState{}
	}
	return st, true
}

// apply returns the state after ev, whose effective changes are changes.
// The receiver is not modified: it may still be needed if the transaction
// is run again.
func (s *recordState) apply(ev store.Event, changes map[string]json.RawMessage) *recordState {
	next := &recordState{
		Format:  stateFormat,
		Version: ev.Version(),
		EventID: ev.ID,
		Fields:  make(map[string]*fieldState, len(s.Fields)+len(changes)),
	}
	maps.Copy(next.Fields, s.Fields)
	v := ev.Version()
	for f, val := range changes {
		by := map[string]uint64{}
		if old := s.Fields[f]; old != nil {
			maps.Copy(by, old.BySource)
		}
		by[ev.Source] = v
		canon, err := event.Canonical(val)
		if err != nil {
			canon = val // cannot happen for a decoded event; keep the bytes
		}
		next.Fields[f] = &fieldState{Value: canon, Version: v, Source: ev.Source, Timestamp: event.NewTime(ev.Timestamp), BySource: by}
	}
	return next
}

// foldEvents rebuilds a record's state from its events in version order.
func foldEvents(evs []store.Event) (*recordState, error) {
	st := emptyState()
	for i, ev := range evs {
		if ev.BaseVersion != uint64(i) {
			return nil, fmt.Errorf("rebuild state of %s:%s: event %s has base_version %d, want %d (the version chain has a gap)",
				ev.RecordType, ev.RecordID, ev.ID, ev.BaseVersion, i)
		}
		var changes map[string]json.RawMessage
		if err := json.Unmarshal(ev.Changes, &changes); err != nil {
			return nil, fmt.Errorf("rebuild state of %s:%s: changes of event %s: %w", ev.RecordType, ev.RecordID, ev.ID, err)
		}
		st = st.apply(ev, changes)
	}
	return st, nil
}
