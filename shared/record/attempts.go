package record

import "github.com/backbone-sync/backbone/shared/store"

// Attempt is one delivery attempt to a system, read from its `sending`
// audit row and, once written, its outcome row (SPEC §5 echo rule, §7
// known state both read it).
type Attempt struct {
	Pos     int // index of the sending row in the history: the order sent
	Version uint64
	Fields  map[string]string // field → digest of the value sent
	// Outcome is delivered, failed, refused, or "" while no outcome row
	// exists (in flight, or its process died).
	Outcome string
}

// MayHaveApplied: a success, or an attempt whose outcome is in doubt.
func (a *Attempt) MayHaveApplied() bool {
	return a.Outcome == store.OutcomeDelivered || a.Outcome == store.OutcomeFailed || a.Outcome == ""
}

// Attempts lists the delivery attempts in h (one system's history,
// store.Reader.SystemHistory, in the order written), in the order sent.
func Attempts(h []store.Audit) []*Attempt {
	var out []*Attempt
	byID := map[string]*Attempt{}
	for i, a := range h {
		if a.Stage == store.StageMerge || a.Fields == nil {
			continue
		}
		if a.Outcome == store.OutcomeSending {
			at := &Attempt{Pos: i, Version: a.Version, Fields: a.Fields.Fields}
			out = append(out, at)
			byID[a.ID] = at
			continue
		}
		if at := byID[a.Fields.Attempt]; at != nil && at.Outcome == "" {
			at.Outcome = a.Outcome
		}
	}
	return out
}
