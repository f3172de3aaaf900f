package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

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
// (about 120 bytes per field of the record, 2.4 KB for 20 fields) add
// little to the audit log: under 40 bytes per row of the target's history.
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

// pending are the rows a checkpoint at version b would summarise beyond
// the current one's: versions from since up to b. A young record's rows
// are all read, those below the current checkpoint included; they are in
// its base already.
func (h *history) pending(b uint64) []store.Audit {
	var out []store.Audit
	for _, a := range h.rows {
		if a.Version > 0 && a.Version >= h.since && a.Version < b {
			out = append(out, a)
		}
	}
	return out
}

// checkpoint is the checkpoint to store on a row at version b, or nil when
// it would summarise fewer than every rows beyond the current checkpoint.
// The caller holds the delivery lock and read the head at b or newer under
// it (see above).
func (h *history) checkpoint(b uint64, every int) json.RawMessage {
	if every <= 0 || b <= h.since {
		return nil
	}
	low := h.pending(b)
	if len(low) < every {
		return nil
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

// checkpointFormat versions a checkpoint's JSON; one in another format, or
// one that does not decode, is not trusted: the whole history is read.
const checkpointFormat = 1

// A checkpoint's JSON names each row the summary comes from once (a report
// or an attempt carries many fields), then each field's two entries:
//
//	{"format":1,"delivered":12,"rows":[[1764633600000000,"0193…"],…],
//	 "fields":{"email":{"r":[0,11,"9f86d081884c7d65"],"s":[1,12,"9f86d081884c7d65",3]}}}
//
// rows are [created_at in microseconds, id]; r is the latest report,
// [row, base, digest]; s the last attempt that may have applied, [row,
// version, digest, flags] with flag 1 delivered and 2 the first such
// attempt at its version. About 80 bytes a field and 60 a row.
type checkpointJSON struct {
	Format    int                                   `json:"format"`
	Delivered uint64                                `json:"delivered,omitempty"`
	Rows      []json.RawMessage                     `json:"rows"`
	Fields    map[string]map[string]json.RawMessage `json:"fields"`
}

// Flags of an attempt entry.
const (
	flagDelivered = 1
	flagFirst     = 2
)

func (k *knowledge) encode() (json.RawMessage, error) {
	c := checkpointJSON{Format: checkpointFormat, Delivered: k.lastDelivered, Fields: map[string]map[string]json.RawMessage{}}
	index := map[rowKey]int{}
	row := func(key rowKey) (int, error) {
		if i, ok := index[key]; ok {
			return i, nil
		}
		b, err := json.Marshal([]any{key.At, key.ID})
		index[key] = len(c.Rows)
		c.Rows = append(c.Rows, b)
		return index[key], err
	}
	entry := func(key rowKey, v uint64, digest string, flags ...int) (json.RawMessage, error) {
		i, err := row(key)
		if err != nil {
			return nil, err
		}
		e := []any{i, v, digest}
		for _, f := range flags {
			e = append(e, f)
		}
		return json.Marshal(e)
	}
	// Fields in name order, so a checkpoint's rows come out in one order.
	for _, f := range slices.Sorted(maps.Keys(k.fields)) {
		fk := k.fields[f]
		m := map[string]json.RawMessage{}
		if r := fk.Report; r != nil {
			e, err := entry(r.Key, r.Base, r.Digest)
			if err != nil {
				return nil, fmt.Errorf("encode known-state checkpoint: %w", err)
			}
			m["r"] = e
		}
		if s := fk.Sent; s != nil {
			flags := 0
			if s.Delivered {
				flags |= flagDelivered
			}
			if s.First {
				flags |= flagFirst
			}
			e, err := entry(s.Key, s.Version, s.Digest, flags)
			if err != nil {
				return nil, fmt.Errorf("encode known-state checkpoint: %w", err)
			}
			m["s"] = e
		}
		if len(m) > 0 {
			c.Fields[f] = m
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode known-state checkpoint: %w", err)
	}
	return b, nil
}

func decodeKnowledge(b []byte) (*knowledge, error) {
	var c checkpointJSON
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("known-state checkpoint: %w", err)
	}
	if c.Format != checkpointFormat {
		return nil, fmt.Errorf("known-state checkpoint in format %d, this reads %d", c.Format, checkpointFormat)
	}
	rows := make([]rowKey, len(c.Rows))
	for i, raw := range c.Rows {
		if err := elements(raw, &rows[i].At, &rows[i].ID); err != nil {
			return nil, fmt.Errorf("known-state checkpoint row %d: %w", i, err)
		}
	}
	k := &knowledge{fields: map[string]*fieldKnowledge{}, lastDelivered: c.Delivered}
	for f, m := range c.Fields {
		fk := &fieldKnowledge{}
		for name, raw := range m {
			var (
				i, flags int
				v        uint64
				digest   string
			)
			var err error
			switch name {
			case "r":
				err = elements(raw, &i, &v, &digest)
			case "s":
				err = elements(raw, &i, &v, &digest, &flags)
			default:
				err = fmt.Errorf("unknown entry %q", name)
			}
			if err == nil && (i < 0 || i >= len(rows)) {
				err = fmt.Errorf("row %d of %d", i, len(rows))
			}
			if err == nil && (digest == "" || flags&^(flagDelivered|flagFirst) != 0) {
				err = errors.New("no digest, or unknown flags")
			}
			if err != nil {
				return nil, fmt.Errorf("known-state checkpoint, field %s: %w", f, err)
			}
			if name == "r" {
				fk.Report = &report{Base: v, Key: rows[i], Digest: digest}
			} else {
				fk.Sent = &sent{Version: v, Key: rows[i], Digest: digest,
					Delivered: flags&flagDelivered != 0, First: flags&flagFirst != 0}
			}
		}
		if fk.Report != nil || fk.Sent != nil {
			k.fields[f] = fk
		}
	}
	return k, nil
}

// elements decodes a JSON array of exactly len(dst) elements into dst.
func elements(raw json.RawMessage, dst ...any) error {
	var els []json.RawMessage
	if err := json.Unmarshal(raw, &els); err != nil {
		return err
	}
	if len(els) != len(dst) {
		return fmt.Errorf("%d elements, want %d", len(els), len(dst))
	}
	for i, e := range els {
		if err := json.Unmarshal(e, dst[i]); err != nil {
			return fmt.Errorf("element %d: %w", i, err)
		}
	}
	return nil
}
