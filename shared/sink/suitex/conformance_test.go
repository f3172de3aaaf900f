package suitex_test

import (
	"testing"

	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/sink/targettest"
)

// The SuiteX target passes the targets' conformance suite.
func TestConformance(t *testing.T) {
	targettest.Run(t, func(t *testing.T, baseURL string) sink.Target {
		return newTarget(t, baseURL, targettest.Timeout)
	})
}
