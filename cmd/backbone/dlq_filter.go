package main

import (
	"flag"
	"strings"
	"time"

	"github.com/backbone-sync/backbone/shared/deadletter"
	"github.com/backbone-sync/backbone/shared/store"
)

// filterFlags are the selection flags list and redrive share.
type filterFlags struct {
	stage, reason, record, since, until *string
	limit                               *int
}

func addFilterFlags(fs *flag.FlagSet) filterFlags {
	return filterFlags{
		stage:  fs.String("stage", "", "only this stage ("+strings.Join(deadletter.Stages, ", ")+")"),
		reason: fs.String("reason", "", "only this reason code (e.g. http_503, invalid_json, undecodable)"),
		record: fs.String("record", "", "only this record, TYPE:ID (e.g. customer:C-1001)"),
		since:  fs.String("since", "", "archived at or after: RFC 3339 time, or a duration ago (24h, 7d)"),
		until:  fs.String("until", "", "archived before: RFC 3339 time, or a duration ago"),
		limit:  fs.Int("limit", 100, "at most this many, newest first"),
	}
}

func (f filterFlags) text() deadletter.FilterText {
	return deadletter.FilterText{Stage: *f.stage, Reason: *f.reason, Record: *f.record, Since: *f.since, Until: *f.until}
}

// set reports whether any selecting flag was given (--limit alone selects
// nothing).
func (f filterFlags) set() bool { return f.text().Set() }

// filter reads the flags' values into a selection, as of now.
func (f filterFlags) filter(now time.Time) (store.DeadLetterFilter, error) {
	out, err := f.text().Parse(now, "--")
	if err != nil {
		return out, usageError{err.Error()}
	}
	if *f.limit < 1 {
		return out, usagef("--limit %d: want at least 1", *f.limit)
	}
	out.Limit = *f.limit
	return out, nil
}
