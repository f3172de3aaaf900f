package deadletter

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/backbone-sync/backbone/shared/event"
)

// Printable makes an archived value safe to print on a terminal: the archive
// holds whatever arrived, and a control character (an ANSI escape in a
// record id) must not drive the operator's terminal or break the table. Empty values print as "-".
func Printable(s string) string {
	if s == "" {
		return "-"
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return strconv.QuoteToGraphic(s)
	}
	return s
}

// WriteTable prints summaries as an aligned table, newest first as given.
func WriteTable(w io.Writer, rows []Summary) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MESSAGE ID\tARCHIVED AT\tSTAGE\tREASON\tRECORD\tATTEMPTS\tEVENT ID\tDIGEST")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", Printable(r.MessageID), r.ArchivedAt.UTC().Format(event.TimeLayout),
			Printable(r.Stage), Printable(r.Reason), Printable(r.Record()), r.DeliveryAttempts, Printable(r.EventID), Printable(ShortDigest(r.ContentDigest)))
	}
	return tw.Flush()
}

// WriteJSON prints v as indented JSON. HTML escaping is off: the reader is
// an operator or jq, and "<" must stay "<".
func WriteJSON(w io.Writer, v any) error {
	return writeJSON(w, "", v)
}

func writeJSON(w io.Writer, prefix string, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent(prefix, "  ")
	return enc.Encode(v)
}

// WriteView prints one dead letter for a human: the row, the attributes,
// the decoded error message (pretty JSON) and its redrive history.
func WriteView(w io.Writer, v View) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(k, val string) { fmt.Fprintf(tw, "  %s:\t%s\n", k, val) }
	fmt.Fprintf(tw, "dead letter %s\n", Printable(v.MessageID))
	line("content digest", Printable(v.ContentDigest))
	line("archived at", v.ArchivedAt.UTC().Format(event.TimeLayout))
	if v.PublishTime != nil {
		line("published at", v.PublishTime.UTC().Format(event.TimeLayout))
	}
	line("stage", Printable(v.Stage))
	line("reason", Printable(v.Reason))
	line("detail", Printable(v.Detail))
	line("record", Printable(v.Record()))
	line("event id", Printable(v.EventID))
	line("delivery attempts", strconv.Itoa(v.DeliveryAttempts))
	line("source subscription", Printable(v.Subscription))
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "attributes:")
	keys := make([]string, 0, len(v.Attributes))
	for k := range v.Attributes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %s = %s\n", Printable(k), Printable(v.Attributes[k]))
	}

	if v.ErrorMessage != nil {
		fmt.Fprint(w, "error message:\n  ")
		if err := writeJSON(w, "  ", v.ErrorMessage); err != nil {
			return fmt.Errorf("render error message of %s: %w", v.MessageID, err)
		}
	} else {
		fmt.Fprintf(w, "data (not an error message: %s):\n  ", Printable(v.DecodeError))
		if err := writeJSON(w, "  ", v.Raw); err != nil {
			return fmt.Errorf("render data of %s: %w", v.MessageID, err)
		}
	}

	if len(v.Redrives) == 0 {
		fmt.Fprintln(w, "redrives: none")
	} else {
		fmt.Fprintf(w, "redrives: %d\n", len(v.Redrives))
		for _, r := range v.Redrives {
			fmt.Fprintf(w, "  %s  %s\n", r.At.UTC().Format(event.TimeLayout), Printable(r.Detail))
		}
	}
	if len(v.Others) > 0 {
		fmt.Fprintf(w, "also archived under message id %s (other data; show one with ID@DIGEST):\n", Printable(v.MessageID))
		for _, o := range v.Others {
			fmt.Fprintf(w, "  %s@%s  %s  %s %s\n", Printable(o.MessageID), ShortDigest(o.ContentDigest),
				o.ArchivedAt.UTC().Format(event.TimeLayout), Printable(o.Stage), Printable(o.Reason))
		}
	}
	return nil
}

// WriteOutcome prints one line about what a redrive did with a dead letter.
func WriteOutcome(w io.Writer, o Outcome) error {
	p := Printable
	what := fmt.Sprintf("%s (%s %s", p(o.MessageID), p(o.Stage), p(o.Reason))
	if r := o.Record(); r != "" {
		what += ", " + p(r)
	}
	what += ")"
	before := "never redriven before"
	if o.PreviousRedrives > 0 {
		before = fmt.Sprintf("redriven %d time(s) before, last at %s", o.PreviousRedrives, o.LastRedrivenAt.UTC().Format(time.RFC3339Nano))
	}
	var err error
	switch o.Action {
	case ActionWouldRedrive:
		_, err = fmt.Fprintf(w, "would redrive %s to %s, key %q, as redrive %d; %s\n", what, o.Topic, o.OrderingKey, o.Redrive, before)
	case ActionRedriven:
		_, err = fmt.Fprintf(w, "redriven %s as message %s on %s (redrive %d)\n", what, o.PublishedID, o.Topic, o.Redrive)
	case ActionSkipped:
		_, err = fmt.Fprintf(w, "skipped %s: %s\n", what, p(o.Error))
	default:
		_, err = fmt.Fprintf(w, "FAILED %s: %s\n", what, p(o.Error))
	}
	return err
}

// ShortDigest is the first 12 hex digits of a content digest: enough to
// tell apart the few dead letters that share a message id.
func ShortDigest(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}
