// Package event holds the backbone's message types (SPEC §3): the raw event
// sources publish, the merged event the backbone delivers, and the error
// message that carries a failure to Retry and the dead-letter archive. It is
// the centre of the layout: it depends on no other backbone package.
package event

import (
	"encoding/json"
	"fmt"
	"time"
)

// TimeLayout is how the backbone writes times: UTC, exactly 6 fractional
// digits (SPEC §3).
const TimeLayout = "2006-01-02T15:04:05.000000Z"

// Time is a timestamp kept to the microsecond. Input is any RFC 3339 time;
// finer digits are truncated; output is TimeLayout.
type Time struct{ time.Time }

// NewTime truncates t to microseconds, in UTC.
func NewTime(t time.Time) Time { return Time{t.UTC().Truncate(time.Microsecond)} }

// MarshalJSON writes TimeLayout.
func (t Time) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.UTC().Format(TimeLayout) + `"`), nil
}

// UnmarshalJSON reads an RFC 3339 time string.
func (t *Time) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("time must be an RFC 3339 string")
	}
	p, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("time %q is not RFC 3339", s)
	}
	*t = NewTime(p)
	return nil
}

// Raw is a raw change event published by a source to events.raw.{env}.
type Raw struct {
	ID              string                     `json:"id,omitempty"`
	RecordType      string                     `json:"record_type"`
	RecordID        string                     `json:"record_id"`
	Source          string                     `json:"source"`
	Timestamp       Time                       `json:"timestamp"`
	BaseVersion     uint64                     `json:"base_version"`
	Changes         map[string]json.RawMessage `json:"changes"`
	FullSnapshotRef *string                    `json:"full_snapshot_ref,omitempty"`
}

// Conflict records a field the merge dropped or overrode, and why.
type Conflict struct {
	Field string `json:"field"`
	// Resolution: "incoming_won" (the incoming value overrode a concurrent
	// change) or "incoming_dropped" (the stored value stayed).
	Resolution string `json:"resolution"`
	// Rule that decided: "later_timestamp", "source_priority", "stored_value_stays", "echo".
	Rule string `json:"rule"`
	// The concurrent change it was weighed against.
	OtherSource    string `json:"other_source,omitempty"`
	OtherVersion   uint64 `json:"other_version,omitempty"`
	OtherTimestamp *Time  `json:"other_timestamp,omitempty"`
}

// Merged is the stored event as delivered on events.merged.{env}.
type Merged struct {
	ID              string                     `json:"id"`
	RecordType      string                     `json:"record_type"`
	RecordID        string                     `json:"record_id"`
	Source          string                     `json:"source"`
	Timestamp       Time                       `json:"timestamp"`
	BaseVersion     uint64                     `json:"base_version"`
	Version         uint64                     `json:"version"` // base_version + 1
	Changes         map[string]json.RawMessage `json:"changes"`
	FullSnapshotRef *string                    `json:"full_snapshot_ref"`
	Conflicts       []Conflict                 `json:"conflicts"`
}

// Attributes of a merged message, beside `env` (set by the publisher guard).
const (
	AttrSource     = "source"
	AttrRecordType = "record_type"
	AttrEventID    = "event_id"
)

// Original is the message a failed stage was handling, kept whole so that
// Retry can re-run the stage and an operator can see what came in.
type Original struct {
	Data            []byte            `json:"data"` // base64 in JSON
	Attributes      map[string]string `json:"attributes"`
	MessageID       string            `json:"message_id"`
	Subscription    string            `json:"subscription"`
	OrderingKey     string            `json:"ordering_key,omitempty"`
	PublishTime     *Time             `json:"publish_time,omitempty"`
	DeliveryAttempt int               `json:"delivery_attempt,omitempty"`
}

// Error is the message published to events.error.{env}.
type Error struct {
	Stage      string   `json:"stage"`
	Retryable  bool     `json:"retryable"`
	Reason     string   `json:"reason"` // a stable code, e.g. invalid_json, version_gap, http_503
	Detail     string   `json:"detail"`
	Original   Original `json:"original"`
	EventID    string   `json:"event_id,omitempty"`
	RecordType string   `json:"record_type,omitempty"`
	RecordID   string   `json:"record_id,omitempty"`
	// Redrive counts how many times an operator put this message back.
	Redrive int `json:"redrive,omitempty"`
}
