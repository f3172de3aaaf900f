// Package failure carries a stage's failure to events.error.{env} (SPEC §6):
// a classified Failure type that engines return, and the Reporter that turns
// one into an error message with the original message kept whole.
package failure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/store"
)

// Failure is a classified failure of one stage. Reason is a stable code
// (snake_case) that operators filter on; Detail is for humans and must never
// contain a secret.
type Failure struct {
	Stage     string
	Retryable bool
	Reason    string
	Detail    string
	// Known context, when there is any.
	EventID, RecordType, RecordID string
	// NotApplied: a delivery target clearly refused before acting (a 4xx,
	// 429, a connection never made), so it did not apply the request. Any
	// other failed attempt may have been applied (SPEC §7).
	NotApplied bool
	// RetryAfter is how long the target asked to wait (429 Retry-After).
	RetryAfter time.Duration
}

func (f *Failure) Error() string {
	kind := "permanent"
	if f.Retryable {
		kind = "retryable"
	}
	return fmt.Sprintf("%s %s failure %s: %s", f.Stage, kind, f.Reason, f.Detail)
}

// Permanent builds a non-retryable failure.
func Permanent(stage, reason, detail string) *Failure {
	return &Failure{Stage: stage, Reason: reason, Detail: detail}
}

// Retryable builds a retryable failure.
func Retryable(stage, reason, detail string) *Failure {
	return &Failure{Stage: stage, Retryable: true, Reason: reason, Detail: detail}
}

// As extracts a *Failure from err.
func As(err error) (*Failure, bool) {
	var f *Failure
	ok := errors.As(err, &f)
	return f, ok
}

// Original captures m whole for an error message.
func Original(m message.Message) event.Original {
	o := event.Original{
		Data:            m.Data,
		Attributes:      m.Attributes,
		MessageID:       m.ID,
		Subscription:    m.Subscription,
		OrderingKey:     m.OrderingKey,
		DeliveryAttempt: m.DeliveryAttempt,
	}
	if !m.PublishTime.IsZero() {
		t := event.NewTime(m.PublishTime)
		o.PublishTime = &t
	}
	return o
}

// Message builds the error message for f about m.
func Message(f *Failure, m message.Message) event.Error {
	return event.Error{
		Stage:      f.Stage,
		Retryable:  f.Retryable,
		Reason:     f.Reason,
		Detail:     store.Truncate(f.Detail, store.MaxDetailBytes), // bounded whatever the input
		Original:   Original(m),
		EventID:    f.EventID,
		RecordType: f.RecordType,
		RecordID:   f.RecordID,
	}
}

// Reporter publishes error messages to the environment's error topic.
type Reporter struct {
	Pub   publish.Publisher
	Topic string // events.error.{env}
}

// NewReporter reports to env's error topic through pub.
func NewReporter(env config.Env, pub publish.Publisher) *Reporter {
	return &Reporter{Pub: pub, Topic: env.Names().ErrorTopic}
}

// Attributes of an error message, beside `env`.
const (
	AttrStage     = "stage"
	AttrReason    = "reason"
	AttrRetryable = "retryable"
)

// Report publishes e to the error topic. The ordering key is the record's
// when known (so retries of one record stay in order), else the original's.
// An error here means the failure could not be parked: the caller must nack
// so that Pub/Sub redelivers the original.
func (r *Reporter) Report(ctx context.Context, e event.Error) (string, error) {
	data, err := event.Marshal(e)
	if err != nil {
		return "", fmt.Errorf("encode error message: %w", err)
	}
	key := e.Original.OrderingKey
	if e.RecordType != "" && e.RecordID != "" {
		key = publish.OrderingKey(e.RecordType, e.RecordID)
	}
	attrs := map[string]string{AttrStage: e.Stage, AttrReason: e.Reason, AttrRetryable: fmt.Sprint(e.Retryable)}
	if e.EventID != "" {
		attrs[event.AttrEventID] = e.EventID
	}
	if e.RecordType != "" {
		attrs[event.AttrRecordType] = e.RecordType
	}
	id, err := r.Pub.Publish(ctx, r.Topic, publish.Message{Data: data, Attributes: attrs, OrderingKey: key})
	if err != nil {
		return "", fmt.Errorf("report %s failure %s: %w", e.Stage, e.Reason, err)
	}
	return id, nil
}

// Decode reads an error message.
func Decode(data []byte) (event.Error, error) {
	var e event.Error
	if err := json.Unmarshal(data, &e); err != nil {
		return e, fmt.Errorf("decode error message: %w", err)
	}
	if e.Stage == "" || e.Reason == "" {
		return e, errors.New("decode error message: stage and reason are required")
	}
	return e, nil
}

// ToMessage rebuilds the original message from an error message, so a stage
// can be re-run on exactly what it saw first.
func ToMessage(o event.Original) message.Message {
	m := message.Message{
		Data:            o.Data,
		Attributes:      o.Attributes,
		ID:              o.MessageID,
		Subscription:    o.Subscription,
		OrderingKey:     o.OrderingKey,
		DeliveryAttempt: o.DeliveryAttempt,
	}
	if m.Attributes == nil {
		m.Attributes = map[string]string{}
	}
	if o.PublishTime != nil {
		m.PublishTime = o.PublishTime.Time
	}
	return m
}
