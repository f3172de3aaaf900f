package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/backbone-sync/backbone/internal/trace"
	"github.com/backbone-sync/backbone/shared/store"
)

// traceEntry is one line of a record's timeline (internal/trace builds
// it; the console shows the same).
type traceEntry = trace.Entry

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

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// timeline is the record's history in time order.
func timeline(ctx context.Context, s store.Store, rt, rid string) ([]traceEntry, error) {
	return trace.Build(ctx, s, rt, rid)
}
