package sink

import (
	"context"
	"fmt"
	"sort"

	"github.com/backbone-sync/backbone/shared/store"
)

// StateReader is what the known-state computation reads: the record's head
// and, when no folded state is stored with it, its events, and the audit
// rows that make up what a target knows. store.Store and store.Locked both
// satisfy it.
type StateReader interface {
	Head(ctx context.Context, recordType, recordID string) (store.Head, error)
	History(ctx context.Context, recordType, recordID string) ([]store.Event, error)
	SystemHistory(ctx context.Context, recordType, recordID, system string, fromVersion uint64) ([]store.Audit, error)
	Checkpoint(ctx context.Context, recordType, recordID, system string) (uint64, error)
	KnownHistory(ctx context.Context, recordType, recordID, system string, since uint64) ([]store.Audit, error)
}

// Missing returns, sorted, the fields of the record's newest stored version
// whose value differs from target's known value (SPEC §7): exactly what the
// Runner's next delivery would send. Empty means the target has converged.
// Operator tools (status, the console) call it outside the delivery lock,
// so a delivery in flight may make the answer out of date by one attempt.
func Missing(ctx context.Context, r StateReader, recordType, recordID, target string) ([]string, error) {
	head, err := r.Head(ctx, recordType, recordID)
	if err != nil {
		return nil, fmt.Errorf("head of %s:%s: %w", recordType, recordID, err)
	}
	st, err := stateAt(ctx, r, head, recordType, recordID)
	if err != nil {
		return nil, fmt.Errorf("state of %s:%s: %w", recordType, recordID, err)
	}
	hist, err := readHistory(ctx, r, recordType, recordID, target, head.Version, defaultCheckpointEvery)
	if err != nil {
		return nil, fmt.Errorf("what %s knows of %s:%s: %w", target, recordType, recordID, err)
	}
	fields := hist.knowledge().missing(st)
	sort.Strings(fields)
	return fields, nil
}
