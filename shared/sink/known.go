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

// knownValue is T's known value of one field.
type knownValue struct {
	digest  string // record.Digest of the value
	unknown bool
}

// report is one of T's reports of a field.
type report struct {
	base   uint64
	pos    int // position in the history: processing order
	digest string
}

// knowledge is what the backbone knows of one target's copy of a record.
type knowledge struct {
	reports  map[string]report // latest report per field
	attempts []*record.Attempt // in the order sent
	// lastDelivered is the newest version of a successful attempt (the
	// since_version of the next SuiteX delivery).
	lastDelivered uint64
}

// learn reads one target's history (store.Reader.SystemHistory, in the
// order written).
func learn(h []store.Audit) *knowledge {
	k := &knowledge{reports: map[string]report{}, attempts: record.Attempts(h)}
	for i, a := range h {
		if a.Fields == nil || a.Stage != store.StageMerge {
			continue
		}
		for f, d := range a.Fields.Fields {
			r, ok := k.reports[f]
			if !ok || a.Fields.Base > r.base || (a.Fields.Base == r.base && i > r.pos) {
				k.reports[f] = report{base: a.Fields.Base, pos: i, digest: d}
			}
		}
	}
	for _, at := range k.attempts {
		if at.Outcome == store.OutcomeDelivered {
			k.lastDelivered = max(k.lastDelivered, at.Version)
		}
	}
	return k
}

// value is T's known value of f; ok is false when T has no value of f the
// backbone knows of.
func (k *knowledge) value(f string) (knownValue, bool) {
	var last *record.Attempt
	for i := len(k.attempts) - 1; i >= 0; i-- {
		a := k.attempts[i]
		if _, carried := a.Fields[f]; carried && a.MayHaveApplied() {
			last = a
			break
		}
	}
	r, reported := k.reports[f]
	if last == nil {
		if !reported {
			return knownValue{}, false
		}
		return knownValue{digest: r.digest}, true
	}
	fromAttempt := knownValue{digest: last.Fields[f], unknown: last.Outcome != store.OutcomeDelivered}
	if !reported {
		return fromAttempt, true
	}
	switch {
	case last.Version > r.base:
		return fromAttempt, true
	case last.Version < r.base:
		return knownValue{digest: r.digest}, true
	case last.Pos > r.pos:
		// Sent after T's report was processed: T made the report before.
		return fromAttempt, true
	}
	// Sent before the report was processed, at the report's base: earlier
	// only if it is the first attempt at that version that may have
	// reached T.
	for _, a := range k.attempts {
		if a.Version == r.base && a.MayHaveApplied() {
			if a == last {
				return knownValue{digest: r.digest}, true
			}
			break
		}
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
