package mysql_test

import (
	"testing"

	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
	"github.com/backbone-sync/backbone/shared/store/storetest"
)

// The conformance suite runs twice: as the privileged user, and as the
// least-privilege sync_worker the functions use in production.
func TestConformanceRoot(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store { return mysqltest.New(t).Store })
}

func TestConformanceSyncWorker(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := mysqltest.New(t).Worker(t)
		return s
	})
}

// Every pooled connection runs READ COMMITTED (set once when it opens).
func TestSessionsAreReadCommitted(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	var level string
	err := d.Store.DB().QueryRow("SELECT @@transaction_isolation").Scan(&level)
	if err != nil { // MariaDB before 11.1 names it tx_isolation
		err = d.Store.DB().QueryRow("SELECT @@tx_isolation").Scan(&level)
	}
	if err != nil || level != "READ-COMMITTED" {
		t.Errorf("session isolation %q, %v; want READ-COMMITTED", level, err)
	}
}
