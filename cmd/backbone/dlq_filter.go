package main

import (
	"flag"
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
		stage:  fs.String("stage", "", "only this stage (merge, netsuite, suitex, unknown)"),
		reason: fs.String("reason", "", "only this reason code (e.g. http_503, invalid_json, undecodable)"),
		record: fs.String("record", "", "only this record, TYPE:ID (e.g. customer:C-1001)"),
		since:  fs.String("since", "", "archived at or after: RFC 3339 time, or a duration ago (24h, 7d)"),
		until:  fs.String("until", "", "archived before: RFC 3339 time, or a duration ago"),
		limit:  fs.Int("limit", 100, "at most this many, newest first"),
	}
}

// set reports whether any selecting flag was given (--limit alone selects
// nothing).
func (f filterFlags) set() bool {
	return *f.stage != "" || *f.reason != "" || *f.record != "" || *f.since != "" || *f.until != ""
}

// filter reads the flags' values into a selection, as of now.
func (f filterFlags) filter(now time.Time) (store.DeadLetterFilter, error) {
	out := store.DeadLetterFilter{Stage: *f.stage, Reason: *f.reason, Limit: *f.limit}
	if err := oneOf("--stage", *f.stage, deadletter.Stages...); err != nil {
		return out, err
	}
	if *f.limit < 1 {
		return out, usagef("--limit %d: want at least 1", *f.limit)
	}
	if *f.record != "" {
		rt, rid, err := deadletter.ParseRecord(*f.record)
		if err != nil {
			return out, usagef("--record: %v", err)
		}
		out.RecordType, out.RecordID = rt, rid
	}
	var err error
	if *f.since != "" {
		if out.Since, err = deadletter.ParseWhen(*f.since, now); err != nil {
			return out, usagef("--since: %v", err)
		}
	}
	if *f.until != "" {
		if out.Until, err = deadletter.ParseWhen(*f.until, now); err != nil {
			return out, usagef("--until: %v", err)
		}
	}
	if !out.Since.IsZero() && !out.Until.IsZero() && !out.Since.Before(out.Until) {
		return out, usagef("--since %s is not before --until %s", *f.since, *f.until)
	}
	return out, nil
}
