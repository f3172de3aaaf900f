package deadletter

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/backbone-sync/backbone/shared/store"
)

// FilterText is a dead-letter selection as an operator writes it: the
// values of `dlq list` and `dlq redrive`'s flags, or of the console's form,
// both read by Parse. It is here, not with the tools, because the scheduled
// redrive job (`dlq redrive --retryable`) reads its flags with it.
type FilterText struct {
	Stage, Reason, Record, Since, Until string
}

// Set reports whether any field selects (a limit alone selects nothing).
func (t FilterText) Set() bool {
	return t.Stage != "" || t.Reason != "" || t.Record != "" || t.Since != "" || t.Until != ""
}

// Parse reads t into a selection as of now; the limit is the caller's.
// Its messages name a field with prefix before it: "--" where the fields
// are flags, "" where they are a form's.
func (t FilterText) Parse(now time.Time, prefix string) (store.DeadLetterFilter, error) {
	f := store.DeadLetterFilter{Stage: t.Stage, Reason: t.Reason}
	if t.Stage != "" && !slices.Contains(Stages, t.Stage) {
		return f, fmt.Errorf("%sstage %q: want one of %s", prefix, t.Stage, strings.Join(Stages, ", "))
	}
	if t.Record != "" {
		rt, rid, ok := splitRecord(t.Record)
		if !ok {
			return f, recordError(prefix+"record", t.Record)
		}
		f.RecordType, f.RecordID = rt, rid
	}
	var err error
	if t.Since != "" {
		if f.Since, err = ParseWhen(t.Since, now); err != nil {
			return f, fmt.Errorf("%ssince: %w", prefix, err)
		}
	}
	if t.Until != "" {
		if f.Until, err = ParseWhen(t.Until, now); err != nil {
			return f, fmt.Errorf("%suntil: %w", prefix, err)
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return f, fmt.Errorf("%ssince %s is not before %suntil %s", prefix, t.Since, prefix, t.Until)
	}
	return f, nil
}

// ParseRecord splits TYPE:ID at the first colon (record types cannot hold
// one; record ids can).
func ParseRecord(s string) (recordType, recordID string, err error) {
	rt, rid, ok := splitRecord(s)
	if !ok {
		return "", "", recordError("record", s)
	}
	return rt, rid, nil
}

func splitRecord(s string) (recordType, recordID string, ok bool) {
	rt, rid, ok := strings.Cut(s, ":")
	return rt, rid, ok && rt != "" && rid != ""
}

func recordError(name, s string) error {
	return fmt.Errorf("%s %q is not TYPE:ID (for example customer:C-1001)", name, s)
}

// ParseWhen reads a point in time: RFC 3339 (2026-03-13T20:00:00Z), or a
// duration meaning "that long before now" (90m, 24h, or 7d for days).
func ParseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour).UTC(), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2026-03-13T20:00:00Z) nor a duration ago (24h, 7d)", s)
}
