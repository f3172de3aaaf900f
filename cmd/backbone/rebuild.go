package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/backbone-sync/backbone/shared/merge"
)

const rebuildSynopsis = `[RECORD_TYPE:RECORD_ID] [--dsn DSN]

Rebuilds the projection (record_heads: each record's head and folded state,
SPEC §4) from events and the audit log, for every record or the one named.
Safe while the backbone runs: a merge of the same record locks its row and
writes the same state. Run it after restoring a backup, or if a record's
projection row is missing or suspect.`

func runRebuild(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "rebuild", rebuildSynopsis)
	dsn := fs.String("dsn", "", "event store DSN (default: EVENT_STORE_DSN)")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	var only *[2]string
	switch len(pos) {
	case 0:
	case 1:
		rt, rid, ok := strings.Cut(pos[0], ":")
		if !ok || rt == "" || rid == "" {
			return usagef("want RECORD_TYPE:RECORD_ID, got %q", pos[0])
		}
		only = &[2]string{rt, rid}
	default:
		return usagef("want at most one RECORD_TYPE:RECORD_ID")
	}
	st, err := storeFromEnv(ctx, c, *dsn)
	if err != nil {
		return err
	}
	defer st.Close()
	n, err := merge.Rebuild(ctx, st, only, nil)
	if err != nil {
		return fmt.Errorf("rebuild: %w (%d records rebuilt before it)", err, n)
	}
	fmt.Fprintf(c.stdout, "rebuilt the projection of %d records\n", n)
	return nil
}
