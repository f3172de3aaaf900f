package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/store"
)

// AttrRedriveOf is the attribute of a redriven message: the message id of
// the dead letter it was put back from.
const AttrRedriveOf = "redrive_of"

// ErrCannotRedrive marks a dead letter that redrive refuses (its data is not
// an error message, or it belongs to another environment).
var ErrCannotRedrive = errors.New("cannot redrive")

// Build returns the message that puts d back on the error topic: the
// original error message with its `redrive` counter incremented and
// `retryable` set (the operator redrives because the target recovered, so
// Retry must re-run the stage rather than park it again), d's attributes
// without Pub/Sub's dead-letter ones (they described the last dead-lettering),
// `redrive_of` = d's message id, and the record's ordering key when known.
// Fields of the error message this version does not know are kept.
func Build(d store.DeadLetter) (m publish.Message, redrive int, err error) {
	e, err := failure.Decode(d.Data)
	if err != nil {
		return m, 0, fmt.Errorf("%w %s: its data is not an error message (%v)", ErrCannotRedrive, d.MessageID, err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(d.Data, &fields); err != nil {
		return m, 0, fmt.Errorf("%w %s: %v", ErrCannotRedrive, d.MessageID, err)
	}
	redrive = e.Redrive + 1
	fields["redrive"] = json.RawMessage(fmt.Sprint(redrive))
	fields["retryable"] = json.RawMessage("true")
	data, err := json.Marshal(fields)
	if err != nil {
		return m, 0, fmt.Errorf("encode redrive of %s: %w", d.MessageID, err)
	}

	attrs := make(map[string]string, len(d.Attributes)+2)
	maps.Copy(attrs, d.Attributes)
	for k := range attrs {
		if strings.HasPrefix(k, "CloudPubSubDeadLetter") || k == AttrDeadLetterReason {
			delete(attrs, k)
		}
	}
	attrs[failure.AttrRetryable] = "true"
	attrs[AttrRedriveOf] = d.MessageID

	// Same key rule as failure.Reporter: the record's when known, so the
	// redrive queues behind any retry of the same record.
	key := e.Original.OrderingKey
	switch {
	case d.RecordType != "" && d.RecordID != "":
		key = publish.OrderingKey(d.RecordType, d.RecordID)
	case e.RecordType != "" && e.RecordID != "":
		key = publish.OrderingKey(e.RecordType, e.RecordID)
	}
	return publish.Message{Data: data, Attributes: attrs, OrderingKey: key}, redrive, nil
}

// Redriver puts dead letters back on events.error.{env}.
type Redriver struct {
	Store store.Store
	// Pub must be guarded (publish.Guard) for Env; it may be nil for a dry run.
	Pub publish.Publisher
	Env config.Env
	// Limiter paces the publishes; nil does not pace.
	Limiter Limiter
	// Note, when set, ends each redrive's audit detail (e.g. that the
	// redrive was automatic).
	Note string
}

// Actions an Outcome reports.
const (
	ActionRedriven     = "redriven"
	ActionWouldRedrive = "would_redrive" // dry run
	ActionSkipped      = "skipped"
	ActionFailed       = "failed"
)

// Outcome is what happened to one dead letter.
type Outcome struct {
	Summary
	Action      string `json:"action"`
	Topic       string `json:"topic"`
	OrderingKey string `json:"ordering_key,omitempty"`
	// Redrive is the counter the published (or, in a dry run, planned)
	// message carries.
	Redrive int `json:"redrive,omitempty"`
	// PublishedID is the new message's id on the error topic.
	PublishedID string `json:"published_id,omitempty"`
	// PreviousRedrives counts earlier redrives of this dead letter, from the
	// audit log; LastRedrivenAt is the newest.
	PreviousRedrives int         `json:"previous_redrives"`
	LastRedrivenAt   *event.Time `json:"last_redriven_at,omitempty"`
	// Error says why it was skipped or failed.
	Error string `json:"error,omitempty"`
}

// Result counts the outcomes of one redrive.
type Result struct {
	Redriven, WouldRedrive, Skipped, Failed int
}

// Redrive publishes each dead letter (each record's oldest version first,
// see Order; paced) and audits it
// (`redriven`, stage `redrive`); with dryRun it only reports what it would
// publish and how often each was redriven before. Dead-letter rows are never
// changed; redriving one twice is allowed. each (may be nil) sees every
// outcome as it happens. A dead letter that cannot be redriven is skipped
// and one whose publish or audit fails is counted failed; the returned error
// is only for an aborted run (context ended).
func (r *Redriver) Redrive(ctx context.Context, letters []store.DeadLetter, dryRun bool, each func(Outcome)) (Result, error) {
	var res Result
	if _, err := config.ParseEnv(string(r.Env)); err != nil {
		return res, fmt.Errorf("redrive: %w", err)
	}
	if !dryRun && r.Pub == nil {
		return res, errors.New("redrive: no publisher")
	}
	letters = Order(slices.Clone(letters))
	for _, d := range letters {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("redrive stopped before %s: %w", d.MessageID, err)
		}
		o := Outcome{Summary: Summarize(d), Topic: topic(r.Env)}
		o.Action, o.Error = r.one(ctx, d, dryRun, &o)
		switch o.Action {
		case ActionRedriven:
			res.Redriven++
		case ActionWouldRedrive:
			res.WouldRedrive++
		case ActionSkipped:
			res.Skipped++
		default:
			res.Failed++
		}
		if each != nil {
			each(o)
		}
		if o.Action == ActionFailed && ctx.Err() != nil {
			return res, fmt.Errorf("redrive stopped at %s: %w", d.MessageID, ctx.Err())
		}
	}
	return res, nil
}

// one redrives d and returns the action taken and, when skipped or failed,
// why.
func (r *Redriver) one(ctx context.Context, d store.DeadLetter, dryRun bool, o *Outcome) (string, string) {
	if env := d.Attributes[publish.AttrEnv]; env != "" && env != string(r.Env) {
		// Guard would restamp it with our env: a production message would
		// then be processed by sandbox (or the reverse).
		return ActionSkipped, fmt.Sprintf("its env attribute is %q: redrive it with BACKBONE_ENV=%s", env, env)
	}
	if d.Attributes[AttrDeadLetterReason] == failure.ReasonWrongEnv {
		return ActionSkipped, "Retry parked it because it came from another environment: it does not belong on this error topic"
	}
	if event.Reserved(d.RecordType) {
		return ActionSkipped, "a stress record (" + d.RecordType + "): stress writes never go back into the pipeline"
	}
	msg, redrive, err := Build(d)
	if err != nil {
		return ActionSkipped, err.Error()
	}
	o.OrderingKey, o.Redrive = msg.OrderingKey, redrive
	before, err := Redrives(ctx, r.Store, d)
	if err != nil {
		return ActionFailed, err.Error()
	}
	o.PreviousRedrives = len(before)
	if n := len(before); n > 0 {
		t := event.NewTime(before[n-1].CreatedAt)
		o.LastRedrivenAt = &t
	}
	if dryRun {
		return ActionWouldRedrive, ""
	}
	if r.Limiter != nil {
		if err := r.Limiter.Wait(ctx); err != nil {
			return ActionFailed, err.Error()
		}
	}
	id, err := r.Pub.Publish(ctx, topic(r.Env), msg)
	if err != nil {
		return ActionFailed, fmt.Sprintf("publish to %s: %v", topic(r.Env), err)
	}
	o.PublishedID = id
	err = r.Store.AppendAudit(ctx, store.Audit{
		EventID:     d.EventID,
		Fingerprint: Fingerprint(d.Data),
		RecordType:  d.RecordType,
		RecordID:    d.RecordID,
		Outcome:     store.OutcomeRedriven,
		Stage:       store.StageRedrive,
		MessageID:   d.MessageID,
		Detail:      redriveDetail(id, topic(r.Env), redrive, r.Note),
	})
	if err != nil {
		// The message is on its way; only the record of it is missing.
		return ActionFailed, fmt.Sprintf("published as %s but not audited: %v", id, err)
	}
	return ActionRedriven, ""
}

func topic(env config.Env) string { return env.Names().ErrorTopic }

func redriveDetail(id, topic string, redrive int, note string) string {
	s := fmt.Sprintf("redriven as message %s to %s (redrive %d)", id, topic, redrive)
	if note != "" {
		s += "; " + note
	}
	return s
}
