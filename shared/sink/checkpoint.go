package sink

import (
	"context"
	"encoding/json"

	"github.com/backbone-sync/backbone/shared/store"
)

// Known-state checkpoints. A delivery that read many rows of a target's
// history stores, in the state of the audit row it writes anyway (its
// outcome, or its stale / skipped_echo row), the summary of the rows below
// that row's version (knowledge, known.go); the next delivery reads the
// newest checkpoint and the rows from its version on
// (store.Reader.Checkpoint, KnownHistory), so its cost follows the rows since the
// checkpoint, not the record's history. Nothing else is written: no extra
// statement, no mutable table; the audit log stays append-only.
//
// A checkpoint at version b is exact only if no row below b can still be
// written. Under the delivery lock, with the record at version H ≥ b read
// under it, that holds for every row with a version:
//   - a merge row carries the head version it was processed at, or the
//     version it created, and was written holding the record's row lock;
//     the merge that made H took that lock after every such row below H had
//     committed, and every later merge row has a version ≥ H;
//   - a delivery row carries the version it sent, written under the
//     delivery lock we hold: earlier holders are done, later ones send H or
//     newer.
// Rows without a version (a report on a record with no events, taken
// without any row to lock) are never summarised: KnownHistory always
// returns them. So checkpoints are written only under the delivery lock,
// at a version no newer than the head read under it.

// defaultCheckpointEvery: a delivery writes a checkpoint when it would
// summarise at least this many rows since the last one. Small enough that
// a delivery reads a few dozen rows at most; large enough that checkpoints
// (a few hundred bytes per field of the record) add little to the audit log.
//
// It is also the version below which a record is read whole, without
// looking for a checkpoint first: its history is a few dozen rows, and the
// look (a walk down the record's rows to the newest checkpoint, a statement
// of its own) would cost about what it saves.
const defaultCheckpointEvery = 64

// knownReader is what reading a target's known state needs.
type knownReader interface {
	Checkpoint(ctx context.Context, recordType, recordID, system string) (uint64, error)
	KnownHistory(ctx context.Context, recordType, recordID, system string, since uint64) ([]store.Audit, error)
	SystemHistory(ctx context.Context, recordType, recordID, system string, fromVersion uint64) ([]store.Audit, error)
}

// history is a target's history of a record as read: the newest
// checkpoint's summary and the rows from its version on.
type history struct {
	// since is the checkpoint's version (0: no checkpoint, every row).
	since uint64
	// base is the summary of the rows below since (nil without one).
	base *knowledge
	rows []store.Audit
}

// readHistory reads target's history of a record, at version newest as
// the caller read it, from its newest checkpoint on (a record younger than
// every versions whole).
// A checkpoint that does not decode (another format) is not trusted: the
// whole history is read instead.
func readHistory(ctx context.Context, r knownReader, rt, rid, target string, newest uint64, every int) (*history, error) {
	var since uint64
	if every > 0 && newest >= uint64(every) {
		v, err := r.Checkpoint(ctx, rt, rid, target)
		if err != nil {
			return nil, err
		}
		since = v
	}
	rows, err := r.KnownHistory(ctx, rt, rid, target, since)
	if err != nil {
		return nil, err
	}
	// The newest checkpoint read: the one at since, or, for a young record,
	// the newest of all.
	h := &history{rows: rows}
	var ck *store.Audit
	for i, a := range rows {
		if a.Stage == target && a.State != nil && (ck == nil || a.Version >= ck.Version) {
			ck = &rows[i]
		}
	}
	if ck == nil {
		return h, nil
	}
	base, err := decodeKnowledge(ck.State)
	if err != nil {
		rows, err := r.SystemHistory(ctx, rt, rid, target, 0)
		if err != nil {
			return nil, err
		}
		return &history{rows: rows}, nil
	}
	h.since, h.base = ck.Version, base
	return h, nil
}

// knowledge is what the backbone knows of the target's copy of the record.
func (h *history) knowledge() *knowledge {
	k := learn(h.rows)
	if h.base != nil {
		k.merge(h.base)
	}
	return k
}

// below counts the rows a checkpoint at version b would summarise beyond
// the current one's (a young record's rows are all read, those below the
// current checkpoint included: they do not count).
func (h *history) below(b uint64) int {
	n := 0
	for _, a := range h.rows {
		if a.Version > 0 && a.Version >= h.since && a.Version < b {
			n++
		}
	}
	return n
}

// checkpoint is the checkpoint to store on a row at version b, or nil when
// it would summarise fewer than every rows beyond the current checkpoint.
// The caller holds the delivery lock and read the head at b or newer under
// it (see above).
func (h *history) checkpoint(b uint64, every int) json.RawMessage {
	if every <= 0 || b <= h.since || h.below(b) < every {
		return nil
	}
	var low []store.Audit
	for _, a := range h.rows {
		if a.Version > 0 && a.Version < b {
			low = append(low, a)
		}
	}
	k := learn(low)
	if h.base != nil {
		k.merge(h.base)
	}
	b2, err := k.encode()
	if err != nil {
		return nil // no checkpoint: the next delivery reads more, that is all
	}
	return b2
}
