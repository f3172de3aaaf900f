package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/store"
)

// traceEntry is one line of a record's timeline.
type traceEntry struct {
	Time      string          `json:"time"`
	Stage     string          `json:"stage"`
	Outcome   string          `json:"outcome"`
	Version   uint64          `json:"version,omitempty"`
	EventID   string          `json:"event_id,omitempty"`
	MessageID string          `json:"message_id,omitempty"`
	Source    string          `json:"source,omitempty"`
	Changes   json.RawMessage `json:"changes,omitempty"`
	Detail    string          `json:"detail,omitempty"`
	at        time.Time
}

func runTrace(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "trace", "[--json] RECORD_TYPE:RECORD_ID\n\nPrints the timeline of one record from the audit log: raw messages and their merge outcome,\nthe merged versions, each sink delivery, errors, dead letters and redrives.")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one RECORD_TYPE:RECORD_ID")
	}
	rt, rid, ok := strings.Cut(fs.Arg(0), ":")
	if !ok || rt == "" || rid == "" {
		return usagef("%q is not RECORD_TYPE:RECORD_ID (e.g. customer:C-1001)", fs.Arg(0))
	}
	s, err := storeFromEnv(ctx, c, "")
	if err != nil {
		return err
	}
	defer s.Close()
	entries, err := timeline(ctx, s, rt, rid)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return fmt.Errorf("no history for %s:%s (record ids are case-sensitive)", rt, rid)
	}
	if *asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(entries)
	}
	head, err := s.Head(ctx, rt, rid)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%s:%s — version %d\n\n", rt, rid, head.Version)
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tSTAGE\tOUTCOME\tVERSION\tSOURCE\tEVENT\tDETAIL")
	for _, e := range entries {
		v := ""
		if e.Version > 0 {
			v = fmt.Sprintf("v%d", e.Version)
		}
		detail := e.Detail
		if len(e.Changes) > 0 {
			detail = strings.TrimSpace(string(e.Changes) + " " + detail)
		}
		if len(detail) > 100 {
			detail = detail[:97] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time, e.Stage, e.Outcome, v, e.Source, short(e.EventID), detail)
	}
	return tw.Flush()
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// timeline merges the audit trail, the stored events and the dead letters of
// one record into time order.
func timeline(ctx context.Context, s store.Store, rt, rid string) ([]traceEntry, error) {
	audits, err := s.AuditTrail(ctx, rt, rid)
	if err != nil {
		return nil, err
	}
	events, err := s.History(ctx, rt, rid)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]store.Event, len(events))
	for _, e := range events {
		byID[e.ID] = e
	}
	var out []traceEntry
	for _, a := range audits {
		e := traceEntry{Stage: a.Stage, Outcome: a.Outcome, Version: a.Version, EventID: a.EventID, MessageID: a.MessageID, Detail: a.Detail, at: a.CreatedAt}
		if ev, ok := byID[a.EventID]; ok {
			e.Source = ev.Source
			if a.Outcome == store.OutcomeAccepted || a.Outcome == store.OutcomeMerged {
				e.Changes = ev.Changes
			}
		}
		out = append(out, e)
	}
	dls, err := s.DeadLetters(ctx, store.DeadLetterFilter{RecordType: rt, RecordID: rid, Limit: 1000})
	if err != nil {
		return nil, err
	}
	for _, d := range dls {
		out = append(out, traceEntry{Stage: "dead_letter", Outcome: d.Stage + "/" + d.Reason, EventID: d.EventID, MessageID: d.MessageID,
			Detail: fmt.Sprintf("%d attempts on %s: %s", d.DeliveryAttempts, d.Subscription, d.Detail), at: d.CreatedAt})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	for i := range out {
		out[i].Time = out[i].at.Format(event.TimeLayout)
	}
	return out, nil
}
