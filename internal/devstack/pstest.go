package devstack

import (
	"fmt"
	"net"
	"strconv"

	"cloud.google.com/go/pubsub/v2/pstest"
)

// StartPstest starts the embedded emulator on 127.0.0.1:port. pstest
// panics when it cannot listen, so the port is checked first and a panic
// that still gets through (a race for the port) becomes an error.
func StartPstest(port int) (srv *pstest.Server, err error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if port != 0 {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("the Pub/Sub emulator cannot listen on %s: %w (pass another --pubsub-port, or 0 for any)", addr, err)
		}
		_ = ln.Close()
	}
	defer func() {
		if r := recover(); r != nil {
			srv, err = nil, fmt.Errorf("the Pub/Sub emulator cannot listen on %s: %v (pass another --pubsub-port, or 0 for any)", addr, r)
		}
	}()
	return pstest.NewServerWithAddress(addr), nil
}
