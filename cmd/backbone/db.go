package main

import (
	"context"
	"database/sql"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/store/mysql"
)

// openDB opens the event store from the environment (EVENT_STORE_DSN or
// CLOUD_SQL_INSTANCE). It does not need BACKBONE_ENV: migrate and grants run
// before any environment-specific code.
func openDB(ctx context.Context, c *cli, dsnFlag string) (*sql.DB, func() error, config.DB, error) {
	cfg, _ := config.Load(c.getenv) // only the DB part is used; its own errors are checked below
	if dsnFlag != "" {
		cfg.DB.DSN = dsnFlag
	}
	if err := cfg.RequireStore(); err != nil {
		return nil, nil, cfg.DB, err
	}
	db, closeFn, err := mysql.Open(ctx, cfg.DB)
	if err != nil {
		return nil, nil, cfg.DB, err
	}
	return db, closeFn, cfg.DB, nil
}
