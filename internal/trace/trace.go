// Package trace builds the history of one record as `backbone trace` and
// the console show it: raw messages and their merge outcome, the merged
// versions, each delivery with the fields it sent, retries, dead letters
// and redrives, in time order, from the audit log, the events and the
// dead-letter archive.
package trace

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/store"
)

// StageDeadLetter is the stage of an entry that is a dead letter rather
// than an audit row.
const StageDeadLetter = "dead_letter"

// Entry is one line of a record's timeline.
type Entry struct {
	Time      string          `json:"time"`
	Stage     string          `json:"stage"`
	Outcome   string          `json:"outcome"`
	Version   uint64          `json:"version,omitempty"`
	EventID   string          `json:"event_id,omitempty"`
	MessageID string          `json:"message_id,omitempty"`
	Source    string          `json:"source,omitempty"`
	Changes   json.RawMessage `json:"changes,omitempty"`
	// FieldsSent are the fields a delivery attempt carried (SPEC §7: what
	// the echo rule and the known-state rule read); FieldsReported the
	// fields a merge row's system reported.
	FieldsSent     []string  `json:"fields_sent,omitempty"`
	FieldsReported []string  `json:"fields_reported,omitempty"`
	Detail         string    `json:"detail,omitempty"`
	At             time.Time `json:"-"`
}

// Reader is what a timeline reads; store.Store satisfies it.
type Reader interface {
	AuditTrail(ctx context.Context, recordType, recordID string) ([]store.Audit, error)
	History(ctx context.Context, recordType, recordID string) ([]store.Event, error)
	DeadLetters(ctx context.Context, f store.DeadLetterFilter) ([]store.DeadLetter, error)
}

// maxDeadLetters bounds the dead letters one timeline shows.
const maxDeadLetters = 1000

// Build merges the audit trail, the stored events and the dead letters of
// one record into time order. An unknown record has an empty timeline.
func Build(ctx context.Context, s Reader, rt, rid string) ([]Entry, error) {
	audits, err := s.AuditTrail(ctx, rt, rid)
	if err != nil {
		return nil, fmt.Errorf("audit trail of %s:%s: %w", rt, rid, err)
	}
	events, err := s.History(ctx, rt, rid)
	if err != nil {
		return nil, fmt.Errorf("events of %s:%s: %w", rt, rid, err)
	}
	byID := make(map[string]store.Event, len(events))
	byVersion := make(map[uint64]store.Event, len(events))
	for _, e := range events {
		byID[e.ID] = e
		byVersion[e.BaseVersion+1] = e
	}
	// source is who reported the change a row is about: the merge row's own
	// source, else the event's, else the source of the version concerned.
	source := func(a store.Audit) string {
		if a.Source != "" {
			return a.Source
		}
		if ev, ok := byID[a.EventID]; ok {
			return ev.Source
		}
		if ev, ok := byVersion[a.Version]; ok {
			return ev.Source
		}
		return ""
	}
	// An outcome row (delivered, failed, refused) may name its attempt's
	// sending row instead of repeating the fields it sent.
	sent := make(map[string]*store.FieldSet, len(audits))
	for _, a := range audits {
		if a.Fields != nil && len(a.Fields.Fields) > 0 {
			sent[a.ID] = a.Fields
		}
	}
	var out []Entry
	for _, a := range audits {
		e := Entry{Stage: a.Stage, Outcome: a.Outcome, Version: a.Version, EventID: a.EventID, MessageID: a.MessageID, Detail: a.Detail,
			Source: source(a), At: a.CreatedAt}
		if ev, ok := byID[a.EventID]; ok && (a.Outcome == store.OutcomeAccepted || a.Outcome == store.OutcomeMerged) {
			e.Changes = ev.Changes
		}
		if a.Stage == store.StageMerge {
			e.FieldsReported = FieldNames(a.Fields)
		} else if a.Fields != nil {
			f := a.Fields
			if len(f.Fields) == 0 && f.Attempt != "" {
				f = sent[f.Attempt]
			}
			e.FieldsSent = FieldNames(f)
		}
		out = append(out, e)
	}
	dls, err := s.DeadLetters(ctx, store.DeadLetterFilter{RecordType: rt, RecordID: rid, Limit: maxDeadLetters})
	if err != nil {
		return nil, fmt.Errorf("dead letters of %s:%s: %w", rt, rid, err)
	}
	for _, d := range dls {
		e := Entry{Stage: StageDeadLetter, Outcome: d.Stage + "/" + d.Reason, EventID: d.EventID, MessageID: d.MessageID,
			Detail: fmt.Sprintf("%d attempts on %s: %s", d.DeliveryAttempts, d.Subscription, d.Detail), At: d.CreatedAt}
		if ev, ok := byID[d.EventID]; ok {
			e.Source = ev.Source
		}
		out = append(out, e)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	for i := range out {
		out[i].Time = out[i].At.Format(event.TimeLayout)
	}
	return out, nil
}

// FieldNames are the names of a field set, sorted.
func FieldNames(f *store.FieldSet) []string {
	if f == nil || len(f.Fields) == 0 {
		return nil
	}
	names := make([]string, 0, len(f.Fields))
	for n := range f.Fields {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
