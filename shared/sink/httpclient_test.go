package sink_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/backbone-sync/backbone/shared/sink"
)

func TestDoBoundsTheBodyAndReusesConnections(t *testing.T) {
	t.Parallel()
	var conns atomic.Int32
	big := strings.Repeat("x", 100<<10) // over MaxResponseBytes, under the drain limit
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		_, _ = w.Write([]byte(big))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c := sink.NewHTTPClient(5 * time.Second)
	for range 10 {
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		resp, err := sink.Do(c, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != 500 || len(resp.Body) != sink.MaxResponseBytes || resp.OK() {
			t.Fatalf("status %d, body %d bytes", resp.Status, len(resp.Body))
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 10 sequential requests, want 1 (reuse)", n)
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			hits.Add(1)
		}
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/events", strings.NewReader("{}"))
	resp, err := sink.Do(sink.NewHTTPClient(time.Second), req)
	if err != nil || resp.Status != http.StatusFound || hits.Load() != 0 {
		t.Fatalf("status %v err %v hits %d", resp, err, hits.Load())
	}
	f := sink.StatusFailure("suitex", resp.Status, "", false, "x")
	if f.Retryable || f.Reason != "http_302" {
		t.Fatalf("302 classified %+v", f)
	}
}

func TestTransportReasons(t *testing.T) {
	t.Parallel()
	// Connection refused: a port that was just closed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	_, err = sink.Do(sink.NewHTTPClient(time.Second), req)
	if f := sink.TransportFailure("netsuite", "GET /", err); f.Reason != sink.ReasonConnectionRefused || !f.Retryable {
		t.Fatalf("refused: %+v (%v)", f, err)
	}

	// Timeout: a server slower than the client.
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	req, _ = http.NewRequest(http.MethodGet, srv.URL, nil)
	_, err = sink.Do(sink.NewHTTPClient(100*time.Millisecond), req)
	if f := sink.TransportFailure("netsuite", "GET /", err); f.Reason != sink.ReasonTimeout || !f.Retryable {
		t.Fatalf("timeout: %+v (%v)", f, err)
	}
}

func TestStatusClassification(t *testing.T) {
	t.Parallel()
	for status, retry := range map[int]bool{400: false, 401: false, 403: false, 404: false, 405: false, 409: false,
		422: false, 408: true, 429: true, 500: true, 502: true, 503: true, 504: true} {
		if got := sink.RetryableStatus(status); got != retry {
			t.Errorf("RetryableStatus(%d) = %v", status, got)
		}
		f := sink.StatusFailure("suitex", status, "", false, "d")
		if f.Retryable != retry || f.Reason != sink.StatusReason(status) {
			t.Errorf("StatusFailure(%d) = %+v", status, f)
		}
	}
	if f := sink.StatusFailure("netsuite", 400, "CONCURRENCY_LIMIT_EXCEEDED", true, "d"); !f.Retryable || f.Reason != "CONCURRENCY_LIMIT_EXCEEDED" {
		t.Errorf("forced retry: %+v", f)
	}
}

func TestSnippetIsBounded(t *testing.T) {
	t.Parallel()
	body := []byte(strings.Repeat("é", 3000)) // 6000 bytes, 2-byte runes
	s := sink.Snippet(body)
	if len(s) > sink.MaxDetailBody+32 || !utf8.ValidString(s) || !strings.Contains(s, "more bytes") {
		t.Fatalf("snippet %d bytes, valid %v: %q", len(s), utf8.ValidString(s), s[len(s)-40:])
	}
	if got := sink.Snippet([]byte("  short \n")); got != "short" {
		t.Fatalf("short snippet %q", got)
	}
}
