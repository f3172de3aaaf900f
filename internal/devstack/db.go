package devstack

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/store/mysql"
)

// workerPassword is the functions' password on a dev database.
const workerPassword = "backbone-dev-only"

// PrepareDB creates and migrates the database of dsn and returns the DSN
// of a least-privilege user on it (the production grant set).
func PrepareDB(ctx context.Context, dsn string) (string, error) {
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", fmt.Errorf("EVENT_STORE_DSN is not a valid DSN: %w", err)
	}
	if mc.DBName == "" {
		return "", errors.New("EVENT_STORE_DSN names no database")
	}
	server := mc.Clone()
	server.DBName = ""
	sdb, closeS, err := mysql.Open(ctx, config.DB{DSN: server.FormatDSN(), MaxOpenConns: 2})
	if err != nil {
		return "", err
	}
	defer closeS()
	if err := sdb.PingContext(ctx); err != nil {
		return "", fmt.Errorf("the database server at %s is not reachable (start MariaDB/MySQL, or set EVENT_STORE_DSN): %w", mc.Addr, err)
	}
	if _, err := sdb.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS `"+mc.DBName+"` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		return "", fmt.Errorf("create database %s: %w", mc.DBName, err)
	}
	db, closeDB, err := mysql.Open(ctx, config.DB{DSN: mc.FormatDSN(), MaxOpenConns: 2})
	if err != nil {
		return "", err
	}
	defer closeDB()
	m, err := mysql.NewMigrator(db)
	if err != nil {
		return "", err
	}
	if _, err := m.Up(ctx); err != nil {
		return "", err
	}
	// Recreated, so that its grants are exactly the sync_worker set on this
	// one database, whatever an earlier run left (stress checks that).
	user := WorkerName(mc.DBName)
	if _, err := db.ExecContext(ctx, "DROP USER IF EXISTS '"+user+"'@'%'"); err != nil {
		return "", fmt.Errorf("reset the dev worker user %s: %w", user, err)
	}
	if err := mysql.ApplyGrants(ctx, db, mc.DBName, user, "%", workerPassword); err != nil {
		return "", err
	}
	// A user left from an earlier run keeps its password: set it again.
	if _, err := db.ExecContext(ctx, "ALTER USER '"+user+"'@'%' IDENTIFIED BY '"+workerPassword+"'"); err != nil {
		return "", fmt.Errorf("set the dev worker password: %w", err)
	}
	wc := mc.Clone()
	wc.User, wc.Passwd = user, workerPassword
	return wc.FormatDSN(), nil
}

// WorkerName is the functions' database user on one dev database: one user
// per database (MySQL user names have at most 32 characters).
func WorkerName(database string) string {
	if n := database + "_worker"; len(n) <= 32 {
		return n
	}
	sum := sha256.Sum256([]byte(database))
	return "bbw_" + hex.EncodeToString(sum[:8])
}
