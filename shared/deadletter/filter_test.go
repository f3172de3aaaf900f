package deadletter_test

import (
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/deadletter"
	"github.com/backbone-sync/backbone/shared/store"
)

// TestFilterTextParse pins the one filter parser both the command line
// ("--" before a field's name) and the console's form ("") read with.
func TestFilterTextParse(t *testing.T) {
	now := time.Date(2026, 3, 13, 20, 0, 0, 0, time.UTC)
	got, err := deadletter.FilterText{Stage: "suitex", Reason: "http_503", Record: "customer:C:1", Since: "2d", Until: "2026-03-13T19:00:00Z"}.Parse(now, "--")
	if err != nil {
		t.Fatal(err)
	}
	want := store.DeadLetterFilter{Stage: "suitex", Reason: "http_503", RecordType: "customer", RecordID: "C:1",
		Since: now.Add(-48 * time.Hour), Until: time.Date(2026, 3, 13, 19, 0, 0, 0, time.UTC)}
	if got != want {
		t.Errorf("Parse = %+v, want %+v", got, want)
	}
	for _, c := range []struct {
		in             deadletter.FilterText
		flag, formText string
	}{
		{deadletter.FilterText{Stage: "bogus"},
			`--stage "bogus": want one of merge, netsuite, suitex, unknown`,
			`stage "bogus": want one of merge, netsuite, suitex, unknown`},
		{deadletter.FilterText{Record: "customer"},
			`--record "customer" is not TYPE:ID (for example customer:C-1001)`,
			`record "customer" is not TYPE:ID (for example customer:C-1001)`},
		{deadletter.FilterText{Since: "yesterday"},
			`--since: "yesterday" is neither an RFC 3339 time (2026-03-13T20:00:00Z) nor a duration ago (24h, 7d)`,
			`since: "yesterday" is neither an RFC 3339 time (2026-03-13T20:00:00Z) nor a duration ago (24h, 7d)`},
		{deadletter.FilterText{Until: "-1h"},
			`--until: "-1h" is neither an RFC 3339 time (2026-03-13T20:00:00Z) nor a duration ago (24h, 7d)`,
			`until: "-1h" is neither an RFC 3339 time (2026-03-13T20:00:00Z) nor a duration ago (24h, 7d)`},
		{deadletter.FilterText{Since: "1h", Until: "2h"},
			`--since 1h is not before --until 2h`,
			`since 1h is not before until 2h`},
	} {
		for prefix, want := range map[string]string{"--": c.flag, "": c.formText} {
			if _, err := c.in.Parse(now, prefix); err == nil || err.Error() != want {
				t.Errorf("%+v with %q: error %v, want %s", c.in, prefix, err, want)
			}
		}
	}
	if (deadletter.FilterText{}).Set() {
		t.Error("an empty filter is set")
	}
	if !(deadletter.FilterText{Until: "1h"}).Set() {
		t.Error("a filter with until is not set")
	}
}
