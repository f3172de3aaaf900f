package bench

import (
	"encoding/json"
	"fmt"
	"time"
)

// RecordType is the record type of every event the bench writes.
const RecordType = "customer"

// RecordsPerWorker is how many records each worker cycles through. Several
// records per worker give every record a short history (the common case:
// most changes hit existing records), and a worker's next event on a record
// never waits on its own previous one.
const RecordsPerWorker = 4

// Stream is one worker's sequence of events. The worker owns its records
// (no other worker writes them), so it knows each record's version: every
// event it sends is at the record's current version, as a source that has
// seen the latest state would send it. Each record is edited by one source
// only (the common case), so the merge's echo test never needs to read
// deliveries: (b) and (c) do the same merge work and differ only in the
// pipeline around it.
type Stream struct {
	prefix   string
	source   string
	versions []uint64
	cur      int
	seq      int
}

// NewStream returns the stream of one worker. prefix must be unique in the
// run (it names the records); source is "netsuite" or "suitex".
func NewStream(prefix, source string, records int) *Stream {
	return &Stream{prefix: prefix, source: source, versions: make([]uint64, max(records, 1))}
}

// Event is one event of a stream.
type Event struct {
	RecordID string
	Source   string
	Base     uint64
	Seq      int
}

// Next returns the next event. Call Done with its outcome before the next
// call to Next.
func (s *Stream) Next() Event {
	s.seq++
	return Event{RecordID: fmt.Sprintf("%s-r%d", s.prefix, s.cur), Source: s.source, Base: s.versions[s.cur], Seq: s.seq}
}

// Done moves to the next record; stored says the event's record advanced
// one version.
func (s *Stream) Done(stored bool) {
	if stored {
		s.versions[s.cur]++
	}
	s.cur = (s.cur + 1) % len(s.versions)
}

// SourceOf alternates the sources over workers, so that with two or more
// workers both targets receive events.
func SourceOf(worker int) string {
	if worker%2 == 0 {
		return "netsuite"
	}
	return "suitex"
}

// Raw renders e as a raw event with id: a customer's email and phone, new
// values each time (so nothing is a no-op), stamped now.
func (e Event) Raw(id string) []byte {
	v := struct {
		ID          string            `json:"id"`
		RecordType  string            `json:"record_type"`
		RecordID    string            `json:"record_id"`
		Source      string            `json:"source"`
		Timestamp   string            `json:"timestamp"`
		BaseVersion uint64            `json:"base_version"`
		Changes     map[string]string `json:"changes"`
	}{
		ID: id, RecordType: RecordType, RecordID: e.RecordID, Source: e.Source,
		Timestamp:   time.Now().UTC().Format("2006-01-02T15:04:05.000000Z"),
		BaseVersion: e.Base,
		Changes: map[string]string{
			"email": fmt.Sprintf("%s-%d@example.com", e.RecordID, e.Seq),
			"phone": fmt.Sprintf("+1-555-%07d", e.Seq),
		},
	}
	b, _ := json.Marshal(v) // strings only: cannot fail
	return b
}
