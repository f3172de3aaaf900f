package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Limits of a raw event (SPEC §3).
const (
	// MaxRawBytes is the largest raw event data accepted.
	MaxRawBytes = 256 << 10
	// MaxRecordIDChars bounds record_id in characters, not bytes: the column
	// is VARCHAR(191) utf8mb4.
	MaxRecordIDChars = 191
	// MaxSnapshotRefChars bounds full_snapshot_ref (VARCHAR(1024)).
	MaxSnapshotRefChars = 1024
	// MaxFieldNameChars bounds a key of `changes`. SPEC §3 is silent; field
	// names are identifiers of the two systems, and a bound keeps audit
	// details and logs sane.
	MaxFieldNameChars = 255
	// MaxBaseVersion is the largest base_version accepted: 2^53-1, the largest
	// integer RFC 8785 (which writes numbers as IEEE doubles) keeps exact, so
	// two different base versions can never share a fingerprint.
	MaxBaseVersion = 1<<53 - 1
)

// Validation reasons: stable codes put in the error message's `reason`
// (operators filter on them; never rename one).
const (
	ReasonTooLarge           = "too_large"
	ReasonInvalidUTF8        = "invalid_utf8"
	ReasonInvalidJSON        = "invalid_json"
	ReasonNotObject          = "not_object"
	ReasonDuplicateKey       = "duplicate_key"
	ReasonUnknownField       = "unknown_field"
	ReasonMissingField       = "missing_field"
	ReasonWrongType          = "wrong_type"
	ReasonInvalidID          = "invalid_id"
	ReasonInvalidRecordType  = "invalid_record_type"
	ReasonInvalidRecordID    = "invalid_record_id"
	ReasonUnknownSource      = "unknown_source"
	ReasonInvalidTimestamp   = "invalid_timestamp"
	ReasonInvalidBaseVersion = "invalid_base_version"
	ReasonEmptyChanges       = "empty_changes"
	ReasonInvalidFieldName   = "invalid_field_name"
	ReasonInvalidChangeValue = "invalid_change_value"
	ReasonInvalidSnapshotRef = "invalid_full_snapshot_ref"
)

// ValidationError says why a raw event was refused. Reason is one of the
// Reason* codes; Detail is for humans, quotes at most a short prefix of the
// offending input, and never the whole message.
type ValidationError struct {
	Reason string
	Field  string // the top-level field concerned, when there is one
	Detail string
}

func (e *ValidationError) Error() string {
	return "invalid raw event: " + e.Reason + ": " + e.Detail
}

// AsValidation extracts a *ValidationError from err.
func AsValidation(err error) (*ValidationError, bool) {
	var ve *ValidationError
	ok := errors.As(err, &ve)
	return ve, ok
}

func invalid(reason, field, format string, a ...any) error {
	return &ValidationError{Reason: reason, Field: field, Detail: fmt.Sprintf(format, a...)}
}

// rawFields are the top-level fields of a raw event, exactly as spelled.
var rawFields = []string{"id", "record_type", "record_id", "source", "timestamp", "base_version", "changes", "full_snapshot_ref"}

var (
	recordTypeRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
	// rfc3339RE is the RFC 3339 date-time grammar. time.Parse alone is more
	// lenient (it takes a comma before the fraction, for one).
	rfc3339RE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,})?(Z|[+-]\d{2}:\d{2})$`)
	// uintRE is a JSON integer without sign, fraction or exponent.
	uintRE = regexp.MustCompile(`^(0|[1-9][0-9]*)$`)
)

// DecodeRaw validates data as a raw event (SPEC §3) and decodes it. sources
// are the accepted sources. The decoder is strict where encoding/json is
// lenient: field names must match exactly (encoding/json folds case),
// duplicate keys are refused at every depth (encoding/json keeps the last,
// so two readers could see two different events), and every field has
// exactly its JSON type.
//
// The error is always a *ValidationError. On error the returned Raw holds
// the fields validated before the failure — record_type and record_id are
// checked first — so a rejection can still be audited against its record.
//
// `id` and `full_snapshot_ref` may be absent or null; an empty
// full_snapshot_ref counts as absent. The id is returned in canonical
// lower-case form; an absent id stays empty (see DerivedID). Change values
// are kept byte for byte as sent.
func DecodeRaw(data []byte, sources []string) (Raw, error) {
	var r Raw
	if len(data) > MaxRawBytes {
		return r, invalid(ReasonTooLarge, "", "data is %d bytes, the limit is %d", len(data), MaxRawBytes)
	}
	if !utf8.Valid(data) {
		return r, invalid(ReasonInvalidUTF8, "", "data is not valid UTF-8")
	}
	if err := prescan(data); err != nil {
		return r, err
	}
	if !json.Valid(data) {
		return r, invalid(ReasonInvalidJSON, "", "data is not valid JSON: %s", syntaxDetail(data))
	}
	if err := checkDuplicateKeys(data); err != nil {
		return r, err
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return r, invalid(ReasonNotObject, "", "data must be a JSON object, got %s", jsonKind(trimmed))
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return r, invalid(ReasonInvalidJSON, "", "data is not a JSON object: %v", err)
	}

	// record_type and record_id first, so later failures know the record.
	if v, ok := top["record_type"]; ok {
		s, err := stringField("record_type", v)
		if err != nil {
			return r, err
		}
		if !recordTypeRE.MatchString(s) {
			return r, invalid(ReasonInvalidRecordType, "record_type", "record_type %s does not match ^[a-z][a-z0-9_]{0,63}$", quote(s))
		}
		r.RecordType = s
	}
	if v, ok := top["record_id"]; ok {
		s, err := stringField("record_id", v)
		if err != nil {
			return r, err
		}
		if err := checkRecordID(s); err != nil {
			return r, err
		}
		r.RecordID = s
	}
	for k := range top {
		if !slices.Contains(rawFields, k) {
			return r, invalid(ReasonUnknownField, k, "unknown field %s: accepted fields are %s", quote(k), strings.Join(rawFields, ", "))
		}
	}
	for _, k := range []string{"record_type", "record_id", "source", "timestamp", "base_version", "changes"} {
		if _, ok := top[k]; !ok {
			return r, invalid(ReasonMissingField, k, "required field %s is missing", k)
		}
	}

	s, err := stringField("source", top["source"])
	if err != nil {
		return r, err
	}
	if !slices.Contains(sources, s) {
		return r, invalid(ReasonUnknownSource, "source", "source %s is not one of the configured sources (%s)", quote(s), strings.Join(sources, ", "))
	}
	r.Source = s

	if r.Timestamp, err = decodeTimestamp(top["timestamp"]); err != nil {
		return r, err
	}
	if r.BaseVersion, err = decodeBaseVersion(top["base_version"]); err != nil {
		return r, err
	}
	if r.Changes, err = decodeChanges(top["changes"]); err != nil {
		return r, err
	}
	if v, ok := top["id"]; ok && !isNull(v) {
		s, err := stringField("id", v)
		if err != nil {
			return r, err
		}
		u, err := uuid.Parse(s)
		if len(s) != 36 || err != nil || u == uuid.Nil {
			return r, invalid(ReasonInvalidID, "id", "id %s is not a UUID (8-4-4-4-12 hex digits, not all zero)", quote(s))
		}
		r.ID = u.String()
	}
	if v, ok := top["full_snapshot_ref"]; ok && !isNull(v) {
		s, err := stringField("full_snapshot_ref", v)
		if err != nil {
			return r, err
		}
		if n := utf8.RuneCountInString(s); n > MaxSnapshotRefChars {
			return r, invalid(ReasonInvalidSnapshotRef, "full_snapshot_ref", "full_snapshot_ref is %d characters, the limit is %d", n, MaxSnapshotRefChars)
		}
		if s != "" {
			r.FullSnapshotRef = &s
		}
	}
	return r, nil
}

func checkRecordID(s string) error {
	n := utf8.RuneCountInString(s)
	if n < 1 || n > MaxRecordIDChars {
		return invalid(ReasonInvalidRecordID, "record_id", "record_id is %d characters, want 1 to %d", n, MaxRecordIDChars)
	}
	for i, c := range s {
		if unicode.IsControl(c) {
			return invalid(ReasonInvalidRecordID, "record_id", "record_id has a control character U+%04X at byte %d", c, i)
		}
	}
	return nil
}

func decodeTimestamp(v json.RawMessage) (Time, error) {
	s, err := stringField("timestamp", v)
	if err != nil {
		return Time{}, err
	}
	if !rfc3339RE.MatchString(s) {
		return Time{}, invalid(ReasonInvalidTimestamp, "timestamp", "timestamp %s is not an RFC 3339 date-time", quote(s))
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return Time{}, invalid(ReasonInvalidTimestamp, "timestamp", "timestamp %s is not a valid RFC 3339 date-time", quote(s))
	}
	// time.Parse takes any two-digit offset (+24:00, +23:60); RFC 3339
	// zones are within ±23:59.
	if z := s[len(s)-1]; z != 'Z' {
		hh, _ := strconv.Atoi(s[len(s)-5 : len(s)-3])
		mm, _ := strconv.Atoi(s[len(s)-2:])
		if hh > 23 || mm > 59 {
			return Time{}, invalid(ReasonInvalidTimestamp, "timestamp", "timestamp %s has the zone offset %s: offsets are within ±23:59", quote(s), s[len(s)-6:])
		}
	}
	// The store keeps DATETIME(6): years 1000 to 9999, in UTC.
	if y := t.UTC().Year(); y < 1000 || y > 9999 {
		return Time{}, invalid(ReasonInvalidTimestamp, "timestamp", "timestamp %s is out of range (years 1000 to 9999 UTC)", quote(s))
	}
	return NewTime(t), nil
}

func decodeBaseVersion(v json.RawMessage) (uint64, error) {
	b := bytes.TrimSpace(v)
	if len(b) == 0 || !(b[0] == '-' || (b[0] >= '0' && b[0] <= '9')) {
		return 0, invalid(ReasonWrongType, "base_version", "base_version must be a JSON integer, got %s", jsonKind(b))
	}
	if b[0] == '-' {
		return 0, invalid(ReasonInvalidBaseVersion, "base_version", "base_version %s is negative: it must be an integer >= 0", quote(string(b)))
	}
	if !uintRE.Match(b) {
		return 0, invalid(ReasonInvalidBaseVersion, "base_version", "base_version %s is not an integer (no fraction or exponent)", quote(string(b)))
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil || n > MaxBaseVersion {
		return 0, invalid(ReasonInvalidBaseVersion, "base_version", "base_version %s is over the limit %d", quote(string(b)), uint64(MaxBaseVersion))
	}
	return n, nil
}

func decodeChanges(v json.RawMessage) (map[string]json.RawMessage, error) {
	b := bytes.TrimSpace(v)
	if len(b) == 0 || b[0] != '{' {
		return nil, invalid(ReasonWrongType, "changes", "changes must be a JSON object, got %s", jsonKind(b))
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, invalid(ReasonWrongType, "changes", "changes must be a JSON object: %v", err)
	}
	if len(m) == 0 {
		return nil, invalid(ReasonEmptyChanges, "changes", "changes is empty: a raw event changes at least one field")
	}
	for k, val := range m {
		if n := utf8.RuneCountInString(k); n < 1 || n > MaxFieldNameChars {
			return nil, invalid(ReasonInvalidFieldName, "changes", "field name %s is %d characters, want 1 to %d", quote(k), n, MaxFieldNameChars)
		}
		for _, c := range k {
			if unicode.IsControl(c) {
				return nil, invalid(ReasonInvalidFieldName, "changes", "field name %s has a control character", quote(k))
			}
		}
		// Numbers must keep their value in RFC 8785 form, or equality,
		// no-op and fingerprint would see another number than the source's.
		if err := checkNumbers(k, val); err != nil {
			return nil, err
		}
		// Every value must have an RFC 8785 form (the fingerprint and the
		// merge's equality test need it).
		if _, err := Canonical(val); err != nil {
			return nil, invalid(ReasonInvalidChangeValue, "changes", "value of field %s has no canonical JSON form: %v", quote(k), err)
		}
		m[k] = bytes.TrimSpace(val)
	}
	return m, nil
}

// stringField decodes a JSON string; anything else is a wrong_type.
func stringField(name string, v json.RawMessage) (string, error) {
	b := bytes.TrimSpace(v)
	if len(b) == 0 || b[0] != '"' {
		return "", invalid(ReasonWrongType, name, "%s must be a JSON string, got %s", name, jsonKind(b))
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return "", invalid(ReasonWrongType, name, "%s must be a JSON string: %v", name, err)
	}
	return s, nil
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

// jsonKind names the JSON type of a value, for error details.
func jsonKind(b []byte) string {
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

// quote renders a short, escaped prefix of s for an error detail, so a
// rejected message cannot write megabytes or control characters into logs.
func quote(s string) string {
	const max = 64
	if utf8.RuneCountInString(s) <= max {
		return strconv.Quote(s)
	}
	r := []rune(s)
	return strconv.Quote(string(r[:max])) + "…"
}

func syntaxDetail(data []byte) string {
	var v any
	err := json.Unmarshal(data, &v)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s at byte %d", se.Error(), se.Offset)
	}
	if err != nil {
		return err.Error()
	}
	return "unknown"
}

// checkDuplicateKeys walks every object of data (already valid UTF-8 and
// valid JSON) and
// refuses a key that appears twice in one object, comparing keys as
// decoded (`"a"` and `"\u0061"` are the same key). It scans the bytes
// itself: encoding/json's Decoder.Token allocated for every token, a sixth
// of a merge's allocations.
func checkDuplicateKeys(data []byte) error {
	var (
		stack     []keyFrame
		expectKey bool
	)
	for i := 0; i < len(data); {
		switch c := data[i]; c {
		case '{':
			stack = append(stack, keyFrame{object: true})
			expectKey = true
			i++
		case '[':
			stack = append(stack, keyFrame{})
			expectKey = false
			i++
		case '}', ']':
			stack = stack[:len(stack)-1]
			expectKey = false
			i++
		case ',':
			expectKey = len(stack) > 0 && stack[len(stack)-1].object
			i++
		case '"':
			end, escaped := stringEnd(data, i)
			if expectKey {
				key := data[i+1 : end-1]
				if escaped {
					var k string
					_ = json.Unmarshal(data[i:end], &k) // valid JSON: cannot fail
					key = []byte(k)
				}
				top := len(stack) - 1
				if stack[top].seen(key) {
					field, where := "", "the top-level object"
					if top == 0 {
						field = string(key)
					} else {
						where = fmt.Sprintf("an object at depth %d", len(stack))
					}
					return invalid(ReasonDuplicateKey, field, "key %s appears twice in %s", quote(string(key)), where)
				}
				expectKey = false
			}
			i = end
		default: // whitespace, ':', a number, true, false, null
			i++
		}
	}
	return nil
}

// keyFrame is one open object (or array) of checkDuplicateKeys. Keys are
// slices of the input (decoded only when escaped); small objects compare
// them in a list, large ones in a set.
type keyFrame struct {
	object bool
	keys   [][]byte
	set    map[string]struct{}
}

// seen reports whether key was already in this object, and adds it.
func (f *keyFrame) seen(key []byte) bool {
	const listMax = 16
	if f.set != nil {
		if _, dup := f.set[string(key)]; dup {
			return true
		}
		f.set[string(key)] = struct{}{}
		return false
	}
	for _, k := range f.keys {
		if bytes.Equal(k, key) {
			return true
		}
	}
	f.keys = append(f.keys, key)
	if len(f.keys) > listMax {
		f.set = make(map[string]struct{}, 2*listMax)
		for _, k := range f.keys {
			f.set[string(k)] = struct{}{}
		}
		f.keys = nil
	}
	return false
}

// stringEnd returns the index just past the JSON string starting at
// data[i] (a quote), and whether it holds an escape.
func stringEnd(data []byte, i int) (end int, escaped bool) {
	for j := i + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			return j + 1, escaped
		}
	}
	return len(data), escaped
}
