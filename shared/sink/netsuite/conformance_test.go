package netsuite_test

import (
	"testing"

	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/sink/targettest"
)

// The NetSuite target passes the targets' conformance suite.
func TestConformance(t *testing.T) {
	targettest.Run(t, func(t *testing.T, baseURL string) sink.Target {
		cfg := tbaConfig(baseURL)
		cfg.Timeout = targettest.Timeout
		return newTarget(t, cfg)
	})
}
