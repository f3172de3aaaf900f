package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"
)

// referenceDuplicateKey is the obvious, slow check: encoding/json's token
// stream, one key set per open object.
func referenceDuplicateKey(data []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		keys      map[string]bool
		expectKey bool
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		top := len(stack) - 1
		if top >= 0 && stack[top].keys != nil && stack[top].expectKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:top]
				continue
			}
			k := tok.(string)
			if stack[top].keys[k] {
				return true
			}
			stack[top].keys[k], stack[top].expectKey = true, false
			continue
		}
		if top >= 0 && stack[top].keys != nil {
			stack[top].expectKey = true
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{keys: map[string]bool{}, expectKey: true})
		case json.Delim('['):
			stack = append(stack, frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:top]
		}
	}
}

// FuzzDuplicateKeys: the byte scanner agrees with the token stream on every
// valid UTF-8 JSON document.
func FuzzDuplicateKeys(f *testing.F) {
	for _, s := range []string{
		`{"a":1,"a":2}`, `{"a":1,"\u0061":2}`, `{"a":{"b":1,"b":2}}`, `{"a":[{"b":1},{"b":2}]}`,
		`{"a":"}","b":"{\"a\":1,\"a\":2}"}`, `[{"x":1,"y":[1,2,{"x":1}],"x":3}]`, `{"k\\":1,"k\\\\":2,"k\\":3}`,
		`{"1":1,"2":2,"3":3,"4":4,"5":5,"6":6,"7":7,"8":8,"9":9,"10":10,"11":11,"12":12,"13":13,"14":14,"15":15,"16":16,"17":17,"5":0}`,
		`{}`, `[]`, `"a"`, `{"a":null,"b":true,"c":false,"d":-1.5e3}`, `{"\ud800":1,"\ufffd":2}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !utf8.Valid(data) || !json.Valid(data) {
			return // DecodeRaw refuses both before the scan
		}
		err := checkDuplicateKeys(data)
		var ve *ValidationError
		if err != nil && (!errors.As(err, &ve) || ve.Reason != ReasonDuplicateKey) {
			t.Fatalf("%q: unexpected error %v", data, err)
		}
		if want := referenceDuplicateKey(data); (err != nil) != want {
			t.Fatalf("%q: scanner says duplicate=%v, token stream says %v", data, err != nil, want)
		}
	})
}
