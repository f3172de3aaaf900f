package main

import (
	"context"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/store/mysql"
)

// openStore opens the event store cfg names (EVENT_STORE_DSN, or Cloud SQL
// through CLOUD_SQL_INSTANCE). Close releases the pool and any dialer.
func openStore(ctx context.Context, cfg config.Config) (*mysql.Store, error) {
	if err := cfg.RequireStore(); err != nil {
		return nil, settingError{err}
	}
	db, closeFn, err := mysql.Open(ctx, cfg.DB)
	if err != nil {
		return nil, err
	}
	return mysql.New(db, closeFn), nil
}

// storeFromEnv opens the event store from the environment, or from dsnFlag
// when given. It does not need BACKBONE_ENV: migrate, grants and the
// read-only operator verbs run without environment-specific code.
func storeFromEnv(ctx context.Context, c *cli, dsnFlag string) (*mysql.Store, error) {
	cfg, _ := config.Load(c.getenv) // only the DB part is used; openStore checks it
	if dsnFlag != "" {
		cfg.DB.DSN = dsnFlag
	}
	return openStore(ctx, cfg)
}
