package store

import (
	"context"
	"errors"
	"fmt"
	"unicode/utf8"
)

// The database's answers are classified, not lumped together (SPEC §6).
// A driver wraps every error it returns in one of these, from one table of
// server error numbers (shared/store/mysql/errors.go), so every stage
// decides the same way:
//   - ErrUnavailable: the database, not the message (connection lost or
//     refused, too many connections, read-only during a failover, deadlock,
//     lock-wait timeout): retry.
//   - *RefusedError (errors.Is ErrRefused): the server refused the
//     statement for its content (data too long, a JSON constraint, packet
//     too large, an illegal mix of collations, ...). Retrying the same
//     message cannot help: reject it with RefusedError.Reason.
//   - ErrUnclassified: a server error number the table does not know.
//     Retried by default, and said so, so that a new number shows up in the
//     logs and audit instead of being silently parked or dropped.
var (
	// ErrRefused matches every *RefusedError.
	ErrRefused = errors.New("statement refused by the database")
	// ErrUnclassified wraps a server error whose number is not in the table.
	ErrUnclassified = errors.New("unclassified database error (retried by default)")
	// ErrRecordTooLarge: a record's stored state would exceed its bound
	// (MaxStateBytes). Permanent for the change that would grow it.
	ErrRecordTooLarge = errors.New("record state too large")
)

// ReasonRefusedPrefix starts the reason of every refused statement:
// store_refused_data_too_long, store_refused_packet_too_large, ...
const ReasonRefusedPrefix = "store_refused_"

// MaxStateBytes bounds the folded record state stored with an accepted
// event (event_audit_log.state, MEDIUMBLOB up to 16 MiB): the whole insert,
// escaped, must stay under max_allowed_packet (16 MiB by default on MariaDB,
// 64 MiB on MySQL 8), and the state is copied into every accepted row.
const MaxStateBytes = 4 << 20

// MaxDetailBytes bounds every audit or dead-letter detail the backbone
// writes (TEXT holds 65,535 bytes): longer details are truncated at a UTF-8
// boundary, so a detail can never be the cause of a failure.
const MaxDetailBytes = 16 << 10

// RefusedError is the server refusing a statement for its content.
type RefusedError struct {
	Number int    // the server's error number, e.g. 1406
	Name   string // stable snake_case name of the refusal, e.g. data_too_long
	Err    error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("database refused the statement (%s, error %d): %v", e.Name, e.Number, e.Err)
}

func (e *RefusedError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrRefused) true for every refusal.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// Reason is the stable reason of a message rejected for this refusal.
func (e *RefusedError) Reason() string { return ReasonRefusedPrefix + e.Name }

// Class is how a caller must treat a store error.
type Class int

// Classes of store errors.
const (
	// ClassTransient: retry later; the message is not at fault.
	ClassTransient Class = iota
	// ClassRefused: reject the message (permanent), with the refusal's reason.
	ClassRefused
	// ClassUnclassified: an unknown server error; retried by default.
	ClassUnclassified
	// ClassTooLarge: the record's state would exceed MaxStateBytes.
	ClassTooLarge
)

func (c Class) String() string {
	switch c {
	case ClassRefused:
		return "refused"
	case ClassUnclassified:
		return "unclassified"
	case ClassTooLarge:
		return "too_large"
	default:
		return "transient"
	}
}

// Retryable reports whether an error of this class may succeed when tried
// again.
func (c Class) Retryable() bool { return c == ClassTransient || c == ClassUnclassified }

// Classify returns the class of a store error. Errors a driver did not
// classify (context ends, a bug) count as transient: retrying is the safe
// default, and a message that keeps failing ends in the dead-letter archive.
func Classify(err error) Class {
	switch {
	case err == nil:
		return ClassTransient
	case errors.Is(err, ErrRecordTooLarge):
		return ClassTooLarge
	case errors.Is(err, ErrRefused):
		return ClassRefused
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return ClassTransient
	case errors.Is(err, ErrUnclassified):
		return ClassUnclassified
	default:
		return ClassTransient
	}
}

// AsRefused extracts the refusal from err.
func AsRefused(err error) (*RefusedError, bool) {
	var re *RefusedError
	ok := errors.As(err, &re)
	return re, ok
}

// Truncate bounds s to max bytes, cut at a UTF-8 boundary, marking the cut
// with "…" (within the bound).
func Truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const mark = "…"
	cut := max - len(mark)
	if cut < 0 {
		cut = 0
	}
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}
