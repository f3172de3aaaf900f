package sink

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// DefaultTimeout bounds one request to a target when the configuration says
// nothing.
const DefaultTimeout = 30 * time.Second

// MaxResponseBytes is how much of a response body is read. Error bodies are
// small JSON documents; a target that streams megabytes back must not be
// able to exhaust the sink's memory.
const MaxResponseBytes = 64 << 10

// drainBytes is how much of an unread body tail is discarded so the
// connection can go back to the pool; past it, closing is cheaper.
const drainBytes = 256 << 10

// NewHTTPClient returns the client a target uses: every phase bounded by
// timeout (dial and TLS by at most 10s), a keep-alive pool sized for a
// Cloud Run instance's concurrency (the default 2 idle connections per host
// would make most concurrent deliveries open a new TLS connection), and no
// redirects: a redirected PUT or POST changes method or loses its signature,
// so a 3xx is reported instead of followed.
func NewHTTPClient(timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	connect := min(timeout, 10*time.Second)
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   connect,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Response is a target's answer with its body read up to MaxResponseBytes.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	// BodyErr is set when the body could not be read whole; the status is
	// still what the target decided.
	BodyErr error
}

// OK reports a 2xx status.
func (r *Response) OK() bool { return r.Status >= 200 && r.Status <= 299 }

// Do sends req with c and reads a bounded part of the body. An error means
// no status was received (classify it with TransportFailure).
func Do(c *http.Client, req *http.Request) (*Response, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := &Response{Status: resp.StatusCode, Header: resp.Header}
	out.Body, err = io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes))
	if err != nil {
		out.BodyErr = fmt.Errorf("read response body: %w", err)
		return out, nil
	}
	// Drain a little so the connection is reused; a longer tail is cut off
	// by Close (the transport then drops the connection).
	_, _ = io.CopyN(io.Discard, resp.Body, drainBytes)
	return out, nil
}
