package mysql_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
	"github.com/backbone-sync/backbone/shared/store/storetest"
)

// The record lock holds the projection row only: another transaction can
// set the outbox flag of the record's newest event meanwhile (the flag
// rides on other merges' commits), while a second merger of the record
// waits for the first.
func TestLockRecordLocksOnlyTheHead(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	ctx := context.Background()
	e := storetest.NewEvent("customer", "L-1", 0, `{"a":1}`)
	if err := d.Store.AppendEvent(ctx, e, auditFor(e)); err != nil {
		t.Fatal(err)
	}
	other, err := d.Root.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.ExecContext(ctx, "SET SESSION innodb_lock_wait_timeout = 1"); err != nil {
		t.Fatal(err)
	}
	granted := make(chan time.Time, 1)
	err = d.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		if _, _, err := tx.LockRecord(ctx, "customer", "L-1", store.Probe{}); err != nil {
			return err
		}
		// The newest event's row is not locked by the lock.
		if _, err := other.ExecContext(ctx, "UPDATE events SET processed = 1 WHERE id = ?", e.ID); err != nil {
			t.Errorf("flag of the newest event while the record is locked: %v", err)
		}
		// A second merger of the record waits.
		go func() {
			_ = d.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
				_, _, err := tx.LockRecord(ctx, "customer", "L-1", store.Probe{})
				granted <- time.Now()
				return err
			})
		}()
		select {
		case <-granted:
			t.Error("a second LockRecord of the record was granted while the first held it")
		case <-time.After(300 * time.Millisecond):
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-granted:
	case <-time.After(10 * time.Second):
		t.Fatal("the second LockRecord was never granted")
	}
	var processed sql.NullBool
	if err := d.Root.QueryRowContext(ctx, "SELECT processed FROM events WHERE id = ?", e.ID).Scan(&processed); err != nil || !processed.Bool {
		t.Errorf("processed = %v, %v", processed, err)
	}
}
