// Package record holds a record's folded state (SPEC §5: S, all accepted
// changes folded in version order) and the canonical digests of field
// values that the merge and the sinks compare. The merge writes the state
// after every accepted event; the sinks read it to know the value of every
// field at the record's newest version N (SPEC §7). It is derived from
// `events` alone and rebuildable from them (Fold).
package record

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/store"
)

// State is the folded state of a record after one accepted event. It is
// stored in the record's projection row (record_heads.state) and read back
// with the record lock (store.Head), so a merge costs the same whatever the
// record's history. Its JSON is format 2 (format.go); format 1 is still
// read.
type State struct {
	Format int `json:"format"`
	// Version is the record version this state is after (V).
	Version uint64 `json:"version"`
	// EventID is the event that produced it: the record's newest event.
	EventID string            `json:"event_id"`
	Fields  map[string]*Field `json:"fields"`
}

// Field is one field of the record.
type Field struct {
	// Value is the current value in canonical JSON (RFC 8785); null when the
	// field was cleared.
	Value json.RawMessage `json:"value"`
	// Version, Source and Timestamp are of the accepted event that last
	// changed the field: a concurrent change is weighed against them.
	Version   uint64     `json:"version"`
	Source    string     `json:"source"`
	Timestamp event.Time `json:"timestamp"`
	// BySource is, per source, the last version at which that source changed
	// the field.
	BySource map[string]uint64 `json:"by_source"`
}

// Empty is the state of a record with no events.
func Empty() *State {
	return &State{Format: stateFormat, Fields: map[string]*Field{}}
}

// Parse reads the state stored with the head event. ok is false when it
// must be rebuilt: none stored (events appended by another tool), another
// format, or not the head's.
func Parse(h store.Head) (st *State, ok bool) {
	if h.Version == 0 {
		return Empty(), true
	}
	if len(h.State) == 0 {
		return nil, false
	}
	st = &State{}
	if err := json.Unmarshal(h.State, st); err != nil || !knownFormat(st.Format) || st.Version != h.Version {
		return nil, false
	}
	if st.Fields == nil {
		st.Fields = map[string]*Field{}
	}
	return st, true
}

// Apply returns the state after ev, whose effective changes are changes.
// The receiver is not modified: it may still be needed if a transaction is
// run again.
func (s *State) Apply(ev store.Event, changes map[string]json.RawMessage) *State {
	next := &State{
		Format:  stateFormat,
		Version: ev.Version(),
		EventID: ev.ID,
		Fields:  make(map[string]*Field, len(s.Fields)+len(changes)),
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
		next.Fields[f] = &Field{Value: canon, Version: v, Source: ev.Source, Timestamp: event.NewTime(ev.Timestamp), BySource: by}
	}
	return next
}

// Refresh returns the state with the conflict timestamp (and source) of
// fields set to ts and source: a no-op edit that is newer than the stored
// change of equal value (SPEC §5 step 4). The value and version stay. The
// receiver is not modified.
func (s *State) Refresh(fields []string, ts event.Time, source string) *State {
	if len(fields) == 0 {
		return s
	}
	next := *s
	next.Fields = maps.Clone(s.Fields)
	for _, f := range fields {
		old := next.Fields[f]
		if old == nil {
			continue
		}
		c := *old
		c.Timestamp, c.Source = event.NewTime(ts.Time), source
		next.Fields[f] = &c
	}
	return &next
}

// Fold rebuilds a record's state from its events in version order.
func Fold(evs []store.Event) (*State, error) { return FoldWith(evs, nil) }

// FoldWith is Fold with after(version, state) applied after each version
// (and once at version 0), for what the audit log adds to the events: the
// no-ops' refreshed conflict timestamps.
func FoldWith(evs []store.Event, after func(version uint64, st *State) *State) (*State, error) {
	st := Empty()
	if after != nil {
		st = after(0, st)
	}
	for i, ev := range evs {
		if ev.BaseVersion != uint64(i) {
			return nil, fmt.Errorf("rebuild state of %s:%s: event %s has base_version %d, want %d (the version chain has a gap)",
				ev.RecordType, ev.RecordID, ev.ID, ev.BaseVersion, i)
		}
		var changes map[string]json.RawMessage
		if err := json.Unmarshal(ev.Changes, &changes); err != nil {
			return nil, fmt.Errorf("rebuild state of %s:%s: changes of event %s: %w", ev.RecordType, ev.RecordID, ev.ID, err)
		}
		st = st.Apply(ev, changes)
		if after != nil {
			st = after(ev.Version(), st)
		}
	}
	return st, nil
}

// Digest is the short canonical digest of a JSON value: the first 16 hex
// digits of the SHA-256 of its RFC 8785 form, so semantically equal values
// (1, 1.0, 1e0; "\u00e9" and "é") have one digest. The audit log records
// digests, not values, of what a system reported or was sent: bounded rows,
// and equality is all the known-state rule needs (SPEC §7).
func Digest(v json.RawMessage) string {
	canon, err := event.Canonical(v)
	if err != nil {
		canon = v
	}
	return digestHex(canon)
}

// Digests maps every field of changes to its Digest.
func Digests(changes map[string]json.RawMessage) map[string]string {
	out := make(map[string]string, len(changes))
	for f, v := range changes {
		out[f] = Digest(v)
	}
	return out
}

// ChangesDigest is the first 16 hex of the SHA-256 of the canonical JSON of
// a whole changes object: the part of SuiteX's Idempotency-Key that tells
// two deliveries of one version with different fields apart (SPEC §7).
func ChangesDigest(changes map[string]json.RawMessage) (string, error) {
	raw, err := json.Marshal(changes)
	if err != nil {
		return "", fmt.Errorf("digest of changes: %w", err)
	}
	canon, err := event.Canonical(raw)
	if err != nil {
		return "", fmt.Errorf("digest of changes: %w", err)
	}
	return digestHex(canon), nil
}

func digestHex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
