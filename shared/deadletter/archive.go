// Package deadletter holds what the backbone does with messages Pub/Sub gave
// up on (SPEC §6): archiving them append-only (the DLQArchive function is a
// thin handler over Archive), and the operator's list / show / redrive over
// the archive (the `backbone dlq` verb is a thin CLI over them).
package deadletter

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/store"
)

// Attributes Pub/Sub adds to a message it forwards to a dead-letter topic.
const (
	AttrSourceDeliveryCount       = "CloudPubSubDeadLetterSourceDeliveryCount"
	AttrSourceSubscription        = "CloudPubSubDeadLetterSourceSubscription"
	AttrSourceSubscriptionProject = "CloudPubSubDeadLetterSourceSubscriptionProject"
	AttrSourceTopicPublishTime    = "CloudPubSubDeadLetterSourceTopicPublishTime"
)

// Attributes Retry sets when it dead-letters a message itself, without
// waiting for Pub/Sub (functions/retry writes the same names).
const (
	// AttrDeadLetterReason says why Retry parked the message (not_retryable,
	// failed_permanently, unknown_stage, undecodable_error_message, wrong_env).
	// Its value failure.ReasonWrongEnv marks a message whose `env` attribute
	// named another environment: Retry's publisher restamps `env` with its
	// own, so this attribute is what is left of the mismatch.
	AttrDeadLetterReason = "dead_letter_reason"
)

// What an archived message that is not an error message is filed under.
const (
	StageUnknown      = "unknown"
	ReasonUndecodable = "undecodable"
)

// Stages are the values of dead_letters.stage: the stage that failed.
var Stages = []string{store.StageMerge, store.StageNetSuite, store.StageSuiteX, StageUnknown}

// Column sizes of dead_letters and event_audit_log (migrations/00001). The
// archive must never fail on content: a value that does not fit would make
// the insert fail on every redelivery and the message would never be stored.
const (
	maxStage        = 32
	maxReason       = 128
	maxSubscription = 255
	maxEventID      = 36
	maxRecordType   = 64
	maxRecordID     = 191
	maxDetailBytes  = 16 << 10 // TEXT holds 64 KiB; a detail is a sentence
)

// FromMessage builds the archive row of m, a message delivered on the DLQ
// subscription. Data and attributes are kept verbatim. When the data is not
// a decodable error message the row is still complete (stage "unknown",
// reason "undecodable") and decodeErr says why.
func FromMessage(m message.Message) (d store.DeadLetter, decodeErr error) {
	d = store.DeadLetter{
		MessageID:   m.ID,
		Data:        m.Data,
		Attributes:  m.Attributes,
		PublishTime: m.PublishTime,
	}
	if d.Data == nil {
		d.Data = []byte{}
	}
	d.ContentDigest = store.DigestOf(d.Data)
	if d.Attributes == nil {
		d.Attributes = map[string]string{}
	}
	e, decodeErr := failure.Decode(m.Data)
	if decodeErr != nil {
		d.Stage, d.Reason = StageUnknown, ReasonUndecodable
		d.Detail = "data is not a backbone error message: " + decodeErr.Error()
		e = event.Error{}
	} else {
		d.Stage, d.Reason, d.Detail = e.Stage, e.Reason, e.Detail
		d.EventID, d.RecordType, d.RecordID = e.EventID, e.RecordType, e.RecordID
	}

	// Pub/Sub's own attributes describe the dead-lettering itself (the retry
	// subscription and how often it tried); without them (Retry parked a
	// non-retryable error directly) the error message knows where the
	// original came from.
	d.DeliveryAttempts = e.Original.DeliveryAttempt
	if n, err := strconv.Atoi(m.Attributes[AttrSourceDeliveryCount]); err == nil && n > 0 {
		d.DeliveryAttempts = n
	}
	d.Subscription = shortSubscription(e.Original.Subscription)
	if s := m.Attributes[AttrSourceSubscription]; s != "" {
		d.Subscription = shortSubscription(s)
	}
	return fit(d), decodeErr
}

// shortSubscription strips projects/P/subscriptions/ so that rows compare
// and filter alike whichever form the sender used; the full form stays in
// the stored attributes and data.
func shortSubscription(s string) string {
	if i := strings.LastIndex(s, "/subscriptions/"); i >= 0 {
		return s[i+len("/subscriptions/"):]
	}
	return s
}

// fit makes every column value fit its column. Codes are truncated (still
// recognisable); identifiers that do not fit are dropped rather than
// truncated, because a truncated record id names another record. The data
// keeps the full values.
func fit(d store.DeadLetter) store.DeadLetter {
	d.Stage = truncate(d.Stage, maxStage)
	d.Reason = truncate(d.Reason, maxReason)
	d.Subscription = truncate(d.Subscription, maxSubscription)
	d.Detail = truncateBytes(d.Detail, maxDetailBytes)
	d.EventID = dropUnlessFits(d.EventID, maxEventID)
	d.RecordType = dropUnlessFits(d.RecordType, maxRecordType)
	d.RecordID = dropUnlessFits(d.RecordID, maxRecordID)
	if d.RecordType == "" || d.RecordID == "" {
		// Half a record is no record: keep filters and ordering keys honest.
		d.RecordType, d.RecordID = "", ""
	}
	return d
}

func truncate(s string, chars int) string {
	if utf8.RuneCountInString(s) <= chars {
		return s
	}
	return string([]rune(s)[:chars])
}

func truncateBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func dropUnlessFits(s string, chars int) string {
	if utf8.RuneCountInString(s) > chars {
		return ""
	}
	return s
}

// Fingerprint is the audit fingerprint of a dead letter: the lowercase hex
// SHA-256 of its data, which is also its content digest (the second half of
// its key in dead_letters), so its archive and redrive audit rows name
// exactly one dead letter even when another shares its message id.
func Fingerprint(data []byte) string { return store.DigestOf(data) }

// auditNamespace scopes the deterministic ids of dead-letter audit rows.
var auditNamespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://backbone-sync/audit/dead_lettered"))

// archiveAuditID is the id of the dead_lettered audit row of a dead letter,
// derived from its whole key (message id and content digest): the same on
// every redelivery, so the archive audits each dead letter exactly once even
// when two deliveries race, and different for a new dead letter that reuses
// a message id, so its audit row can never collide with the earlier one's.
func archiveAuditID(messageID, digest string) string {
	return uuid.NewSHA1(auditNamespace, []byte(digest+"\x00"+messageID)).String()
}

// Archived reports what Archive did with one message.
type Archived struct {
	DeadLetter store.DeadLetter
	// New is true when this delivery stored the dead letter; false when it
	// was already archived (a redelivery).
	New bool
	// DecodeErr is set when the data is not an error message (archived as
	// stage "unknown", reason "undecodable").
	DecodeErr error
	// Env is the message's `env` attribute; WrongEnv is true when it names
	// an environment other than the archive's own, or when Retry parked the
	// message for that reason.
	Env      string
	WrongEnv bool
	// Why is the dead_letter_reason attribute: set when Retry parked the
	// message itself rather than Pub/Sub after the last attempt.
	Why string
}

// Archive stores m in dead_letters, once per message id and content (a
// redelivery is idempotent; a reused id with other data is a new dead
// letter, stored), and writes its dead_lettered audit row. home is the environment whose DLQ delivered m
// ("" skips the env check). A message from another environment is archived
// too (nothing is lost): the caller raises the alarm. An error means the
// store could not be written: the caller nacks and Pub/Sub redelivers. New
// is meaningful even with an error: the row went in but its audit row did
// not (the redelivery writes it).
func Archive(ctx context.Context, s store.Store, home config.Env, m message.Message) (Archived, error) {
	d, decodeErr := FromMessage(m)
	a := Archived{DeadLetter: d, DecodeErr: decodeErr, Env: m.Attributes[publish.AttrEnv], Why: m.Attributes[AttrDeadLetterReason]}
	a.WrongEnv = (home != "" && a.Env != "" && a.Env != string(home)) || a.Why == failure.ReasonWrongEnv
	inserted, err := s.AppendDeadLetter(ctx, d)
	if err != nil {
		return a, fmt.Errorf("archive dead letter %s: %w", m.ID, err)
	}
	a.New = inserted
	audit := store.Audit{
		ID:          archiveAuditID(d.MessageID, Fingerprint(d.Data)),
		EventID:     d.EventID,
		Fingerprint: Fingerprint(d.Data),
		RecordType:  d.RecordType,
		RecordID:    d.RecordID,
		Outcome:     store.OutcomeDeadLetter,
		Stage:       store.StageDLQ,
		MessageID:   d.MessageID,
		Detail:      auditDetail(d, a),
	}
	if !inserted {
		// A redelivery. The first delivery may have stored the row and then
		// failed before its audit row (database gone in between): write it
		// now if it is missing.
		trail, err := s.AuditTrail(ctx, d.RecordType, d.RecordID)
		if err != nil {
			return a, fmt.Errorf("audit of dead letter %s: %w", m.ID, err)
		}
		for _, t := range trail {
			if t.ID == audit.ID {
				return a, nil
			}
		}
	}
	if err := s.AppendAudit(ctx, audit); err != nil {
		return a, fmt.Errorf("audit dead letter %s: %w", m.ID, err)
	}
	return a, nil
}

func auditDetail(d store.DeadLetter, a Archived) string {
	var b strings.Builder
	fmt.Fprintf(&b, "dead-lettered at stage %s: %s after %d delivery attempt(s)", d.Stage, d.Reason, d.DeliveryAttempts)
	if d.Subscription != "" {
		fmt.Fprintf(&b, " on %s", d.Subscription)
	}
	if a.Why != "" {
		fmt.Fprintf(&b, "; parked by Retry: %s", a.Why)
	}
	if a.WrongEnv {
		fmt.Fprintf(&b, "; from another environment (env attribute %q)", a.Env)
	}
	return truncateBytes(b.String(), maxDetailBytes)
}
