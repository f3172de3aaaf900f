// Package sink is the machinery both sinks share (SPEC §6, §7): the Runner
// that takes a merged message from events.merged.{env} to a target (env check,
// decode, echo suppression, regression guard, delivery, audit), the HTTP
// client every target uses, the classification of target answers into
// failures, and the push handler the NetSuiteSink and SuiteXSink functions
// are made of. A target (netsuite, suitex) only knows how to speak to its
// system; everything about the backbone's bookkeeping lives here.
//
// The Runner never publishes: the function handler reports its failures to
// events.error.{env}, and Retry calls Runner.Deliver again on the original
// message and nacks on failure.
package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/store"
)

// Target is one system the backbone delivers to.
type Target interface {
	// Name is the target's stage: store.StageNetSuite or store.StageSuiteX.
	// It is also the source name the target's own events carry, which is
	// how echoes are recognised.
	Name() string
	// Deliver sends the merged event. It returns nil when the target has the
	// change (2xx, or its "already applied" answer) and otherwise a
	// *failure.Failure saying whether a retry can help.
	Deliver(ctx context.Context, ev event.Merged) error
}

// SecretHolder is implemented by targets that hold credentials. The Runner
// removes every value it returns from failure details before they are
// audited, logged or returned, so that a target echoing a header back in an
// error body cannot leak one.
type SecretHolder interface {
	Secrets() []string
}

// Failure reasons the Runner itself produces.
const (
	ReasonWrongEnv         = "wrong_env"
	ReasonInvalidMessage   = "invalid_message"
	ReasonStoreUnavailable = "store_unavailable"
	ReasonInternal         = "internal_error"
)

// Runner delivers merged messages to one target.
type Runner struct {
	env    config.Env
	target Target
	store  store.Store
	log    *slog.Logger
}

// NewRunner builds the Runner of target in env. log may be nil (discard).
func NewRunner(env config.Env, target Target, st store.Store, log *slog.Logger) *Runner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{env: env, target: target, store: st, log: log.With("target", target.Name())}
}

// Target returns the runner's target name (its stage).
func (r *Runner) Target() string { return r.target.Name() }

// Deliver takes one merged message to the target and returns the outcome
// (store.Outcome*: delivered, skipped_echo, stale, duplicate, or rejected /
// failed with an error). Every error is a *failure.Failure with Stage set to
// the target name and, once the message decoded, EventID, RecordType and
// RecordID set.
//
// Order of checks: env (a message of another environment is never acted on),
// decode, echo (source == target: never send a system its own change back),
// regression guard (a version at or below the last one delivered to this
// target is skipped), then delivery. Each decision about a decoded event is
// appended to the audit log.
func (r *Runner) Deliver(ctx context.Context, m message.Message) (outcome string, err error) {
	stage := r.target.Name()
	defer func() {
		if p := recover(); p != nil {
			// A bug must neither lose the message nor crash the instance
			// mid-batch: fail it as retryable, so Retry tries again and
			// dead-letters it after its attempts.
			r.log.ErrorContext(ctx, "delivery panicked", "message_id", m.ID, "panic", r.redact(fmt.Sprint(p)),
				"stack", string(debug.Stack()))
			outcome, err = store.OutcomeFailed, failure.Retryable(stage, ReasonInternal, r.redact(fmt.Sprintf("delivery panicked: %v", p)))
		}
	}()
	if got := m.Attributes[publish.AttrEnv]; got != string(r.env) {
		detail := fmt.Sprintf("message %s carries env %q, this is %s", m.ID, got, r.env)
		if got == "" {
			detail = fmt.Sprintf("message %s has no env attribute, this is %s: only the backbone's guarded publisher writes merged messages", m.ID, r.env)
		}
		f := failure.Permanent(stage, ReasonWrongEnv, detail)
		r.log.WarnContext(ctx, "merged message rejected", "message_id", m.ID, "reason", f.Reason, "detail", f.Detail)
		return store.OutcomeRejected, f
	}
	ev, err := DecodeMerged(m.Data)
	if err != nil {
		f := failure.Permanent(stage, ReasonInvalidMessage, fmt.Sprintf("message %s: %v", m.ID, err))
		if id := m.Attributes[event.AttrEventID]; id != "" {
			f.EventID = id
		}
		r.log.WarnContext(ctx, "merged message rejected", "message_id", m.ID, "reason", f.Reason, "detail", f.Detail)
		return store.OutcomeRejected, f
	}
	if id := m.Attributes[event.AttrEventID]; id != "" && id != ev.ID {
		f := r.fail(failure.Permanent(stage, ReasonInvalidMessage,
			fmt.Sprintf("message %s: attribute event_id %q differs from the event's id %q", m.ID, id, ev.ID)), ev)
		r.log.WarnContext(ctx, "merged message rejected", "message_id", m.ID, "reason", f.Reason, "detail", f.Detail)
		return store.OutcomeRejected, f
	}
	fp, err := Fingerprint(ev)
	if err != nil {
		// Decode accepted the changes as JSON, so this is not expected; a
		// number JCS cannot represent is the only known way here.
		f := r.fail(failure.Permanent(stage, ReasonInvalidMessage, fmt.Sprintf("message %s: %v", m.ID, err)), ev)
		return store.OutcomeRejected, f
	}
	audit := store.Audit{
		EventID: ev.ID, Fingerprint: fp, RecordType: ev.RecordType, RecordID: ev.RecordID,
		Stage: stage, MessageID: m.ID, Version: ev.Version,
	}
	log := r.log.With("event_id", ev.ID, "record_type", ev.RecordType, "record_id", ev.RecordID,
		"version", ev.Version, "message_id", m.ID)

	if ev.Source == stage {
		audit.Outcome = store.OutcomeSkippedEcho
		audit.Detail = "source is the target itself: not sent back"
		return r.skip(ctx, r.store, log, audit, ev)
	}
	// The guard reads the last delivered version, delivers and audits: a
	// check-then-act that must not interleave with another delivery of the
	// same record to this target (the live subscription and Retry run in
	// different services), or v3 could land after v5. A lock shared through
	// the database serialises them.
	var (
		got  string
		derr error
	)
	lerr := r.store.Exclusive(ctx, "deliver:"+stage+":"+ev.RecordType+":"+ev.RecordID, lockWait, func(ctx context.Context, l store.Locked) error {
		got, derr = r.guardedDeliver(ctx, l, log, audit, ev)
		return nil
	})
	if lerr != nil {
		f := r.fail(failure.Retryable(stage, ReasonStoreUnavailable, fmt.Sprintf("serialise delivery: %v", lerr)), ev)
		log.WarnContext(ctx, "delivery failed", "reason", f.Reason, "retryable", true, "detail", f.Detail)
		return store.OutcomeFailed, f
	}
	return got, derr
}

// lockWait bounds how long a delivery waits for another delivery of the
// same record to the same target (at most one target request).
const lockWait = 60 * time.Second

// guardedDeliver is the regression guard and the delivery, run under the
// record's delivery lock.
func (r *Runner) guardedDeliver(ctx context.Context, l store.Locked, log *slog.Logger, audit store.Audit, ev event.Merged) (string, error) {
	stage := r.target.Name()
	last, err := l.LastDelivered(ctx, ev.RecordType, ev.RecordID, stage)
	if err != nil {
		f := r.fail(failure.Retryable(stage, ReasonStoreUnavailable, fmt.Sprintf("read last delivery: %v", err)), ev)
		log.WarnContext(ctx, "delivery failed", "reason", f.Reason, "retryable", true, "detail", f.Detail)
		return store.OutcomeFailed, f
	}
	switch {
	case last > ev.Version:
		audit.Outcome = store.OutcomeStale
		audit.Detail = fmt.Sprintf("version %d already delivered: delivering %d would regress the target", last, ev.Version)
		return r.skip(ctx, l, log, audit, ev)
	case last == ev.Version:
		// A redelivery of what the target already has: skipping keeps the
		// sink idempotent even for a target without idempotency keys.
		audit.Outcome = store.OutcomeDuplicate
		audit.Detail = fmt.Sprintf("version %d already delivered", last)
		return r.skip(ctx, l, log, audit, ev)
	}

	derr := r.target.Deliver(ctx, ev)
	if derr != nil {
		f, ok := failure.As(derr)
		if !ok {
			f = failure.Retryable(stage, ReasonInternal, derr.Error())
		}
		f = r.fail(f, ev)
		audit.Outcome = store.OutcomeFailed
		audit.Detail = truncate(f.Reason+": "+f.Detail, maxAuditDetail)
		if aerr := l.AppendAudit(ctx, audit); aerr != nil {
			// The failure is what matters: it goes to the error topic either
			// way; a missing `failed` row loses history, not data.
			log.ErrorContext(ctx, "audit of failed delivery not written", "error", r.redact(aerr.Error()))
		}
		log.WarnContext(ctx, "delivery failed", "reason", f.Reason, "retryable", f.Retryable, "detail", f.Detail)
		return store.OutcomeFailed, f
	}
	audit.Outcome = store.OutcomeDelivered
	if err := l.AppendAudit(ctx, audit); err != nil {
		// The target has the change but the store does not know: report a
		// retryable failure. The retry delivers again, which both targets
		// accept (NetSuite upserts by external ID, SuiteX dedups on the
		// idempotency key), and then records the delivery the merge engine's
		// echo detection and the regression guard depend on.
		f := r.fail(failure.Retryable(stage, ReasonStoreUnavailable,
			fmt.Sprintf("delivered, but the delivery could not be audited: %v", err)), ev)
		log.ErrorContext(ctx, "delivered but not audited", "reason", f.Reason, "detail", f.Detail)
		return store.OutcomeFailed, f
	}
	log.InfoContext(ctx, "delivered", "outcome", store.OutcomeDelivered)
	return store.OutcomeDelivered, nil
}

// skip audits a decision not to deliver and acks.
func (r *Runner) skip(ctx context.Context, st store.Locked, log *slog.Logger, a store.Audit, ev event.Merged) (string, error) {
	if err := st.AppendAudit(ctx, a); err != nil {
		f := r.fail(failure.Retryable(r.target.Name(), ReasonStoreUnavailable,
			fmt.Sprintf("audit %s: %v", a.Outcome, err)), ev)
		log.WarnContext(ctx, "skip not audited", "outcome", a.Outcome, "reason", f.Reason, "detail", f.Detail)
		return store.OutcomeFailed, f
	}
	log.InfoContext(ctx, "not delivered", "outcome", a.Outcome, "detail", a.Detail)
	return a.Outcome, nil
}

// fail completes f with the event's identity and strips secrets.
func (r *Runner) fail(f *failure.Failure, ev event.Merged) *failure.Failure {
	out := *f
	out.Stage = r.target.Name()
	out.EventID, out.RecordType, out.RecordID = ev.ID, ev.RecordType, ev.RecordID
	out.Detail = truncate(r.redact(out.Detail), maxFailureDetail)
	return &out
}

func (r *Runner) redact(s string) string {
	if h, ok := r.target.(SecretHolder); ok {
		return Redact(s, h.Secrets()...)
	}
	return s
}

// Bounds on failure text: an error message and an audit row stay small
// whatever a target answered.
const (
	maxFailureDetail = 2048
	maxAuditDetail   = 2048
)

// DecodeMerged reads and checks a merged event: the fields a delivery relies
// on must be there and consistent. Unknown fields are ignored so that a
// newer merge engine can add some without stopping the sinks.
func DecodeMerged(data []byte) (event.Merged, error) {
	var ev event.Merged
	if len(data) == 0 {
		return ev, errors.New("empty data: expected a merged event")
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		return ev, fmt.Errorf("not a merged event: %w", err)
	}
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"id", ev.ID}, {"record_type", ev.RecordType}, {"record_id", ev.RecordID}, {"source", ev.Source},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return ev, fmt.Errorf("merged event lacks %v", missing)
	}
	if ev.Version != ev.BaseVersion+1 {
		return ev, fmt.Errorf("merged event %s: version %d is not base_version %d + 1", ev.ID, ev.Version, ev.BaseVersion)
	}
	if len(ev.Changes) == 0 {
		return ev, fmt.Errorf("merged event %s has no changes", ev.ID)
	}
	return ev, nil
}
