package pubsubtest

// Apart from pubsubtest.go, which imports the client library's package
// pubsub: this file imports the backbone's driver of the same name, and no
// file imports both.

import (
	"testing"

	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/publish/pubsub"
)

// Publisher returns a guarded publisher, the backbone's pubsub/v2 driver,
// for the server's environment, closed when the test ends.
func (s *Server) Publisher(t testing.TB) publish.Publisher {
	t.Helper()
	p := pubsub.FromClient(s.Client)
	t.Cleanup(func() { _ = p.Close() })
	return publish.Guard(s.Env, p)
}
