package mysql_test

import (
	"testing"

	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/storetest"
	"github.com/backbone-sync/backbone/shared/testdb"
)

// The conformance suite runs twice: as the privileged user, and as the
// least-privilege sync_worker the functions use in production.
func TestConformanceRoot(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store { return testdb.New(t).Store })
}

func TestConformanceSyncWorker(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := testdb.New(t).Worker(t)
		return s
	})
}
