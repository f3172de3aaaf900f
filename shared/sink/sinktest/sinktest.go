// Package sinktest only forwards to the target fakes (internal/fake/...)
// and to targettest.StoreMerged, for the tests under functions/, which are
// owned elsewhere this round.
//
// Deprecated: import netsuitefake, suitexfake and targettest directly;
// delete this package when nothing imports it.
package sinktest

import (
	"testing"

	"github.com/backbone-sync/backbone/internal/fake/netsuitefake"
	"github.com/backbone-sync/backbone/internal/fake/suitexfake"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/sink/targettest"
	"github.com/backbone-sync/backbone/shared/store"
)

// NetSuite is the NetSuite fake.
type NetSuite = netsuitefake.Server

// SuiteX is the SuiteX fake.
type SuiteX = suitexfake.Server

// NetSuiteError renders NetSuite's REST error document.
func NetSuiteError(status int, code, detail string) string {
	return netsuitefake.Error(status, code, detail)
}

// StoreMerged stores ev as the merge engine stores an accepted event.
func StoreMerged(t testing.TB, st store.Writer, ev event.Merged) {
	t.Helper()
	targettest.StoreMerged(t, st, ev)
}
