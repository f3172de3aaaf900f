// Package message is the one trigger adapter shared by all five functions.
// It turns a Pub/Sub push request or a CloudEvent
// (google.cloud.pubsub.topic.v1.messagePublished) into a Message that keeps
// what the Functions Framework's own conversion drops (deliveryAttempt,
// orderingKey, subscription), and turns a handler's result into the HTTP
// status push understands as ack or nack.
package message

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2"

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
	// Invalid is set when the request is a CloudEvent the backbone must not
	// act on (another type, missing parts): bad input like any other (SPEC
	// §3), to be audited, parked and acked, never a 4xx that Pub/Sub would
	// redeliver forever. ID is then the CloudEvent's id (or a digest of the
	// body when it has none) and Data is empty, so a handler that does not
	// look at Invalid refuses the message as undecodable instead of acting
	// on a foreign event's data; Invalid.Data keeps what the request carried.
	Invalid *Invalid
}

// Invalid says why a request decoded only as a bad message.
type Invalid struct {
	Reason string // stable snake_case code
	Detail string
	Data   []byte // the event's data, or the whole body when there is none
}

// Reasons of an Invalid message (stable: operators filter on them).
const (
	ReasonUnexpectedEventType = "unexpected_event_type"
	ReasonInvalidCloudEvent   = "invalid_cloudevent"
)

// TypeMessagePublished is the one CloudEvent type the backbone accepts.
const TypeMessagePublished = "google.cloud.pubsub.topic.v1.messagePublished"

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
	if r.Header.Get("Ce-Specversion") != "" || strings.HasPrefix(strings.ToLower(r.Header.Get("Content-Type")), "application/cloudevents") {
		return decodeCloudEvent(r, body), nil
	}
	return decodeEnvelope(body)
}

// decodeCloudEvent reads a binary-mode (ce-* headers, data in the body) or
// structured-mode (application/cloudevents+json) CloudEvent with the
// CloudEvents SDK. A messagePublished event carries a push envelope as its
// data; any other type, or an event that is not valid, comes back as an
// Invalid message so the handler parks it: it is a CloudEvent, so it came
// through the Pub/Sub trigger, and a 4xx would be redelivered forever.
func decodeCloudEvent(r *http.Request, body []byte) Message {
	req := r.Clone(r.Context())
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	// The SDK's root package (named v2) re-exports its HTTP binding.
	ev, err := v2.NewEventFromHTTPRequest(req)
	if err == nil {
		err = ev.Validate()
	}
	if err != nil {
		id := r.Header.Get("Ce-Id")
		if ev != nil && ev.ID() != "" {
			id = ev.ID()
		}
		return invalidMessage(id, body, ReasonInvalidCloudEvent, "not a valid CloudEvent: "+err.Error())
	}
	data := ev.Data()
	if len(data) == 0 {
		data = body // park something an operator can read
	}
	if ev.Type() != TypeMessagePublished {
		return invalidMessage(ev.ID(), data, ReasonUnexpectedEventType,
			fmt.Sprintf("CloudEvent type %q from %q: only %s is accepted", clip(ev.Type()), clip(ev.Source()), TypeMessagePublished))
	}
	m, err := decodeEnvelope(ev.Data())
	if err != nil {
		return invalidMessage(ev.ID(), data, ReasonInvalidCloudEvent, "messagePublished CloudEvent without a Pub/Sub message: "+err.Error())
	}
	if m.ID == "" {
		m.ID = ev.ID()
	}
	if m.PublishTime.IsZero() && !ev.Time().IsZero() {
		m.PublishTime = ev.Time().UTC()
	}
	return m
}

// invalidMessage is a bad CloudEvent as a message to park. Without an id,
// the body's digest stands in, so every redelivery gets the same one.
func invalidMessage(id string, data []byte, reason, detail string) Message {
	if id == "" {
		sum := sha256.Sum256(data)
		id = "cloudevent-" + hex.EncodeToString(sum[:8])
	}
	if data == nil {
		data = []byte{}
	}
	return Message{Data: []byte{}, Attributes: map[string]string{}, ID: clip(id),
		Invalid: &Invalid{Reason: reason, Detail: clip(detail), Data: data}}
}

// clip bounds a text taken from a request for ids and details.
func clip(s string) string {
	const max = 512
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
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
