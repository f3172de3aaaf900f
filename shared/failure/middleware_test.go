package failure_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
)

// sender records reports and fails when told to.
type sender struct {
	reports []event.Error
	err     error
}

func (s *sender) Report(_ context.Context, e event.Error) (string, error) {
	if s.err != nil {
		return "", s.err
	}
	s.reports = append(s.reports, e)
	return "error-1", nil
}

// Park's contract (SPEC §6): a failure is reported, then acked; nacked when
// the report fails or the store is down; success and unclassified errors
// pass through.
func TestPark(t *testing.T) {
	t.Parallel()
	unclassified := errors.New("boom")
	for _, c := range []struct {
		name      string
		next      error
		reportErr error
		wantNack  bool
		reported  int
	}{
		{"success", nil, nil, false, 0},
		{"permanent failure is reported and acked", failure.Permanent("merge", "invalid_json", "bad"), nil, false, 1},
		{"retryable failure is reported and acked", failure.Retryable("suitex", "http_503", "down"), nil, false, 1},
		{"report fails: nack", failure.Retryable("suitex", "http_503", "down"), errors.New("pubsub down"), true, 0},
		{"store unavailable: nack, not reported", failure.Retryable("merge", failure.ReasonStoreUnavailable, "dial"), nil, true, 0},
		{"unclassified error: nack unchanged", unclassified, nil, true, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := &sender{err: c.reportErr}
			h := failure.Park(s, nil)(func(context.Context, message.Message) error { return c.next })
			err := h(context.Background(), message.Message{ID: "m-1", Data: []byte(`{}`)})
			if (err != nil) != c.wantNack {
				t.Fatalf("err = %v, want nack %v", err, c.wantNack)
			}
			if len(s.reports) != c.reported {
				t.Fatalf("%d reports, want %d", len(s.reports), c.reported)
			}
			if c.next == unclassified && !errors.Is(err, unclassified) {
				t.Errorf("unclassified error changed: %v", err)
			}
			if c.reported == 1 {
				f, _ := failure.As(c.next)
				if r := s.reports[0]; r.Stage != f.Stage || r.Reason != f.Reason || r.Retryable != f.Retryable || r.Original.MessageID != "m-1" {
					t.Errorf("report %+v", r)
				}
			}
		})
	}
}

// Recover turns a panic into a retryable internal_error of the stage, with
// the secrets redacted; without a panic it changes nothing.
func TestRecover(t *testing.T) {
	t.Parallel()
	panicky := func(context.Context, message.Message) error { panic("token s3cret leaked") }
	redact := func(s string) string { return strings.ReplaceAll(s, "s3cret", "[redacted]") }
	err := failure.RecoverRedacted("netsuite", nil, redact)(panicky)(context.Background(), message.Message{ID: "m-1"})
	f, ok := failure.As(err)
	if !ok || f.Stage != "netsuite" || f.Reason != failure.ReasonInternal || !f.Retryable ||
		strings.Contains(f.Detail, "s3cret") || !strings.Contains(f.Detail, "[redacted]") {
		t.Fatalf("recovered as %+v (%v)", f, err)
	}
	want := errors.New("plain")
	if err := failure.Recover("merge", nil)(func(context.Context, message.Message) error { return want })(context.Background(), message.Message{}); err != want {
		t.Errorf("no panic: err = %v, want it unchanged", err)
	}
	// Park around Recover: the panic is parked, not lost.
	s := &sender{}
	if err := failure.Park(s, nil)(failure.Recover("merge", nil)(panicky))(context.Background(), message.Message{ID: "m-2"}); err != nil || len(s.reports) != 1 {
		t.Errorf("parked panic: err %v, %d reports", err, len(s.reports))
	}
}
