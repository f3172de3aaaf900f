package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/backbone-sync/backbone/shared/store"
)

// The outbox flag (SPEC §5 step 6: commit, publish, then processed = 1) is
// the merge path's second write per event. Written on its own it is a
// second durable commit per event; here it rides on a commit that happens
// anyway: every transaction of this store that reaches its commit first
// flags the events queued meanwhile (one UPDATE inside it). Under load the
// merge path then costs one durable commit per event. When no transaction
// takes a flag in time (flagCarryWait, or flagCarryMax while transactions
// are open), a standalone writer group-commits what is queued (also at once
// when the last open transaction ends without committing). A caller returns once its own flag is
// committed, so "ack only after processed = 1" holds either way.
//
// No lock cycle: the record lock (lockQuery) locks projection rows only,
// and each queued flag is taken by exactly one writer, so a carrying
// transaction never waits for a row another transaction holds for the same
// reason.

// flagCarryWait is how long a flag waits for a carrying commit before the
// standalone writer takes it, flagCarryMax how long while transactions are
// open.
const (
	flagCarryWait = 2 * time.Millisecond
	flagCarryMax  = 10 * time.Millisecond
)

// maxFlagBatch bounds one UPDATE's IN list.
const maxFlagBatch = 256

// flagBatcher queues MarkProcessed calls.
type flagBatcher struct {
	mu       sync.Mutex
	pending  []*flagRequest
	writing  bool // the standalone writer runs
	carriers int  // transactions open that take the queue at their commit
}

// flagRequest is one queued flag; done receives its outcome exactly once.
type flagRequest struct {
	id   string
	done chan error
}

// MarkProcessed sets the outbox flag of event id, and returns once it is
// committed.
func (s *Store) MarkProcessed(ctx context.Context, id string) error {
	req := &flagRequest{id: id, done: make(chan error, 1)}
	s.flags.mu.Lock()
	s.flags.pending = append(s.flags.pending, req)
	s.flags.mu.Unlock()
	// Even when no transaction is open one may begin within the wait (the
	// next message's merge), so a lone flag waits flagCarryWait; while
	// transactions are open it waits for one of them to commit, up to
	// flagCarryMax (one may be queued behind a record lock).
	timer := time.NewTimer(flagCarryWait)
	defer timer.Stop()
	wake, waited := timer.C, flagCarryWait
	for {
		select {
		case err := <-req.done:
			return err
		case <-wake:
			if waited < flagCarryMax && s.flags.open() > 0 {
				timer.Reset(flagCarryWait)
				waited += flagCarryWait
				continue
			}
			wake = nil
			s.kickFlags()
		case <-ctx.Done():
			// The flag may still be committed; either way the caller nacks
			// and a redelivery republishes at worst (the sinks dedup by id).
			return fmt.Errorf("mark event %s processed: %w: %w", id, store.ErrUnavailable, ctx.Err())
		}
	}
}

// open is the number of transactions that will take the queue at commit.
func (b *flagBatcher) open() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.carriers
}

// kickFlags starts the standalone writer when flags are queued and it is
// not running.
func (s *Store) kickFlags() {
	s.flags.mu.Lock()
	start := !s.flags.writing && len(s.flags.pending) > 0
	if start {
		s.flags.writing = true
	}
	s.flags.mu.Unlock()
	if start {
		go s.writeFlagBatches()
	}
}

// carrierOpened counts a transaction that will take the queue at commit.
func (b *flagBatcher) carrierOpened() {
	b.mu.Lock()
	b.carriers++
	b.mu.Unlock()
}

// carrierClosed uncounts a transaction; with take it hands over the queued
// flags for that transaction's commit. The last carrier to close without
// taking them leaves them to the standalone writer (kick).
func (b *flagBatcher) carrierClosed(take bool) (taken []*flagRequest, kick bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.carriers--
	if take {
		n := min(len(b.pending), maxFlagBatch)
		taken = b.pending[:n:n]
		b.pending = b.pending[n:]
	}
	return taken, b.carriers == 0 && len(b.pending) > 0
}

// requeue gives back flags whose carrying transaction failed; they were
// not signalled, so each is still signalled exactly once.
func (s *Store) requeue(reqs []*flagRequest) {
	s.flags.mu.Lock()
	s.flags.pending = append(reqs[:len(reqs):len(reqs)], s.flags.pending...)
	s.flags.mu.Unlock()
	s.kickFlags()
}

// writeFlagBatches writes queued flags until the queue is empty.
func (s *Store) writeFlagBatches() {
	for {
		s.flags.mu.Lock()
		n := min(len(s.flags.pending), maxFlagBatch)
		if n == 0 {
			s.flags.writing = false
			s.flags.mu.Unlock()
			return
		}
		batch := s.flags.pending[:n:n]
		s.flags.pending = s.flags.pending[n:]
		s.flags.mu.Unlock()
		err := s.writeFlags(batch)
		for _, r := range batch {
			r.done <- err
		}
	}
}

// flagUpdate sets processed = 1 on n events. WHERE processed = 0: the
// trigger refuses 1 -> 1 as any other update, and a second call for an id
// is a harmless no-op.
func flagUpdate(n int) string {
	return "UPDATE events SET processed = 1 WHERE processed = 0 AND id IN (?" + strings.Repeat(", ?", n-1) + ")"
}

func flagArgs(batch []*flagRequest) []any {
	args := make([]any, len(batch))
	for i, r := range batch {
		args[i] = r.id
	}
	return args
}

// writeFlags sets the batch's flags in one READ COMMITTED statement (no gap
// locks against concurrent merges), retrying deadlocks: on its own when
// the session is READ COMMITTED, else in a transaction that says so.
func (s *Store) writeFlags(batch []*flagRequest) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, args := flagUpdate(len(batch)), flagArgs(batch)
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		err = s.execRC(ctx, q, args...)
		if err == nil || !retryable(err) {
			break
		}
	}
	if err != nil {
		return wrap(err, fmt.Sprintf("mark %d event(s) processed", len(batch)))
	}
	return nil
}

// execRC runs one statement at READ COMMITTED.
func (s *Store) execRC(ctx context.Context, q string, args ...any) error {
	if s.sessionRC {
		_, err := s.db.ExecContext(ctx, q, args...)
		return err
	}
	t, err := s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return err
	}
	if _, err := t.ExecContext(ctx, q, args...); err != nil {
		_ = t.Rollback()
		return err
	}
	return t.Commit()
}
