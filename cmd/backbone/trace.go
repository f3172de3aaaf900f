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
	// FieldsSent are the fields a delivery attempt carried (SPEC §7: what
	// the echo rule and the known-state rule read); FieldsReported the
	// fields a merge row's system reported.
	FieldsSent     []string `json:"fields_sent,omitempty"`
	FieldsReported []string `json:"fields_reported,omitempty"`
	Detail         string   `json:"detail,omitempty"`
	at             time.Time
}

// traceDetailWidth is where the table wraps DETAIL: the whole text is shown,
// on continuation lines.
const traceDetailWidth = 80

func runTrace(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "trace", "[--json] RECORD_TYPE:RECORD_ID\n\nPrints the timeline of one record from the audit log: raw messages and their merge outcome,\n"+
		"the merged versions, each sink delivery and the fields it sent, errors, dead letters and redrives.\n"+
		"SOURCE is the system that reported the change a row is about. DETAIL is shown whole, wrapped.")
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
	fmt.Fprintln(tw, "TIME\tSTAGE\tOUTCOME\tVERSION\tSOURCE\tEVENT\tFIELDS SENT\tDETAIL")
	for _, e := range entries {
		v := ""
		if e.Version > 0 {
			v = fmt.Sprintf("v%d", e.Version)
		}
		detail := e.Detail
		if len(e.Changes) > 0 {
			detail = strings.TrimSpace(string(e.Changes) + " " + detail)
		}
		lines := wrapText(detail, traceDetailWidth)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time, e.Stage, e.Outcome, v, orDash(e.Source), short(e.EventID), orDash(strings.Join(e.FieldsSent, ",")), lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(tw, "\t\t\t\t\t\t\t%s\n", l)
		}
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// wrapText splits s into lines of at most width runes, at spaces where it
// can; nothing is dropped. It always returns at least one line.
func wrapText(s string, width int) []string {
	var out []string
	for _, para := range strings.Split(s, "\n") {
		r := []rune(para)
		for len(r) > width {
			cut := width
			for i := width; i > width/2; i-- {
				if r[i] == ' ' {
					cut = i
					break
				}
			}
			out = append(out, strings.TrimRight(string(r[:cut]), " "))
			r = []rune(strings.TrimLeft(string(r[cut:]), " "))
		}
		out = append(out, string(r))
	}
	return out
}

// fieldNames are the names of a field set, sorted.
func fieldNames(f *store.FieldSet) []string {
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
	var out []traceEntry
	for _, a := range audits {
		e := traceEntry{Stage: a.Stage, Outcome: a.Outcome, Version: a.Version, EventID: a.EventID, MessageID: a.MessageID, Detail: a.Detail,
			Source: source(a), at: a.CreatedAt}
		if ev, ok := byID[a.EventID]; ok && (a.Outcome == store.OutcomeAccepted || a.Outcome == store.OutcomeMerged) {
			e.Changes = ev.Changes
		}
		if a.Stage == store.StageMerge {
			e.FieldsReported = fieldNames(a.Fields)
		} else if a.Fields != nil {
			f := a.Fields
			if len(f.Fields) == 0 && f.Attempt != "" {
				f = sent[f.Attempt]
			}
			e.FieldsSent = fieldNames(f)
		}
		out = append(out, e)
	}
	dls, err := s.DeadLetters(ctx, store.DeadLetterFilter{RecordType: rt, RecordID: rid, Limit: 1000})
	if err != nil {
		return nil, err
	}
	for _, d := range dls {
		e := traceEntry{Stage: "dead_letter", Outcome: d.Stage + "/" + d.Reason, EventID: d.EventID, MessageID: d.MessageID,
			Detail: fmt.Sprintf("%d attempts on %s: %s", d.DeliveryAttempts, d.Subscription, d.Detail), at: d.CreatedAt}
		if ev, ok := byID[d.EventID]; ok {
			e.Source = ev.Source
		}
		out = append(out, e)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	for i := range out {
		out[i].Time = out[i].at.Format(event.TimeLayout)
	}
	return out, nil
}
