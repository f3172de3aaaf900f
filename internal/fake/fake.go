// Package fake holds what the two target fakes (netsuitefake and
// suitexfake) share: the system's copy of each record, a switchable outage
// or slowness, and the log of what it accepted and refused. The fakes are
// plain http.Handlers without the testing package, so `backbone dev`
// serves the same fakes the tests use.
package fake

import (
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"
)

// Delivery is one request a fake accepted.
type Delivery struct {
	Target     string // netsuite or suitex
	Key        string // SuiteX: Idempotency-Key ({event id}:{16 hex digest of the changes}); NetSuite: type/eid
	EventID    string
	RecordType string // NetSuite: its record type
	RecordID   string
	Version    uint64
	Source     string // SuiteX only: the merged event's source
	Body       json.RawMessage
	At         time.Time
	Duplicate  bool // SuiteX: the idempotency key was seen before (answered 409)
}

// System is the state a fake keeps beside its protocol. Fakes embed it; the
// zero value is an available, fast system that holds no record.
type System struct {
	mu         sync.Mutex
	records    map[string]map[string]json.RawMessage
	deliveries []Delivery
	refused    []string
	onDelivery func(Delivery)
	down       int // status answered while down (0: up)
	failNext   int // requests still to fail (FailNext)
	failStatus int
	outageHits int
	delay      time.Duration
}

// SetDown makes the system answer status to every request (503 for an
// outage); 0 brings it back.
func (s *System) SetDown(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = status
}

// FailNext makes the next n requests fail with status (503: a transient
// outage, 400: a permanent refusal), after which the system answers
// normally again without anyone calling SetDown. A flaky system that
// recovers by itself is what Retry exists for; timing a SetDown(0) from a
// test could not say how many attempts failed. SetDown, while set, takes
// precedence; FailNext(0, 0) cancels what is left.
func (s *System) FailNext(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext, s.failStatus = max(n, 0), status
}

// SetDelay makes every request take at least d before it is answered: a
// slow system (the bench's burst figure), without failing anything.
func (s *System) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// Outage waits out the delay, then returns the status the request is to be
// answered with because of SetDown or FailNext, or 0 when the system is up.
// The fakes call it first for every record request.
func (s *System) Outage() int {
	s.mu.Lock()
	d := s.delay
	s.mu.Unlock()
	if d > 0 {
		time.Sleep(d)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.down != 0:
		s.outageHits++
		return s.down
	case s.failNext > 0 && s.failStatus != 0:
		s.failNext--
		s.outageHits++
		return s.failStatus
	}
	return 0
}

// OutageHits counts the requests answered with an outage status (SetDown or
// FailNext).
func (s *System) OutageHits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.outageHits
}

// OnDelivery registers a callback run for each accepted delivery.
func (s *System) OnDelivery(fn func(Delivery)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onDelivery = fn
}

// Accept logs a delivery the fake accepted and runs the OnDelivery callback.
func (s *System) Accept(d Delivery) {
	s.mu.Lock()
	s.deliveries = append(s.deliveries, d)
	fn := s.onDelivery
	s.mu.Unlock()
	if fn != nil {
		fn(d)
	}
}

// Deliveries returns a copy of what was accepted so far.
func (s *System) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Delivery(nil), s.deliveries...)
}

// Refuse logs why a request was refused (unauthenticated or malformed).
func (s *System) Refuse(why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refused = append(s.refused, why)
}

// Refused lists why requests were refused, in order.
func (s *System) Refused() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.refused...)
}

// Record returns the system's copy of a record (nil if it has none).
func (s *System) Record(recordType, recordID string) map[string]json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[recordType+"/"+recordID]
	if !ok {
		return nil
	}
	return maps.Clone(r)
}

// Edit changes a record as a user of the system would, and as an accepted
// request does: null clears a field (both systems' semantics).
func (s *System) Edit(recordType, recordID string, fields map[string]json.RawMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.records == nil {
		s.records = map[string]map[string]json.RawMessage{}
	}
	key := recordType + "/" + recordID
	rec := s.records[key]
	if rec == nil {
		rec = map[string]json.RawMessage{}
		s.records[key] = rec
	}
	for k, v := range fields {
		if string(v) == "null" {
			delete(rec, k)
		} else {
			rec[k] = v
		}
	}
}

// Cleaner is what Serve needs of a test: testing.TB has it, and this
// package need not import testing.
type Cleaner interface{ Cleanup(func()) }

// Serve serves h on a local httptest server, closed when the test ends.
func Serve(c Cleaner, h http.Handler) *httptest.Server {
	s := httptest.NewServer(h)
	c.Cleanup(s.Close)
	return s
}
