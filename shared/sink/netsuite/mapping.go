package netsuite

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/backbone-sync/backbone/shared/event"
)

// Mapping says how a backbone record becomes a NetSuite record. It is read
// from NETSUITE_RECORD_MAPPING (JSON) and laid over DefaultMapping:
//
//	{
//	  "types": {
//	    "customer":    {"type": "customer", "fields": {"tier": "custentity_tier", "internal_note": ""}},
//	    "sales_order": {"type": "salesOrder", "only_mapped": true, "fields": {"memo": "memo"}}
//	  },
//	  "strict": false,
//	  "field_names": "camel"
//	}
//
// types: per backbone record_type, the NetSuite record type ("type") and
// field renames ("fields": backbone field → NetSuite field; "" drops the
// field). With "only_mapped", fields not listed are not sent. An entry
// replaces the default entry of the same record_type whole.
//
// strict: a record_type without an entry is a permanent failure
// (unmapped_record_type) instead of being sent under a derived type.
//
// field_names: how a field without a rename is named. "camel" (default)
// turns snake_case into NetSuite's lowerCamelCase (company_name →
// companyName) and leaves names without '_' and NetSuite custom field ids
// (custentity_*, custbody_*, custcol_*, custitem_*, custrecord_*,
// custevent_*) as they are; "verbatim" sends every name unchanged.
//
// Defaults (DefaultMapping): customer, contact, vendor, employee, partner,
// invoice → the NetSuite record of the same name; sales_order → salesOrder,
// purchase_order → purchaseOrder, item_fulfillment → itemFulfillment; any
// other record_type → its lowerCamelCase (custom record types, customrecord_*,
// unchanged); fields named by the "camel" rule. Values are sent as they are:
// null clears a field (SPEC §7). docs/sinks.md has the full description.
type Mapping struct {
	Types      map[string]TypeMapping `json:"types"`
	Strict     bool                   `json:"strict"`
	FieldNames string                 `json:"field_names"`
}

// TypeMapping maps one backbone record type.
type TypeMapping struct {
	Type       string            `json:"type"`
	Fields     map[string]string `json:"fields"`
	OnlyMapped bool              `json:"only_mapped"`
}

// Field naming rules.
const (
	FieldNamesCamel    = "camel"
	FieldNamesVerbatim = "verbatim"
)

// DefaultMapping is the mapping when NETSUITE_RECORD_MAPPING is empty.
func DefaultMapping() Mapping {
	types := map[string]TypeMapping{}
	for _, t := range []string{"customer", "contact", "vendor", "employee", "partner", "invoice",
		"sales_order", "purchase_order", "item_fulfillment"} {
		types[t] = TypeMapping{Type: camel(t)}
	}
	return Mapping{Types: types, FieldNames: FieldNamesCamel}
}

var (
	recordTypeRe   = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
	netsuiteNameRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,99}$`)
)

// ParseMapping reads NETSUITE_RECORD_MAPPING over the defaults. Unknown keys,
// bad names and two fields renamed to one NetSuite field are errors, so a
// typo stops the sink at start-up instead of misrouting data.
func ParseMapping(s string) (Mapping, error) {
	m := DefaultMapping()
	if strings.TrimSpace(s) == "" {
		return m, nil
	}
	var user Mapping
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&user); err != nil {
		return m, fmt.Errorf("NETSUITE_RECORD_MAPPING is not valid: %w (see docs/sinks.md)", err)
	}
	if dec.More() {
		return m, fmt.Errorf("NETSUITE_RECORD_MAPPING is not valid: trailing data after the JSON object")
	}
	switch user.FieldNames {
	case "":
	case FieldNamesCamel, FieldNamesVerbatim:
		m.FieldNames = user.FieldNames
	default:
		return m, fmt.Errorf("NETSUITE_RECORD_MAPPING field_names=%q is not valid: accepted values are camel, verbatim", user.FieldNames)
	}
	m.Strict = user.Strict
	if user.Strict {
		// Strict means only what the operator listed: defaults would let
		// unlisted types through under their default names.
		m.Types = map[string]TypeMapping{}
	}
	for rt, tm := range user.Types {
		if !recordTypeRe.MatchString(rt) {
			return m, fmt.Errorf("NETSUITE_RECORD_MAPPING types: %q is not a record_type (^[a-z][a-z0-9_]{0,63}$)", rt)
		}
		if tm.Type == "" {
			tm.Type = m.deriveType(rt)
		}
		if !netsuiteNameRe.MatchString(tm.Type) {
			return m, fmt.Errorf("NETSUITE_RECORD_MAPPING types.%s.type=%q is not a NetSuite record type name", rt, tm.Type)
		}
		seen := map[string]string{}
		for _, from := range slices.Sorted(maps.Keys(tm.Fields)) {
			to := tm.Fields[from]
			if from == "" {
				return m, fmt.Errorf("NETSUITE_RECORD_MAPPING types.%s.fields: empty field name", rt)
			}
			if to == "" {
				continue
			}
			if !netsuiteNameRe.MatchString(to) {
				return m, fmt.Errorf("NETSUITE_RECORD_MAPPING types.%s.fields.%s=%q is not a NetSuite field name", rt, from, to)
			}
			if other, dup := seen[to]; dup {
				return m, fmt.Errorf("NETSUITE_RECORD_MAPPING types.%s.fields: %s and %s both map to %s", rt, other, from, to)
			}
			seen[to] = from
		}
		m.Types[rt] = tm
	}
	return m, nil
}

// mappingError is a permanent failure to map a record; reason is its code.
type mappingError struct{ reason, detail string }

func (e *mappingError) Error() string { return e.detail }

// Apply returns the NetSuite record type and the request body for a record's
// changes. The body keeps each value's JSON as it came (null included).
func (m Mapping) Apply(recordType string, changes map[string]json.RawMessage) (string, []byte, error) {
	tm, ok := m.Types[recordType]
	if !ok {
		if m.Strict {
			return "", nil, &mappingError{"unmapped_record_type",
				fmt.Sprintf("record_type %q has no entry in NETSUITE_RECORD_MAPPING (strict)", recordType)}
		}
		tm = TypeMapping{Type: m.deriveType(recordType)}
	}
	out := make(map[string]json.RawMessage, len(changes))
	from := make(map[string]string, len(changes))
	for _, field := range slices.Sorted(maps.Keys(changes)) {
		to, renamed := tm.Fields[field]
		switch {
		case renamed && to == "":
			continue
		case renamed:
		case tm.OnlyMapped:
			continue
		default:
			to = m.deriveField(field)
		}
		if other, dup := from[to]; dup {
			return "", nil, &mappingError{"mapping_collision",
				fmt.Sprintf("%s fields %s and %s both map to NetSuite field %s", recordType, other, field, to)}
		}
		from[to] = field
		v := changes[field]
		if len(bytes.TrimSpace(v)) == 0 {
			v = json.RawMessage("null")
		}
		out[to] = v
	}
	if len(out) == 0 {
		return tm.Type, nil, nil
	}
	body, err := event.Marshal(out) // never HTML-escaped (SPEC §3)
	if err != nil {
		return "", nil, &mappingError{"invalid_changes", fmt.Sprintf("%s changes are not valid JSON: %v", recordType, err)}
	}
	return tm.Type, body, nil
}

func (m Mapping) deriveType(recordType string) string {
	if strings.HasPrefix(recordType, "customrecord") {
		return recordType
	}
	return camel(recordType)
}

// customFieldPrefixes are NetSuite custom field id prefixes: such ids are
// used verbatim in REST.
var customFieldPrefixes = []string{"custentity", "custbody", "custcol", "custitem", "custrecord", "custevent"}

func (m Mapping) deriveField(field string) string {
	if m.FieldNames == FieldNamesVerbatim || !strings.Contains(field, "_") {
		return field
	}
	for _, p := range customFieldPrefixes {
		if strings.HasPrefix(field, p) {
			return field
		}
	}
	return camel(field)
}

// camel turns snake_case into lowerCamelCase: sales_order → salesOrder.
func camel(s string) string {
	parts := strings.Split(s, "_")
	var b strings.Builder
	for i, p := range parts {
		if p == "" {
			continue
		}
		if i == 0 || b.Len() == 0 {
			b.WriteString(p)
			continue
		}
		r, n := utf8.DecodeRuneInString(p)
		b.WriteRune(unicode.ToUpper(r))
		b.WriteString(p[n:])
	}
	return b.String()
}
