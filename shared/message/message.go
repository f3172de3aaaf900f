// Package message is the one trigger adapter shared by all five functions.
// It turns a Pub/Sub push request or a CloudEvent
// (google.cloud.pubsub.topic.v1.messagePublished) into a Message that keeps
// what the Functions Framework's own conversion drops (deliveryAttempt,
// orderingKey, subscription), and turns a handler's result into the HTTP
// status push understands as ack or nack.
package message

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/backbone-sync/backbone/shared/logging"
)

// Message is a Pub/Sub message as a handler sees it.
type Message struct {
	Data            []byte
	Attributes      map[string]string
	ID              string
	PublishTime     time.Time
	OrderingKey     string
	DeliveryAttempt int    // 0 when Pub/Sub did not say (no dead-letter policy)
	Subscription    string // as sent: usually projects/P/subscriptions/NAME
}

// SubscriptionName returns the short subscription name.
func (m Message) SubscriptionName() string {
	if i := strings.LastIndex(m.Subscription, "/"); i >= 0 {
		return m.Subscription[i+1:]
	}
	return m.Subscription
}

// Handler handles one message. nil acks; an error nacks, so Pub/Sub
// redelivers. A handler that has dealt with a bad message (error topic,
// audit) returns nil: redelivering it would not help.
type Handler func(ctx context.Context, m Message) error

// MaxRequestBytes bounds what the adapter reads: Pub/Sub messages are at most
// 10 MB, base64 grows that by a third.
const MaxRequestBytes = 14 << 20

// Status codes: push counts only 102/200/201/202/204 as an ack.
const (
	StatusAck         = http.StatusNoContent
	StatusNack        = http.StatusInternalServerError
	StatusUndecodable = http.StatusBadRequest
)

// pushEnvelope is the body of a push request, and the data of a
// messagePublished CloudEvent (which carries the same fields).
type pushEnvelope struct {
	Message         *pushMessage `json:"message"`
	Subscription    string       `json:"subscription"`
	DeliveryAttempt *int         `json:"deliveryAttempt,omitempty"`
}

type pushMessage struct {
	Data           []byte            `json:"data"`
	Attributes     map[string]string `json:"attributes,omitempty"`
	MessageID      string            `json:"messageId"`
	MessageIDSnake string            `json:"message_id,omitempty"`
	PublishTime    string            `json:"publishTime,omitempty"`
	PublishSnake   string            `json:"publish_time,omitempty"`
	OrderingKey    string            `json:"orderingKey,omitempty"`
	OrderingSnake  string            `json:"ordering_key,omitempty"`
}

// cloudEvent is a structured-mode CloudEvent (application/cloudevents+json).
type cloudEvent struct {
	SpecVersion string          `json:"specversion"`
	ID          string          `json:"id"`
	Type        string          `json:"type"`
	Time        string          `json:"time"`
	Data        json.RawMessage `json:"data"`
	DataBase64  []byte          `json:"data_base64"`
}

// ErrUndecodable marks a request that is not a Pub/Sub push nor a
// messagePublished CloudEvent.
var ErrUndecodable = errors.New("not a Pub/Sub push request or messagePublished CloudEvent")

// Decode reads a push request (JSON envelope), a binary-mode CloudEvent
// (ce-* headers) or a structured-mode CloudEvent.
func Decode(r *http.Request) (Message, error) {
	m, err := decode(r)
	if err != nil {
		return m, err
	}
	// Checked after the CloudEvent fallbacks: a CloudEvent may carry the id
	// only in its own id attribute.
	if m.ID == "" {
		return Message{}, fmt.Errorf("%w: message has no messageId", ErrUndecodable)
	}
	return m, nil
}

func decode(r *http.Request) (Message, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxRequestBytes+1))
	if err != nil {
		return Message{}, fmt.Errorf("read request: %w", err)
	}
	if len(body) > MaxRequestBytes {
		return Message{}, fmt.Errorf("%w: body over %d bytes", ErrUndecodable, MaxRequestBytes)
	}
	ct := r.Header.Get("Content-Type")
	switch {
	case r.Header.Get("Ce-Specversion") != "":
		// Binary mode: attributes in headers, the envelope is the body.
		m, err := decodeEnvelope(body)
		if err != nil {
			return m, err
		}
		if m.ID == "" {
			m.ID = r.Header.Get("Ce-Id")
		}
		if m.PublishTime.IsZero() {
			m.PublishTime = parseTime(r.Header.Get("Ce-Time"))
		}
		return m, nil
	case strings.HasPrefix(ct, "application/cloudevents+json"):
		var ce cloudEvent
		if err := json.Unmarshal(body, &ce); err != nil {
			return Message{}, fmt.Errorf("%w: structured CloudEvent: %v", ErrUndecodable, err)
		}
		data := []byte(ce.Data)
		if len(ce.DataBase64) > 0 {
			data = ce.DataBase64
		}
		m, err := decodeEnvelope(data)
		if err != nil {
			return m, err
		}
		if m.ID == "" {
			m.ID = ce.ID
		}
		if m.PublishTime.IsZero() {
			m.PublishTime = parseTime(ce.Time)
		}
		return m, nil
	default:
		return decodeEnvelope(body)
	}
}

func decodeEnvelope(body []byte) (Message, error) {
	var env pushEnvelope
	if err := json.Unmarshal(body, &env); err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrUndecodable, err)
	}
	if env.Message == nil {
		return Message{}, fmt.Errorf("%w: no message field", ErrUndecodable)
	}
	pm := env.Message
	m := Message{
		Data:         pm.Data,
		Attributes:   pm.Attributes,
		ID:           first(pm.MessageID, pm.MessageIDSnake),
		OrderingKey:  first(pm.OrderingKey, pm.OrderingSnake),
		Subscription: env.Subscription,
	}
	if m.Attributes == nil {
		m.Attributes = map[string]string{}
	}
	if env.DeliveryAttempt != nil {
		m.DeliveryAttempt = *env.DeliveryAttempt
	}
	if pt := first(pm.PublishTime, pm.PublishSnake); pt != "" {
		t, err := time.Parse(time.RFC3339Nano, pt)
		if err != nil {
			return Message{}, fmt.Errorf("%w: publishTime %q: %v", ErrUndecodable, pt, err)
		}
		m.PublishTime = t.UTC()
	}
	return m, nil
}

// parseTime reads a CloudEvent time; a missing or bad one is the zero time
// (the publish time is informative, never worth refusing a message for).
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// HTTP adapts h to a push endpoint: decode, run, answer 204 (ack) or 500
// (nack). An undecodable request answers 400 and is logged: it did not come
// from Pub/Sub, or Pub/Sub changed its format, and either way a human looks.
func HTTP(log *slog.Logger, project string, h Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := logging.WithTrace(r.Context(), logging.TraceFromRequest(r, project))
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST a Pub/Sub push request or CloudEvent", http.StatusMethodNotAllowed)
			return
		}
		m, err := Decode(r)
		if err != nil {
			log.ErrorContext(ctx, "undecodable request", "error", err.Error(), "path", r.URL.Path)
			http.Error(w, err.Error(), StatusUndecodable)
			return
		}
		if err := h(ctx, m); err != nil {
			log.WarnContext(ctx, "nack", "message_id", m.ID, "subscription", m.SubscriptionName(),
				"delivery_attempt", m.DeliveryAttempt, "error", err.Error())
			http.Error(w, "nack: "+err.Error(), StatusNack)
			return
		}
		w.WriteHeader(StatusAck)
	}
}

// Acked reports whether a push endpoint's status code acks the message.
func Acked(status int) bool {
	switch status {
	case 102, 200, 201, 202, 204:
		return true
	}
	return false
}

// PushBody renders m as a push request body, the way Pub/Sub push sends it
// (tests, the dev push bridge).
func PushBody(m Message) []byte {
	pm := pushMessage{Data: m.Data, Attributes: m.Attributes, MessageID: m.ID, OrderingKey: m.OrderingKey}
	if !m.PublishTime.IsZero() {
		pm.PublishTime = m.PublishTime.UTC().Format(time.RFC3339Nano)
	}
	env := pushEnvelope{Message: &pm, Subscription: m.Subscription}
	if m.DeliveryAttempt > 0 {
		a := m.DeliveryAttempt
		env.DeliveryAttempt = &a
	}
	b, _ := json.Marshal(env) // only strings, bytes and ints: cannot fail
	return b
}
