package main

import (
	"context"
	"fmt"

	"github.com/backbone-sync/backbone/shared/store/mysql"
)

func runGrants(ctx context.Context, c *cli, args []string) error {
	fs := newFlags(c, "grants", "[--apply] [--user sync_worker] [--host %] [--database NAME] [--password-env VAR]\n\nPrints the least-privilege grant set of the functions' database user; --apply runs it as the privileged user of EVENT_STORE_DSN.")
	apply := fs.Bool("apply", false, "apply the grants instead of printing them")
	user := fs.String("user", "sync_worker", "database user the functions connect as")
	host := fs.String("host", "%", "host part of the account")
	database := fs.String("database", "", "backbone database (default: the DSN's database, or DB_NAME)")
	passEnv := fs.String("password-env", "", "create the user if missing, with the password in this environment variable (IAM users are created by deploy/)")
	dsn := fs.String("dsn", "", "privileged DSN (default: EVENT_STORE_DSN)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("unexpected arguments %v", fs.Args())
	}
	dbName := *database
	if dbName == "" {
		d := *dsn
		if d == "" {
			d = c.getenv("EVENT_STORE_DSN")
		}
		if d != "" {
			if mc, err := mysql.ParseDSN(d); err == nil {
				dbName = mc.DBName
			}
		}
		if dbName == "" {
			dbName = c.getenv("DB_NAME")
		}
	}
	if dbName == "" {
		return usagef("no database: pass --database or set EVENT_STORE_DSN / DB_NAME")
	}
	if !*apply {
		for _, s := range mysql.GrantStatements(dbName, *user, *host) {
			fmt.Fprintln(c.stdout, s+";")
		}
		return nil
	}
	password := ""
	if *passEnv != "" {
		password = c.getenv(*passEnv)
		if password == "" {
			return fmt.Errorf("%s is empty: set it to the password of %s", *passEnv, *user)
		}
	}
	st, err := storeFromEnv(ctx, c, *dsn)
	if err != nil {
		return err
	}
	defer st.Close()
	db := st.DB()
	if err := mysql.ApplyGrants(ctx, db, dbName, *user, *host, password); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "grants applied for '%s'@'%s' on %s\n", *user, *host, dbName)
	return nil
}
