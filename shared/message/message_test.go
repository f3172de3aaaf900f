package message_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/message"
)

const sub = "projects/backbone-test/subscriptions/events.raw.sandbox-merge-sub"

var publishTime = time.Date(2026, 3, 13, 20, 0, 0, 123456789, time.UTC)

// want is the message every decoding test expects.
func want() message.Message {
	return message.Message{
		Data:            []byte(`{"record_type":"customer"}`),
		Attributes:      map[string]string{"env": "sandbox", "source": "netsuite"},
		ID:              "1234567890",
		PublishTime:     publishTime,
		OrderingKey:     "customer:C-1",
		DeliveryAttempt: 3,
		Subscription:    sub,
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// envelope is a push body as Pub/Sub sends it (both spellings of the ids,
// which Pub/Sub fills alike).
var envelope = `{"message":{"data":"` + b64(`{"record_type":"customer"}`) + `","attributes":{"env":"sandbox","source":"netsuite"},` +
	`"messageId":"1234567890","message_id":"1234567890","publishTime":"2026-03-13T20:00:00.123456789Z","publish_time":"2026-03-13T20:00:00.123456789Z",` +
	`"orderingKey":"customer:C-1"},"subscription":"` + sub + `","deliveryAttempt":3}`

func decode(t *testing.T, body string, header http.Header) (message.Message, error) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/Merge", strings.NewReader(body))
	for k, vs := range header {
		for _, v := range vs {
			r.Header.Add(k, v)
		}
	}
	return message.Decode(r)
}

func check(t *testing.T, name string, got message.Message, err error, want message.Message) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if !got.PublishTime.Equal(want.PublishTime) {
		t.Errorf("%s: publish time %v, want %v", name, got.PublishTime, want.PublishTime)
	}
	got.PublishTime, want.PublishTime = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %+v\nwant %+v", name, got, want)
	}
}

func TestDecodePushEnvelope(t *testing.T) {
	t.Parallel()
	m, err := decode(t, envelope, http.Header{"Content-Type": {"application/json"}})
	check(t, "push", m, err, want())
	if m.SubscriptionName() != "events.raw.sandbox-merge-sub" {
		t.Errorf("subscription name %q", m.SubscriptionName())
	}

	// snake_case only, no attributes, no delivery attempt (no dead-letter
	// policy): attributes are an empty map, the attempt 0.
	m, err = decode(t, `{"message":{"data":"`+b64("x")+`","message_id":"9","publish_time":"2026-03-13T20:00:00Z","ordering_key":"k"},"subscription":"s"}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != "9" || m.OrderingKey != "k" || m.Attributes == nil || len(m.Attributes) != 0 || m.DeliveryAttempt != 0 || string(m.Data) != "x" {
		t.Errorf("snake_case envelope decoded as %+v", m)
	}
}

func TestDecodeBinaryCloudEvent(t *testing.T) {
	t.Parallel()
	h := http.Header{
		"Content-Type":   {"application/json"},
		"Ce-Specversion": {"1.0"},
		"Ce-Type":        {"google.cloud.pubsub.topic.v1.messagePublished"},
		"Ce-Source":      {"//pubsub.googleapis.com/projects/backbone-test/topics/events.raw.sandbox"},
		"Ce-Id":          {"1234567890"},
		"Ce-Time":        {"2026-03-13T20:00:00.123456789Z"},
	}
	m, err := decode(t, envelope, h)
	check(t, "binary", m, err, want())

	// The id and time come from the ce-* headers when the body lacks them.
	body := `{"message":{"data":"` + b64(`{"record_type":"customer"}`) + `","attributes":{"env":"sandbox","source":"netsuite"},"orderingKey":"customer:C-1"},"subscription":"` + sub + `","deliveryAttempt":3}`
	m, err = decode(t, body, h)
	check(t, "binary, id from header", m, err, want())
}

func TestDecodeStructuredCloudEvent(t *testing.T) {
	t.Parallel()
	h := http.Header{"Content-Type": {"application/cloudevents+json; charset=utf-8"}}
	ce := `{"specversion":"1.0","type":"google.cloud.pubsub.topic.v1.messagePublished","source":"//pubsub.googleapis.com/x","id":"1234567890","time":"2026-03-13T20:00:00.123456789Z","datacontenttype":"application/json","data":` + envelope + `}`
	m, err := decode(t, ce, h)
	check(t, "structured", m, err, want())

	ce = `{"specversion":"1.0","type":"google.cloud.pubsub.topic.v1.messagePublished","source":"//x","id":"1234567890","time":"2026-03-13T20:00:00.123456789Z","data_base64":"` + b64(envelope) + `"}`
	m, err = decode(t, ce, h)
	check(t, "structured, data_base64", m, err, want())
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"empty":            ``,
		"not json":         `hello`,
		"no message":       `{"subscription":"s"}`,
		"null message":     `{"message":null}`,
		"no message id":    `{"message":{"data":"` + b64("x") + `"}}`,
		"bad base64":       `{"message":{"data":"***","messageId":"1"}}`,
		"bad publish time": `{"message":{"data":"","messageId":"1","publishTime":"yesterday"}}`,
		"wrong types":      `{"message":{"data":1,"messageId":2}}`,
	}
	for name, body := range cases {
		if _, err := decode(t, body, nil); !errors.Is(err, message.ErrUndecodable) {
			t.Errorf("%s: err = %v, want ErrUndecodable", name, err)
		}
	}
	// A CloudEvent came through the trigger: a broken one is bad input to
	// park (Invalid), never a 4xx Pub/Sub would redeliver forever.
	if m, err := decode(t, `{"specversion":"1.0"`, http.Header{"Content-Type": {"application/cloudevents+json"}}); err != nil || m.Invalid == nil || m.Invalid.Reason != message.ReasonInvalidCloudEvent || m.ID == "" {
		t.Errorf("broken structured CloudEvent: %+v, %v", m, err)
	}
	big := `{"message":{"messageId":"1","data":"` + strings.Repeat("A", message.MaxRequestBytes) + `"}}`
	if _, err := decode(t, big, nil); !errors.Is(err, message.ErrUndecodable) {
		t.Errorf("oversized body: err = %v", err)
	}
}

func TestPushBodyRoundTrip(t *testing.T) {
	t.Parallel()
	w := want()
	m, err := decode(t, string(message.PushBody(w)), nil)
	check(t, "PushBody", m, err, w)
}

func TestHTTPAckAndNack(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var got message.Message
	fail := errors.New("database down")
	var result error
	srv := httptest.NewServer(message.HTTP(log, "p", func(ctx context.Context, m message.Message) error {
		got = m
		return result
	}))
	defer srv.Close()
	post := func(body string) int {
		t.Helper()
		resp, err := http.Post(srv.URL+"/Merge", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	if code := post(string(message.PushBody(want()))); code != http.StatusNoContent || !message.Acked(code) {
		t.Errorf("handler nil: status %d, want 204 (ack)", code)
	}
	if got.ID != "1234567890" || got.DeliveryAttempt != 3 || got.OrderingKey != "customer:C-1" || got.Subscription != sub {
		t.Errorf("handler saw %+v", got)
	}
	result = fail
	if code := post(string(message.PushBody(want()))); code != http.StatusInternalServerError || message.Acked(code) {
		t.Errorf("handler error: status %d, want 500 (nack)", code)
	}
	result = nil
	if code := post(`not a push`); code != http.StatusBadRequest || message.Acked(code) {
		t.Errorf("undecodable: status %d, want 400 (not an ack)", code)
	}
	resp, err := http.Get(srv.URL + "/Merge")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d, want 405", resp.StatusCode)
	}

	for code, acked := range map[int]bool{102: true, 200: true, 201: true, 202: true, 204: true, 203: false, 206: false, 301: false, 400: false, 429: false, 500: false, 503: false} {
		if message.Acked(code) != acked {
			t.Errorf("Acked(%d) = %v", code, !acked)
		}
	}
}

// TestDecodeBadCloudEvents: every bad CloudEvent decodes as an Invalid
// message with a stable reason, an id and the data it carried.
func TestDecodeBadCloudEvents(t *testing.T) {
	t.Parallel()
	binary := func(drop string, set ...string) http.Header {
		h := http.Header{
			"Content-Type":   {"application/json"},
			"Ce-Specversion": {"1.0"},
			"Ce-Type":        {message.TypeMessagePublished},
			"Ce-Source":      {"//pubsub.googleapis.com/projects/p/topics/t"},
			"Ce-Id":          {"ce-7"},
		}
		h.Del(drop)
		for i := 0; i+1 < len(set); i += 2 {
			h.Set(set[i], set[i+1])
		}
		return h
	}
	structured := http.Header{"Content-Type": {"application/cloudevents+json"}}
	ce := func(fields string) string { return `{"specversion":"1.0",` + fields + `}` }
	cases := []struct {
		name, body string
		header     http.Header
		reason     string
	}{
		{"binary: wrong type", envelope, binary("", "Ce-Type", "com.example.other"), message.ReasonUnexpectedEventType},
		{"binary: no type", envelope, binary("Ce-Type"), message.ReasonInvalidCloudEvent},
		{"binary: no source", envelope, binary("Ce-Source"), message.ReasonInvalidCloudEvent},
		{"binary: no id", envelope, binary("Ce-Id"), message.ReasonInvalidCloudEvent},
		{"binary: spec version 2.0", envelope, binary("", "Ce-Specversion", "2.0"), message.ReasonInvalidCloudEvent},
		{"binary: no envelope", `{"subscription":"s"}`, binary(""), message.ReasonInvalidCloudEvent},
		{"binary: empty body", ``, binary(""), message.ReasonInvalidCloudEvent},
		{"structured: wrong type", ce(`"type":"com.example.other","source":"//x","id":"ce-8","data":` + envelope), structured, message.ReasonUnexpectedEventType},
		{"structured: no type", ce(`"source":"//x","id":"ce-8","data":` + envelope), structured, message.ReasonInvalidCloudEvent},
		{"structured: no id", ce(`"type":"` + message.TypeMessagePublished + `","source":"//x","data":` + envelope), structured, message.ReasonInvalidCloudEvent},
		{"structured: no data", ce(`"type":"` + message.TypeMessagePublished + `","source":"//x","id":"ce-9"`), structured, message.ReasonInvalidCloudEvent},
		{"structured: data without message", ce(`"type":"` + message.TypeMessagePublished + `","source":"//x","id":"ce-9","data":{"subscription":"s"}`), structured, message.ReasonInvalidCloudEvent},
		{"structured: not json", `{"specversion":`, structured, message.ReasonInvalidCloudEvent},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := decode(t, c.body, c.header)
			if err != nil {
				t.Fatalf("err = %v, want an Invalid message", err)
			}
			if m.Invalid == nil || m.Invalid.Reason != c.reason || m.Invalid.Detail == "" || m.ID == "" || m.Attributes == nil {
				t.Fatalf("decoded %+v (invalid %+v), want reason %s", m, m.Invalid, c.reason)
			}
			// A handler that ignores Invalid sees no data to act on.
			if len(m.Data) != 0 || (c.body != "" && len(m.Invalid.Data) == 0) {
				t.Errorf("data %q, invalid data %q: want the data kept aside only", m.Data, m.Invalid.Data)
			}
			again, _ := decode(t, c.body, c.header)
			if again.ID != m.ID {
				t.Errorf("ids %q and %q: a redelivery must get the same id", m.ID, again.ID)
			}
		})
	}
	// A good CloudEvent is not Invalid.
	if m, err := decode(t, envelope, binary("")); err != nil || m.Invalid != nil || m.ID != "1234567890" {
		t.Errorf("good binary CloudEvent: %+v, %v", m, err)
	}
}

// FuzzDecode: whatever arrives, the adapter returns a message with an id and
// attributes, or an error — never a panic.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(envelope), uint8(0))
	f.Add([]byte(envelope), uint8(1))
	f.Add([]byte(`{"specversion":"1.0","id":"1","data":`+envelope+`}`), uint8(2))
	f.Add([]byte(`{"specversion":"1.0","id":"1","data_base64":"`+b64(envelope)+`"}`), uint8(2))
	f.Add([]byte(`{"message":{"messageId":"","data":null},"deliveryAttempt":-1}`), uint8(0))
	f.Add([]byte(`{"message":{}}`), uint8(1))
	f.Add([]byte(`{"data":"x"}`), uint8(2))
	f.Add([]byte(`{"specversion":"1.0","data":"not an object"}`), uint8(2))
	f.Add([]byte{0xff, 0xfe}, uint8(0))
	f.Fuzz(func(t *testing.T, body []byte, mode uint8) {
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		switch mode % 3 {
		case 1:
			r.Header.Set("Ce-Specversion", "1.0")
			r.Header.Set("Ce-Id", "ce-1")
			r.Header.Set("Ce-Time", "2026-03-13T20:00:00Z")
		case 2:
			r.Header.Set("Content-Type", "application/cloudevents+json")
		}
		m, err := message.Decode(r)
		if err != nil {
			return
		}
		if m.ID == "" || m.Attributes == nil {
			t.Fatalf("decoded a message without id or attributes: %+v", m)
		}
	})
}
