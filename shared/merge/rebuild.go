package merge

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/record"
	"github.com/backbone-sync/backbone/shared/store"
)

// Trail is what folding a record's state needs of a store.
type Trail interface {
	History(ctx context.Context, recordType, recordID string) ([]store.Event, error)
	AuditTrail(ctx context.Context, recordType, recordID string) ([]store.Audit, error)
}

// Projection is what rebuilding the per-record projection needs of a store.
type Projection interface {
	Trail
	Records(ctx context.Context, afterType, afterID string, limit int) ([][2]string, error)
	PutHead(ctx context.Context, recordType, recordID string, version uint64, eventID string, state json.RawMessage) error
}

// State folds a record's state from its events and the merge's audit rows:
// the accepted changes in version order, with the conflict timestamps that
// no-ops refreshed (SPEC §5 step 4) laid over the version they were made at.
// It is what the merge keeps in the record's projection row.
func State(ctx context.Context, p Trail, recordType, recordID string) (*record.State, error) {
	evs, err := p.History(ctx, recordType, recordID)
	if err != nil {
		return nil, err
	}
	trail, err := p.AuditTrail(ctx, recordType, recordID)
	if err != nil {
		return nil, err
	}
	// Refreshes by the version they were made at, in the order written.
	refreshes := map[uint64][]detail{}
	for _, a := range trail {
		if a.Stage != store.StageMerge || a.Detail == "" {
			continue
		}
		var d detail
		if json.Unmarshal([]byte(a.Detail), &d) != nil || len(d.Refreshed) == 0 || d.RefreshedAt == nil {
			continue
		}
		at := a.Version // the head a no-op refreshed
		if a.Outcome == store.OutcomeAccepted || a.Outcome == store.OutcomeMerged {
			at = a.Version - 1 // folded into the state before its own event
		}
		refreshes[at] = append(refreshes[at], d)
	}
	return record.FoldWith(evs, func(v uint64, st *record.State) *record.State {
		for _, d := range refreshes[v] {
			st = st.Refresh(d.Refreshed, *d.RefreshedAt, d.RefreshedBy)
		}
		return st
	})
}

// Rebuild rewrites the projection row of every record that has events
// (`backbone rebuild`), or of the one record named, from the events and
// the audit log. progress, when set, is called after each record.
func Rebuild(ctx context.Context, p Projection, only *[2]string, progress func(recordType, recordID string)) (int, error) {
	one := func(rt, rid string) error {
		st, err := State(ctx, p, rt, rid)
		if err != nil {
			return err
		}
		if st.Version == 0 {
			return nil // no events: nothing to project
		}
		b, err := event.Marshal(st)
		if err != nil {
			return fmt.Errorf("encode state of %s:%s: %w", rt, rid, err)
		}
		if err := p.PutHead(ctx, rt, rid, st.Version, st.EventID, b); err != nil {
			return err
		}
		if progress != nil {
			progress(rt, rid)
		}
		return nil
	}
	if only != nil {
		return 1, one(only[0], only[1])
	}
	n := 0
	var after [2]string
	for {
		keys, err := p.Records(ctx, after[0], after[1], 500)
		if err != nil {
			return n, err
		}
		for _, k := range keys {
			if err := ctx.Err(); err != nil {
				return n, err
			}
			if err := one(k[0], k[1]); err != nil {
				return n, fmt.Errorf("rebuild %s:%s: %w", k[0], k[1], err)
			}
			n++
		}
		if len(keys) < 500 {
			return n, nil
		}
		after = keys[len(keys)-1]
	}
}
