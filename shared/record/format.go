package record

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/backbone-sync/backbone/shared/event"
)

// The state's JSON. The merge rewrites a record's state on every accepted
// event, so its size is paid in the projection row's update, the redo and
// undo logs, and the encode and decode of every merge.
//
// Format 2, written: each field is one array, its source an index into the
// state's list of sources, its time microseconds since the epoch, and its
// per-source versions aligned with that list (0: that source never changed
// it).
//
//	{"format":2,"version":5,"event_id":"…","sources":["netsuite","suitex"],
//	 "fields":{"email":["a@x",5,0,1764633600123456,[5,3]]}}
//
// Format 1, read only (records stored before it, so they need no rebuild):
//
//	{"format":1,"version":5,"event_id":"…","fields":{"email":{"value":"a@x",
//	 "version":5,"source":"netsuite","timestamp":"…","by_source":{"netsuite":5,"suitex":3}}}}
//
// A state in another format, or one that does not decode, is rebuilt from
// the record's events (Parse).
const (
	stateFormat   = 2
	stateFormatV1 = 1
)

func knownFormat(f int) bool { return f == stateFormat || f == stateFormatV1 }

// MarshalJSON writes format 2. Fields and sources come out in name order:
// one state, one encoding.
func (s State) MarshalJSON() ([]byte, error) {
	var sources []string
	for _, f := range s.Fields {
		if f == nil {
			return nil, errors.New("record state: a field without a value")
		}
		sources = append(sources, f.Source)
		for src := range f.BySource {
			sources = append(sources, src)
		}
	}
	slices.Sort(sources)
	sources = slices.Compact(sources)
	index := make(map[string]int, len(sources))
	for i, src := range sources {
		index[src] = i
	}
	b := make([]byte, 0, 96+len(s.Fields)*64)
	b = append(b, `{"format":2,"version":`...)
	b = strconv.AppendUint(b, s.Version, 10)
	b = append(b, `,"event_id":`...)
	b = appendString(b, s.EventID)
	b = append(b, `,"sources":[`...)
	for i, src := range sources {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, src)
	}
	b = append(b, `],"fields":{`...)
	for i, name := range slices.Sorted(maps.Keys(s.Fields)) {
		f := s.Fields[name]
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, name)
		b = append(b, ":["...)
		if len(f.Value) == 0 {
			b = append(b, "null"...)
		} else {
			b = append(b, f.Value...)
		}
		b = append(b, ',')
		b = strconv.AppendUint(b, f.Version, 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, int64(index[f.Source]), 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, f.Timestamp.UnixMicro(), 10)
		b = append(b, ",["...)
		for j, src := range sources {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, f.BySource[src], 10)
		}
		b = append(b, "]]"...)
	}
	// encoding/json checks what a MarshalJSON returns: a value that is not
	// JSON fails the encode there.
	return append(b, "}}"...), nil
}

// stateV1 is format 1's layout: State's own field tags, without its
// methods.
type stateV1 State

// stateV2 is format 2's layout, before each field's array is read.
type stateV2 struct {
	Format  int                          `json:"format"`
	Version uint64                       `json:"version"`
	EventID string                       `json:"event_id"`
	Sources []string                     `json:"sources"`
	Fields  map[string][]json.RawMessage `json:"fields"`
}

// UnmarshalJSON reads format 2 or format 1. A document of another format
// decodes with that Format (Parse refuses it); one that breaks its format's
// rules is an error.
func (s *State) UnmarshalJSON(b []byte) error {
	var probe struct {
		Format int `json:"format"`
	}
	// What MarshalJSON writes starts so; anything else is looked at whole.
	if bytes.HasPrefix(b, []byte(`{"format":2,`)) {
		probe.Format = stateFormat
	} else if err := json.Unmarshal(b, &probe); err != nil {
		return err
	}
	switch probe.Format {
	case stateFormatV1:
		var v1 stateV1
		if err := json.Unmarshal(b, &v1); err != nil {
			return err
		}
		for name, f := range v1.Fields {
			if f == nil || len(f.Value) == 0 {
				return fmt.Errorf("record state, field %q: no value", name)
			}
			// 0 is "never", as a missing source is (format 2 has no other).
			maps.DeleteFunc(f.BySource, func(_ string, v uint64) bool { return v == 0 })
		}
		*s = State(v1)
		return nil
	case stateFormat:
	default:
		*s = State{Format: probe.Format}
		return nil
	}
	var v2 stateV2
	if err := json.Unmarshal(b, &v2); err != nil {
		return err
	}
	out := State{Format: stateFormat, Version: v2.Version, EventID: v2.EventID, Fields: make(map[string]*Field, len(v2.Fields))}
	for name, els := range v2.Fields {
		f, err := decodeField(els, v2.Sources)
		if err != nil {
			return fmt.Errorf("record state, field %q: %w", name, err)
		}
		out.Fields[name] = f
	}
	*s = out
	return nil
}

// decodeField reads one format-2 field: [value, version, source,
// timestamp, by_source].
func decodeField(els []json.RawMessage, sources []string) (*Field, error) {
	if len(els) != 5 {
		return nil, fmt.Errorf("%d elements, want 5", len(els))
	}
	version, err := strconv.ParseUint(string(els[1]), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("version: %w", err)
	}
	src, err := strconv.Atoi(string(els[2]))
	if err != nil || src < 0 || src >= len(sources) {
		return nil, fmt.Errorf("source %s of %d", els[2], len(sources))
	}
	us, err := strconv.ParseInt(string(els[3]), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("timestamp: %w", err)
	}
	f := &Field{Value: els[0], Version: version, Source: sources[src],
		Timestamp: event.NewTime(time.UnixMicro(us)), BySource: make(map[string]uint64, len(sources))}
	if err := readVersions(els[4], sources, f.BySource); err != nil {
		return nil, fmt.Errorf("by_source %s for %d sources: %w", els[4], len(sources), err)
	}
	return f, nil
}

// readVersions reads by_source, an array of exactly one unsigned integer
// per source, into by (zeros left out).
func readVersions(raw []byte, sources []string, by map[string]uint64) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) < 2 || raw[0] != '[' || raw[len(raw)-1] != ']' {
		return errors.New("not an array")
	}
	body := bytes.TrimSpace(raw[1 : len(raw)-1])
	n := 0
	for len(body) > 0 {
		num, rest, _ := bytes.Cut(body, []byte{','})
		v, err := strconv.ParseUint(string(bytes.TrimSpace(num)), 10, 64)
		if err != nil || n >= len(sources) {
			return errors.New("not one version per source")
		}
		if v > 0 {
			by[sources[n]] = v
		}
		n++
		if len(rest) == 0 && len(num) < len(body) {
			return errors.New("a trailing comma")
		}
		body = rest
	}
	if n != len(sources) {
		return errors.New("not one version per source")
	}
	return nil
}

// appendString appends s as a JSON string. Only what JSON requires is
// escaped: the quote, the backslash and control characters.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
