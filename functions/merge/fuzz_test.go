package mergefunc_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
)

// FuzzMergeHandler: whatever push body (and CloudEvent mode) reaches the
// Merge function, it answers an ack (bad input is parked, never redelivered
// forever) or, for a body that is no Pub/Sub request at all, 400, and it
// never panics. The seed corpus is the hostile table, so it runs in every
// `go test`; `-fuzz FuzzMergeHandler` explores further.
func FuzzMergeHandler(f *testing.F) {
	h := newHarness(f)
	for _, c := range hostileCases() {
		if c.req != nil {
			r := c.req(h)
			body, _ := io.ReadAll(r.Body)
			mode := uint8(2)
			if r.Header.Get("Ce-Specversion") != "" {
				mode = 1
			}
			f.Add(body, mode)
			continue
		}
		m := h.msg([]byte(c.data))
		if c.attrs != nil {
			m.Attributes = c.attrs
		}
		f.Add(message.PushBody(m), uint8(0))
	}
	f.Add(message.PushBody(h.msg([]byte(good))), uint8(0))
	// A panic is acked and parked as retryable internal_error: look for one
	// on the error topic once the run is over.
	f.Cleanup(func() {
		for _, r := range h.ps.Drain(f, h.names.RetrySub) {
			if e, err := failure.Decode(r.Data); err == nil && e.Reason == failure.ReasonInternal {
				f.Errorf("the handler panicked on %q: %s", e.Original.Data, e.Detail)
			}
		}
	})
	f.Fuzz(func(t *testing.T, body []byte, mode uint8) {
		r, err := http.NewRequest(http.MethodPost, h.url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		switch mode % 3 {
		case 1:
			r.Header.Set("Ce-Specversion", "1.0")
			r.Header.Set("Ce-Type", message.TypeMessagePublished)
			r.Header.Set("Ce-Source", "//pubsub.googleapis.com/projects/p/topics/t")
			r.Header.Set("Ce-Id", "ce-fuzz")
		case 2:
			r.Header.Set("Content-Type", "application/cloudevents+json")
		default:
			r.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatalf("push: %v", err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !message.Acked(resp.StatusCode) && resp.StatusCode != message.StatusUndecodable {
			t.Fatalf("status %d (%s): want an ack, or 400 for a body that is no Pub/Sub request", resp.StatusCode, out)
		}
		if bytes.Contains(out, []byte(failure.ReasonInternal)) {
			t.Fatalf("the handler panicked: %s", out)
		}
	})
}
