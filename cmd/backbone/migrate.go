package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/backbone-sync/backbone/shared/store/mysql"
)

func runMigrate(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "migrate", "up|down|status [--dsn DSN]\n\nRuns the embedded migrations as a privileged user (EVENT_STORE_DSN or CLOUD_SQL_INSTANCE).\n`down` rolls everything back; the legacy event_store table is NOT recreated (one-way step).\n`down` says what it would drop and refuses while the tables hold rows, unless given --destroy-data.")
	dsn := fs.String("dsn", "", "privileged DSN (default: EVENT_STORE_DSN)")
	destroy := fs.Bool("destroy-data", false, "let `down` drop tables that still hold rows (without it, down refuses)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one of up, down, status")
	}
	action := fs.Arg(0)
	if action != "up" && action != "down" && action != "status" {
		return usagef("unknown action %q: want up, down or status", action)
	}
	st, err := storeFromEnv(ctx, c, *dsn)
	if err != nil {
		return err
	}
	defer st.Close()
	db := st.DB()
	m, err := mysql.NewMigrator(db)
	if err != nil {
		return err
	}
	switch action {
	case "up":
		n, err := m.Up(ctx)
		if err != nil {
			return err
		}
		v, _ := m.Version(ctx)
		if n == 0 {
			fmt.Fprintf(c.stdout, "migrate up: nothing to do, schema at version %d\n", v)
		} else {
			fmt.Fprintf(c.stdout, "migrate up: applied %d migration(s), schema at version %d\n", n, v)
		}
	case "down":
		if err := confirmDown(ctx, c, m, *destroy); err != nil {
			return err
		}
		n, err := m.Down(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "migrate down: rolled back %d migration(s); the legacy event_store table is not recreated (one-way step)\n", n)
	case "status":
		return m.Status(ctx, c.stdout)
	}
	return nil
}

// confirmDown says what `migrate down` would drop and refuses while any
// table holds rows, unless destroy is set: the event store is append-only
// and its rows are the only copy (SPEC §4, destructive steps ask first).
func confirmDown(ctx context.Context, c *cli, m *mysql.Migrator, destroy bool) error {
	tables, err := m.Contents(ctx)
	if err != nil {
		return err
	}
	var total int64
	var parts []string
	for _, t := range tables {
		total += t.Rows
		parts = append(parts, fmt.Sprintf("%s (%d rows)", t.Table, t.Rows))
	}
	if len(parts) == 0 {
		parts = []string{"no tables"}
	}
	fmt.Fprintf(c.stderr, "migrate down drops: %s\n", strings.Join(parts, ", "))
	if total > 0 && !destroy {
		return fmt.Errorf("migrate down refused: the tables hold %d row(s), which would be lost for good (back them up, then run migrate down --destroy-data)", total)
	}
	return nil
}
