package health

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Thresholds say when the backbone is unhealthy. A negative value turns
// that check off.
type Thresholds struct {
	// MaxDeadLettersHour: more dead letters archived in the last hour.
	MaxDeadLettersHour int
	// MaxOutboxAge: the oldest unprocessed event is older.
	MaxOutboxAge time.Duration
	// MaxFailureRate: a target's failure rate over the window is higher
	// (0..1), counted once it made at least MinAttempts attempts.
	MaxFailureRate float64
	MinAttempts    int
	// MaxUnconverged: more records than this have been unconverged for
	// longer than UnconvergedGrace (a delivery in flight is not a problem).
	MaxUnconverged   int
	UnconvergedGrace time.Duration
	// MaxBacklog and MaxUnackedAge apply where the backlog is known.
	MaxBacklog    int64
	MaxUnackedAge time.Duration
}

// DefaultThresholds are status's defaults.
func DefaultThresholds() Thresholds {
	return Thresholds{MaxDeadLettersHour: 0, MaxOutboxAge: 5 * time.Minute, MaxFailureRate: 0.2, MinAttempts: 1,
		MaxUnconverged: 0, UnconvergedGrace: 5 * time.Minute, MaxBacklog: -1, MaxUnackedAge: 5 * time.Minute}
}

// Problems lists the thresholds the snapshot crosses, one line each;
// empty means healthy.
func (s *Snapshot) Problems(t Thresholds) []string {
	var out []string
	if t.MaxDeadLettersHour >= 0 && s.DeadLetters.LastHour > t.MaxDeadLettersHour {
		out = append(out, fmt.Sprintf("%d dead letter(s) in the last hour (threshold %d)", s.DeadLetters.LastHour, t.MaxDeadLettersHour))
	}
	if t.MaxOutboxAge >= 0 && s.Outbox.Unprocessed > 0 && s.Outbox.OldestAgeSeconds > t.MaxOutboxAge.Seconds() {
		out = append(out, fmt.Sprintf("outbox: %d unprocessed, the oldest %s old (threshold %s): run backbone outbox flush",
			s.Outbox.Unprocessed, seconds(s.Outbox.OldestAgeSeconds), t.MaxOutboxAge))
	}
	for _, tg := range s.Targets {
		n := tg.Delivered + tg.Failed + tg.Refused
		if t.MaxFailureRate >= 0 && n >= max(t.MinAttempts, 1) && tg.FailureRate > t.MaxFailureRate {
			out = append(out, fmt.Sprintf("%s: failure rate %.0f%% over %s (%d of %d attempts; threshold %.0f%%)",
				tg.Name, 100*tg.FailureRate, tg.Window, tg.Failed+tg.Refused, n, 100*t.MaxFailureRate))
		}
	}
	if t.MaxUnconverged >= 0 {
		late := 0
		for _, age := range s.Unconverged.ages {
			if age > t.UnconvergedGrace.Seconds() {
				late++
			}
		}
		if late > t.MaxUnconverged {
			o := s.Unconverged.Oldest
			out = append(out, fmt.Sprintf("%d record(s) not converged for over %s (threshold %d), oldest %s:%s for %s",
				late, t.UnconvergedGrace, t.MaxUnconverged, o.RecordType, o.RecordID, seconds(o.AgeSeconds)))
		}
	}
	for _, sub := range s.Subscriptions {
		if sub.Backlog == nil {
			continue
		}
		if t.MaxBacklog >= 0 && *sub.Backlog > t.MaxBacklog {
			out = append(out, fmt.Sprintf("%s: backlog %d (threshold %d)", sub.Name, *sub.Backlog, t.MaxBacklog))
		}
		if t.MaxUnackedAge >= 0 && sub.OldestUnackedAgeSeconds != nil && *sub.OldestUnackedAgeSeconds > t.MaxUnackedAge.Seconds() {
			out = append(out, fmt.Sprintf("%s: oldest unacked message %s old (threshold %s)", sub.Name, seconds(*sub.OldestUnackedAgeSeconds), t.MaxUnackedAge))
		}
	}
	return out
}

// seconds prints an age rounded to the second.
func seconds(s float64) string {
	return (time.Duration(s) * time.Second).String()
}

// Age prints an age in seconds for people.
func Age(s float64) string { return seconds(s) }

// WriteText prints the snapshot on one screen.
func (s *Snapshot) WriteText(w io.Writer, problems []string) error {
	state := "HEALTHY"
	if len(problems) > 0 {
		state = "UNHEALTHY"
	}
	fmt.Fprintf(w, "backbone %s — %s at %s\n", s.Env, state, s.At.Format(time.RFC3339))
	for _, p := range problems {
		fmt.Fprintf(w, "  ! %s\n", p)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nSUBSCRIPTION\tFUNCTION\tBACKLOG\tOLDEST UNACKED")
	for _, sub := range s.Subscriptions {
		b, age := "n/a", "n/a"
		if sub.Backlog != nil {
			b = fmt.Sprint(*sub.Backlog)
		}
		if sub.OldestUnackedAgeSeconds != nil {
			age = seconds(*sub.OldestUnackedAgeSeconds)
		}
		note := ""
		if sub.Note != "" {
			note = "\t(" + sub.Note + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s%s\n", sub.Name, sub.Function, b, age, note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	oldest := "-"
	if s.Outbox.Oldest != nil {
		oldest = seconds(s.Outbox.OldestAgeSeconds) + " old"
	}
	fmt.Fprintf(w, "\noutbox: %d unprocessed, oldest %s\n", s.Outbox.Unprocessed, oldest)
	fmt.Fprintf(w, "dead letters: %d in the last hour, %d in the last day\n", s.DeadLetters.LastHour, s.DeadLetters.LastDay)
	if len(s.DeadLetters.ByReason) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  STAGE\tREASON\tLAST HOUR\tLAST DAY")
		for _, g := range s.DeadLetters.ByReason {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\n", g.Stage, g.Reason, g.LastHour, g.LastDay)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nTARGET\tLAST DELIVERED\tWINDOW\tDELIVERED\tFAILED\tREFUSED\tSTALE\tSKIPPED_ECHO\tSENDING\tFAILURE RATE")
	for _, t := range s.Targets {
		last := "none in " + t.LookBack
		if t.LastDelivered != nil {
			last = seconds(t.LastDeliveredAge) + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.0f%%\n", t.Name, last, t.Window, t.Delivered, t.Failed, t.Refused,
			t.Stale, t.SkippedEcho, t.Sending, 100*t.FailureRate)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	u := s.Unconverged
	scope := fmt.Sprintf("checked %d record(s) with activity in the last %s", u.Checked, u.Window)
	if u.Capped {
		scope += fmt.Sprintf(", capped at the newest %d", u.Cap)
	}
	fmt.Fprintf(w, "\nnot converged (SPEC §7): %d (%s)\n", u.Count, scope)
	for _, r := range u.Records {
		var parts []string
		for t, f := range r.Missing {
			parts = append(parts, t+" lacks "+strings.Join(f, ","))
		}
		fmt.Fprintf(w, "  %s:%s  for %s  %s\n", r.RecordType, r.RecordID, seconds(r.AgeSeconds), strings.Join(sortStrings(parts), "; "))
	}
	if u.Count > len(u.Records) {
		fmt.Fprintf(w, "  ... and %d more\n", u.Count-len(u.Records))
	}
	return nil
}

func sortStrings(s []string) []string {
	slices.Sort(s)
	return s
}
