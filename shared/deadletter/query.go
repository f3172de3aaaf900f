package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/store"
)

// Summary is one dead letter as `dlq list` shows it.
type Summary struct {
	MessageID string `json:"message_id"`
	// ContentDigest completes the key: a message id may be shared by
	// several dead letters (an emulator restarted numbers from m0 again).
	ContentDigest    string     `json:"content_digest"`
	ArchivedAt       event.Time `json:"archived_at"`
	Stage            string     `json:"stage"`
	Reason           string     `json:"reason"`
	RecordType       string     `json:"record_type,omitempty"`
	RecordID         string     `json:"record_id,omitempty"`
	DeliveryAttempts int        `json:"delivery_attempts"`
	EventID          string     `json:"event_id,omitempty"`
	Subscription     string     `json:"subscription,omitempty"`
	Detail           string     `json:"detail,omitempty"`
}

// Summarize returns d's summary.
func Summarize(d store.DeadLetter) Summary {
	return Summary{
		MessageID: d.MessageID, ContentDigest: d.ContentDigest, ArchivedAt: event.NewTime(d.CreatedAt), Stage: d.Stage, Reason: d.Reason,
		RecordType: d.RecordType, RecordID: d.RecordID, DeliveryAttempts: d.DeliveryAttempts,
		EventID: d.EventID, Subscription: d.Subscription, Detail: d.Detail,
	}
}

// Record returns TYPE:ID, or "" when the record is unknown.
func (s Summary) Record() string {
	if s.RecordType == "" {
		return ""
	}
	return s.RecordType + ":" + s.RecordID
}

// List returns the dead letters matching f, newest first.
func List(ctx context.Context, s store.Store, f store.DeadLetterFilter) ([]Summary, error) {
	dls, err := s.DeadLetters(ctx, f)
	if err != nil {
		return nil, err
	}
	out := make([]Summary, len(dls))
	for i, d := range dls {
		out[i] = Summarize(d)
	}
	return out, nil
}

// Payload is message data shown to a human: JSON as JSON, other UTF-8 text as
// text, anything else base64. Exactly one field is set (none when empty).
type Payload struct {
	JSON   json.RawMessage `json:"data,omitempty"`
	Text   string          `json:"data_text,omitempty"`
	Base64 []byte          `json:"data_base64,omitempty"`
}

// NewPayload classifies b.
func NewPayload(b []byte) Payload {
	switch {
	case len(b) == 0:
		return Payload{}
	case json.Valid(b):
		return Payload{JSON: json.RawMessage(b)}
	case utf8.Valid(b):
		return Payload{Text: string(b)}
	default:
		return Payload{Base64: b}
	}
}

// OriginalView is the failed stage's original message, its data decoded.
type OriginalView struct {
	MessageID       string            `json:"message_id"`
	Subscription    string            `json:"subscription"`
	OrderingKey     string            `json:"ordering_key,omitempty"`
	PublishTime     *event.Time       `json:"publish_time,omitempty"`
	DeliveryAttempt int               `json:"delivery_attempt,omitempty"`
	Attributes      map[string]string `json:"attributes"`
	Payload
}

// ErrorView is the decoded error message of a dead letter.
type ErrorView struct {
	Stage      string       `json:"stage"`
	Retryable  bool         `json:"retryable"`
	Reason     string       `json:"reason"`
	Detail     string       `json:"detail"`
	EventID    string       `json:"event_id,omitempty"`
	RecordType string       `json:"record_type,omitempty"`
	RecordID   string       `json:"record_id,omitempty"`
	Redrive    int          `json:"redrive,omitempty"`
	Original   OriginalView `json:"original"`
}

// RedriveView is one earlier redrive of a dead letter, from the audit log.
type RedriveView struct {
	At     event.Time `json:"at"`
	Detail string     `json:"detail"`
}

// View is everything about one dead letter, as `dlq show` prints it.
type View struct {
	Summary
	PublishTime *event.Time       `json:"publish_time,omitempty"`
	Attributes  map[string]string `json:"attributes"`
	// ErrorMessage is the decoded data; when the data is not an error
	// message, DecodeError says why and Raw holds the data.
	ErrorMessage *ErrorView    `json:"error_message,omitempty"`
	DecodeError  string        `json:"decode_error,omitempty"`
	Raw          *Payload      `json:"raw,omitempty"`
	Redrives     []RedriveView `json:"redrives"`
	// Others are the other dead letters archived under the same message id
	// (each with other data), oldest first; show one with ID@DIGEST.
	Others []Summary `json:"same_message_id,omitempty"`
}

// Ref is how an operator names one dead letter: its message id, optionally
// followed by @ and a prefix of its content digest (at least 8 hex digits)
// when several share the id.
type Ref struct {
	MessageID, Digest string
}

// minDigestPrefix keeps a digest prefix from matching by accident.
const minDigestPrefix = 8

// ParseRef reads MESSAGE_ID or MESSAGE_ID@DIGEST. Pub/Sub's ids hold no
// "@"; should an archived id hold one, a suffix that is not a digest prefix
// keeps the whole string as the id.
func ParseRef(s string) (Ref, error) {
	if s == "" {
		return Ref{}, errors.New("empty message id")
	}
	i := strings.LastIndex(s, "@")
	if i <= 0 {
		return Ref{MessageID: s}, nil
	}
	digest := strings.ToLower(s[i+1:])
	if len(digest) < minDigestPrefix || len(digest) > 64 || strings.Trim(digest, "0123456789abcdef") != "" {
		return Ref{MessageID: s}, nil
	}
	return Ref{MessageID: s[:i], Digest: digest}, nil
}

func (r Ref) String() string {
	if r.Digest == "" {
		return r.MessageID
	}
	return r.MessageID + "@" + r.Digest
}

// Resolve returns the dead letters r names, oldest first: every one with the
// message id, or the one whose digest starts with r.Digest.
// store.ErrNotFound when there is none.
func Resolve(ctx context.Context, s store.Store, r Ref) ([]store.DeadLetter, error) {
	all, err := s.DeadLettersByID(ctx, r.MessageID)
	if err != nil {
		return nil, err
	}
	if r.Digest != "" {
		var one []store.DeadLetter
		for _, d := range all {
			if strings.HasPrefix(d.ContentDigest, r.Digest) {
				one = append(one, d)
			}
		}
		all = one
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("dead letter %s: %w", r, store.ErrNotFound)
	}
	return all, nil
}

// Show gathers everything about one dead letter, including its earlier
// redrives. ref is MESSAGE_ID (the newest dead letter with that id; the
// others sharing it are listed in Others) or MESSAGE_ID@DIGEST.
// store.ErrNotFound when there is no such dead letter.
func Show(ctx context.Context, s store.Store, ref string) (View, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return View{}, err
	}
	all, err := Resolve(ctx, s, r)
	if err != nil {
		return View{}, err
	}
	if r.Digest != "" && len(all) > 1 {
		return View{}, fmt.Errorf("dead letter %s: %d dead letters match, give more digits of the digest", r, len(all))
	}
	d := all[len(all)-1]
	v := View{Summary: Summarize(d), Attributes: d.Attributes, Redrives: []RedriveView{}}
	if r.Digest == "" {
		for _, o := range all[:len(all)-1] {
			v.Others = append(v.Others, Summarize(o))
		}
	}
	if !d.PublishTime.IsZero() {
		t := event.NewTime(d.PublishTime)
		v.PublishTime = &t
	}
	if e, err := failure.Decode(d.Data); err != nil {
		v.DecodeError = err.Error()
		p := NewPayload(d.Data)
		v.Raw = &p
	} else {
		v.ErrorMessage = errorView(e)
	}
	redrives, err := Redrives(ctx, s, d)
	if err != nil {
		return v, err
	}
	for _, a := range redrives {
		v.Redrives = append(v.Redrives, RedriveView{At: event.NewTime(a.CreatedAt), Detail: a.Detail})
	}
	return v, nil
}

func errorView(e event.Error) *ErrorView {
	o := e.Original
	attrs := o.Attributes
	if attrs == nil {
		attrs = map[string]string{}
	}
	return &ErrorView{
		Stage: e.Stage, Retryable: e.Retryable, Reason: e.Reason, Detail: e.Detail,
		EventID: e.EventID, RecordType: e.RecordType, RecordID: e.RecordID, Redrive: e.Redrive,
		Original: OriginalView{
			MessageID: o.MessageID, Subscription: o.Subscription, OrderingKey: o.OrderingKey,
			PublishTime: o.PublishTime, DeliveryAttempt: o.DeliveryAttempt, Attributes: attrs,
			Payload: NewPayload(o.Data),
		},
	}
}

// Redrives returns the redriven audit rows of d, oldest first. Redrive
// audits carry the dead letter's message id and record, so the record's
// trail finds them.
func Redrives(ctx context.Context, s store.Store, d store.DeadLetter) ([]store.Audit, error) {
	trail, err := s.AuditTrail(ctx, d.RecordType, d.RecordID)
	if err != nil {
		return nil, fmt.Errorf("redrive history of dead letter %s: %w", d.MessageID, err)
	}
	var out []store.Audit
	digest := d.ContentDigest
	if digest == "" {
		digest = Fingerprint(d.Data)
	}
	for _, a := range trail {
		// The fingerprint tells apart dead letters that share a message id.
		if a.Outcome == store.OutcomeRedriven && a.Stage == store.StageRedrive && a.MessageID == d.MessageID && a.Fingerprint == digest {
			out = append(out, a)
		}
	}
	return out, nil
}

// Select returns the dead letters to act on: those the given refs name
// (MESSAGE_ID: every dead letter with that id; MESSAGE_ID@DIGEST: one), or
// those matching f when there are none. Every ref must exist.
func Select(ctx context.Context, s store.Store, ids []string, f store.DeadLetterFilter) ([]store.DeadLetter, error) {
	if len(ids) == 0 {
		return s.DeadLetters(ctx, f)
	}
	out := make([]store.DeadLetter, 0, len(ids))
	seen := map[string]bool{}
	for _, id := range ids {
		r, err := ParseRef(id)
		if err != nil {
			return nil, err
		}
		ds, err := Resolve(ctx, s, r)
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("dead letter %s does not exist (see backbone dlq list): %w", id, err)
		}
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			k := d.MessageID + "@" + d.ContentDigest
			if !seen[k] {
				seen[k] = true
				out = append(out, d)
			}
		}
	}
	return out, nil
}
