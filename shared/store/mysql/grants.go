package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// Tables are the backbone tables that sync_worker may touch.
var Tables = []string{"events", "event_audit_log", "dead_letters"}

// Projections are the mutable tables derived from Tables (SPEC §4):
// sync_worker may update them, never delete from them, and `backbone
// rebuild` rebuilds them.
var Projections = []string{"record_heads"}

// GrantStatements returns the least-privilege grant set of SPEC §4 for
// user@host on database: SELECT and INSERT on the backbone tables, UPDATE on
// events.processed only, nothing else (no DELETE, no other schema). The
// trigger keeps that one column grant one-way (0 -> 1).
func GrantStatements(database, user, host string) []string {
	acct := quoteString(user) + "@" + quoteString(host)
	db := quoteIdent(database)
	stmts := []string{}
	for _, t := range Tables {
		stmts = append(stmts, fmt.Sprintf("GRANT SELECT, INSERT ON %s.%s TO %s", db, quoteIdent(t), acct))
	}
	stmts = append(stmts, fmt.Sprintf("GRANT UPDATE (processed) ON %s.%s TO %s", db, quoteIdent("events"), acct))
	for _, t := range Projections {
		stmts = append(stmts, fmt.Sprintf("GRANT SELECT, INSERT, UPDATE ON %s.%s TO %s", db, quoteIdent(t), acct))
	}
	return stmts
}

// ApplyGrants creates user@host when missing (with password, if given; an
// IAM user on Cloud SQL is created by the deploy scripts instead) and applies
// GrantStatements.
func ApplyGrants(ctx context.Context, db *sql.DB, database, user, host, password string) error {
	if password != "" {
		q := fmt.Sprintf("CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s", quoteString(user), quoteString(host), quoteString(password))
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("create user %s: %w", user, err)
		}
	}
	for _, s := range GrantStatements(database, user, host) {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("apply %q: %w", s, err)
		}
	}
	return nil
}

func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

func quoteString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(s) + "'"
}
