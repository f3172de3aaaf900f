package sink

import (
	"github.com/backbone-sync/backbone/shared/record"
	"github.com/backbone-sync/backbone/shared/store"
)

// Known state (SPEC §7). For record R, target T and field f, T's known
// value is the value of the latest of:
//
//   - T's own reports of f: every raw event from T that carried f and was
//     not rejected (accepted or dropped: T holds that value locally all the
//     same), read from the merge's audit rows (source = T);
//   - the delivery attempts to T that carried f: a success sets the known
//     value to what it sent; an attempt that did not succeed and was not a
//     clear refusal (timeout, 5xx, connection lost, or no outcome row at all
//     because its process died) sets it to unknown.
//
// Order. A report on base_version b was made after T applied a delivery at
// version b and before it saw b+1. Between the latest report R (highest
// base, then processing order) and the last attempt A that carried f:
//   - A at a version > b is later; at a version < b, earlier;
//   - A at version b sent after R was processed is later;
//   - A at version b sent before R was processed is earlier only if it is
//     the first attempt at b that may have reached T (T's report was made
//     after some delivery at b, and that is the only candidate); otherwise
//     the order is in doubt and the value is unknown.
//
// Unknown differs from every value, so the field is sent again: sending the
// store's value again is always safe; trusting a guess is not. A field the
// target has neither reported nor been sent is missing too.
//
// So per field only two rows of the whole history matter: the latest
// report and the last attempt that may have applied (with whether it was
// the first such attempt at its version). That summary of a set of rows
// combines with the summary of any other set, as long as an attempt's
// sending and outcome rows and all attempts at one version fall in the same
// set; splitting a history by version does that. A checkpoint (checkpoint.go)
// is the summary of the rows below a version, so a delivery reads the rows
// since the newest checkpoint, not the record's whole history.

// knownValue is T's known value of one field.
type knownValue struct {
	digest  string // record.Digest of the value
	unknown bool
}

// rowKey orders rows as the history does: processing order, created_at
// then id (both as the database compares them).
type rowKey struct {
	At int64 // created_at, microseconds since the epoch
	ID string
}

func keyOf(a store.Audit) rowKey { return rowKey{At: a.CreatedAt.UnixMicro(), ID: a.ID} }

func (k rowKey) after(o rowKey) bool { return k.At > o.At || (k.At == o.At && k.ID > o.ID) }

// report is T's latest report of a field.
type report struct {
	Base   uint64
	Key    rowKey
	Digest string
}

// sent is the last attempt that carried a field and may have applied.
type sent struct {
	Version   uint64
	Key       rowKey // of its sending row: the order sent
	Digest    string
	Delivered bool
	// First: no earlier attempt at Version may have applied.
	First bool
}

// fieldKnowledge is what decides T's known value of one field.
type fieldKnowledge struct {
	Report *report
	Sent   *sent
}

// knowledge is what the backbone knows of one target's copy of a record.
type knowledge struct {
	fields map[string]*fieldKnowledge
	// lastDelivered is the newest version of a successful attempt (the
	// since_version of the next SuiteX delivery).
	lastDelivered uint64
}

// learn reads rows of one target's history (store.Reader.SystemHistory, in
// the order written).
func learn(h []store.Audit) *knowledge {
	k := &knowledge{fields: map[string]*fieldKnowledge{}}
	for _, a := range h {
		if a.Fields == nil || a.Stage != store.StageMerge {
			continue
		}
		for f, d := range a.Fields.Fields {
			k.addReport(f, report{Base: a.Fields.Base, Key: keyOf(a), Digest: d})
		}
	}
	first := map[uint64]*record.Attempt{}
	for _, at := range record.Attempts(h) {
		if at.Outcome == store.OutcomeDelivered {
			k.lastDelivered = max(k.lastDelivered, at.Version)
		}
		if !at.MayHaveApplied() {
			continue
		}
		if first[at.Version] == nil {
			first[at.Version] = at
		}
		key := keyOf(h[at.Pos])
		for f, d := range at.Fields {
			k.addSent(f, sent{Version: at.Version, Key: key, Digest: d,
				Delivered: at.Outcome == store.OutcomeDelivered, First: first[at.Version] == at})
		}
	}
	return k
}

func (k *knowledge) field(f string) *fieldKnowledge {
	fk := k.fields[f]
	if fk == nil {
		fk = &fieldKnowledge{}
		k.fields[f] = fk
	}
	return fk
}

// addReport keeps the latest report: highest base, then processing order.
func (k *knowledge) addReport(f string, r report) {
	fk := k.field(f)
	if cur := fk.Report; cur == nil || r.Base > cur.Base || (r.Base == cur.Base && r.Key.after(cur.Key)) {
		fk.Report = &r
	}
}

// addSent keeps the attempt sent last.
func (k *knowledge) addSent(f string, s sent) {
	fk := k.field(f)
	if cur := fk.Sent; cur == nil || s.Key.after(cur.Key) {
		fk.Sent = &s
	}
}

// merge adds what o knows (the summary of other rows) to k.
func (k *knowledge) merge(o *knowledge) {
	for f, fk := range o.fields {
		if fk.Report != nil {
			k.addReport(f, *fk.Report)
		}
		if fk.Sent != nil {
			k.addSent(f, *fk.Sent)
		}
	}
	k.lastDelivered = max(k.lastDelivered, o.lastDelivered)
}

// value is T's known value of f; ok is false when T has no value of f the
// backbone knows of.
func (k *knowledge) value(f string) (knownValue, bool) {
	fk := k.fields[f]
	if fk == nil || (fk.Report == nil && fk.Sent == nil) {
		return knownValue{}, false
	}
	last, r := fk.Sent, fk.Report
	if last == nil {
		return knownValue{digest: r.Digest}, true
	}
	fromAttempt := knownValue{digest: last.Digest, unknown: !last.Delivered}
	if r == nil {
		return fromAttempt, true
	}
	switch {
	case last.Version > r.Base:
		return fromAttempt, true
	case last.Version < r.Base:
		return knownValue{digest: r.Digest}, true
	case last.Key.after(r.Key):
		// Sent after T's report was processed: T made the report before.
		return fromAttempt, true
	case last.First:
		// Sent before the report was processed, at the report's base, and
		// the first attempt at that version that may have reached T: the
		// report came after it.
		return knownValue{digest: r.Digest}, true
	}
	return knownValue{unknown: true}, true
}

// missing returns the fields of st whose value differs from T's known
// value: what a delivery must send.
func (k *knowledge) missing(st *record.State) []string {
	var out []string
	for f, fs := range st.Fields {
		kv, ok := k.value(f)
		if !ok || kv.unknown || kv.digest != record.Digest(fs.Value) {
			out = append(out, f)
		}
	}
	return out
}
