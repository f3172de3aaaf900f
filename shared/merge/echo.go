package merge

import (
	"maps"
	"slices"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/record"
	"github.com/backbone-sync/backbone/shared/store"
)

// mayEcho says, from the state alone, whether any incoming field can be an
// echo: a delivery to source X carries f only once another source changed
// f (or, rarely, to resend a value whose delivery is in doubt — an echo of
// that is X's own value, and accepting it as a change converges all the
// same). A source editing fields nobody else touched costs no query.
func mayEcho(raw event.Raw, st *record.State) bool {
	for f := range raw.Changes {
		fs := st.Fields[f]
		if fs == nil {
			continue
		}
		for s := range fs.BySource {
			if s != raw.Source {
				return true
			}
		}
	}
	return false
}

// findEchoes applies the echo rule of SPEC §5 step 1 to every field of raw
// (from source X at base b), given X's history h: f = v is an echo when
// (a) some attempt A to X, of any version, sent f = v; (b) X has reported
// no other value of f on a base ≥ A's version since A was sent; and (c) no
// later attempt that X had seen (version ≤ b, not clearly refused) sent X
// another value of f.
func findEchoes(h []store.Audit, raw event.Raw) map[string]event.Conflict {
	atts := record.Attempts(h)
	if len(atts) == 0 {
		return nil
	}
	out := map[string]event.Conflict{}
	for _, f := range slices.Sorted(maps.Keys(raw.Changes)) {
		v := record.Digest(raw.Changes[f])
		for ai, a := range atts {
			if got, ok := a.Fields[f]; !ok || got != v {
				continue
			}
			if reportedOther(h[a.Pos+1:], f, v, a.Version) {
				continue
			}
			overridden := false
			for _, b := range atts[ai+1:] {
				if got, ok := b.Fields[f]; ok && got != v && b.Version <= raw.BaseVersion && b.Outcome != store.OutcomeRefused {
					overridden = true
					break
				}
			}
			if overridden {
				continue
			}
			out[f] = event.Conflict{Field: f, Resolution: ResolutionIncomingDropped, Rule: RuleEcho,
				OtherSource: "backbone", OtherVersion: a.Version}
			break
		}
	}
	return out
}

// reportedOther says whether rows hold a report of the system's own of f
// with a value other than v, on a base ≥ minBase.
func reportedOther(rows []store.Audit, f, v string, minBase uint64) bool {
	for _, r := range rows {
		if r.Stage != store.StageMerge || r.Fields == nil {
			continue
		}
		if got, ok := r.Fields.Fields[f]; ok && got != v && r.Fields.Base >= minBase {
			return true
		}
	}
	return false
}

// reEdit says whether raw, whose fingerprint matches the accepted event
// matched, is a genuine re-edit (SPEC §5 step 1): the same source has
// reported another value of one of its fields since matched.
func reEdit(h []store.Audit, matched store.Event, raw event.Raw) bool {
	from := -1
	for i, a := range h {
		if a.Stage == store.StageMerge && a.EventID == matched.ID &&
			(a.Outcome == store.OutcomeAccepted || a.Outcome == store.OutcomeMerged) {
			from = i
			break
		}
	}
	if from < 0 {
		return false
	}
	for _, r := range h[from+1:] {
		if r.Stage != store.StageMerge || r.Fields == nil {
			continue
		}
		for f, v := range raw.Changes {
			if got, ok := r.Fields.Fields[f]; ok && got != record.Digest(v) {
				return true
			}
		}
	}
	return false
}
