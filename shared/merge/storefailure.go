package merge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/store"
)

// ReasonRecordTooLarge: accepting the change would grow the record's stored
// state past store.MaxStateBytes. Permanent: the same change can never fit.
const ReasonRecordTooLarge = "record_too_large"

// encodeState encodes a record state for its audit row (never HTML-escaped)
// and refuses one over store.MaxStateBytes, so the insert can never fail on
// the column or on max_allowed_packet, and the record never loops on it.
func encodeState(v any) ([]byte, error) {
	b, err := event.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(b) > store.MaxStateBytes {
		return nil, fmt.Errorf("the record's state would be %d bytes, over the bound of %d bytes: %w", len(b), store.MaxStateBytes, store.ErrRecordTooLarge)
	}
	return b, nil
}

// classifyStoreFailure turns a store error into the merge stage's failure
// with the one classification of SPEC §6 (store.Classify): transient
// errors are retryable store_unavailable; a statement the server refused
// for its content is permanent, with a reason naming the refusal
// (store_refused_data_too_long, ...); a state over its bound is permanent
// record_too_large; an unclassified server error is retryable store_error
// and says so.
func classifyStoreFailure(res Result, err error) *failure.Failure {
	var f *failure.Failure
	switch store.Classify(err) {
	case store.ClassTooLarge:
		f = failure.Permanent(store.StageMerge, ReasonRecordTooLarge,
			"change rejected, not retried: "+err.Error()+"; split the record's data or send smaller values")
	case store.ClassRefused:
		re, _ := store.AsRefused(err)
		f = failure.Permanent(store.StageMerge, re.Reason(), fmt.Sprintf(
			"the database refused to store this change (%s, error %d); rejected, not retried: %v", re.Name, re.Number, err))
	case store.ClassUnclassified:
		f = failure.Retryable(store.StageMerge, failure.ReasonStoreError,
			"unclassified database error, retried by default (add its number to the table in shared/store/mysql/errors.go): "+err.Error())
	default:
		reason := failure.ReasonStoreError
		if errors.Is(err, store.ErrUnavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			reason = failure.ReasonStoreUnavailable
		}
		f = failure.Retryable(store.StageMerge, reason, err.Error())
	}
	f.RecordType, f.RecordID, f.EventID = res.RecordType, res.RecordID, res.EventID
	return f
}

// auditTimeout bounds the extra audit write of a store failure.
const auditTimeout = 10 * time.Second

// AuditStoreFailure writes the audit row of a store failure that the
// rolled-back transaction could not keep (SPEC §6: refusals are audited
// `rejected`; an unclassified error is audited `deferred`, saying it is
// retried by default). Other failures already have their row (the engine
// writes it with the outcome) and are left alone. A refusal that also
// refuses the audit row (its record id, say) is audited without the record.
func (e *Engine) AuditStoreFailure(ctx context.Context, m message.Message, res Result, f *failure.Failure) error {
	outcome := ""
	switch {
	case f.Reason == ReasonRecordTooLarge || strings.HasPrefix(f.Reason, store.ReasonRefusedPrefix):
		outcome = store.OutcomeRejected
	case f.Reason == failure.ReasonStoreError:
		outcome = store.OutcomeDeferred
	default:
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	fp := res.Fingerprint
	if fp == "" {
		fp = event.HashHex(m.Data)
	}
	a := store.Audit{
		Fingerprint: fp,
		RecordType:  res.RecordType,
		RecordID:    res.RecordID,
		Outcome:     outcome,
		Stage:       store.StageMerge,
		MessageID:   messageID(m.ID),
		Detail:      f.Reason + ": " + f.Detail,
	}
	err := e.store.AppendAudit(ctx, a)
	if store.Classify(err) == store.ClassRefused {
		a.RecordType, a.RecordID = "", ""
		a.Detail = f.Reason + " (record not recorded: the database refused it in the audit row too): " + f.Detail
		err = e.store.AppendAudit(ctx, a)
	}
	if err != nil {
		return fmt.Errorf("audit %s %s of message %s: %w", outcome, f.Reason, m.ID, err)
	}
	return nil
}
