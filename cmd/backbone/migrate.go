package main

import (
	"context"
	"fmt"

	"github.com/backbone-sync/backbone/shared/store/mysql"
)

func runMigrate(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "migrate", "up|down|status [--dsn DSN]\n\nRuns the embedded migrations as a privileged user (EVENT_STORE_DSN or CLOUD_SQL_INSTANCE).\n`down` rolls everything back; the legacy event_store table is NOT recreated (one-way step).")
	dsn := fs.String("dsn", "", "privileged DSN (default: EVENT_STORE_DSN)")
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
