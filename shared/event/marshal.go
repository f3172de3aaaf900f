package event

import (
	"bytes"
	"encoding/json"
)

// Marshal is json.Marshal without HTML escaping: the backbone never rewrites
// a value it stores or sends (SPEC §3), and json.Marshal turns `<`, `>` and
// `&` into \u003c, \u003e and \u0026 — six bytes for one, in strings and in
// json.RawMessage values alike. Use it for every document the backbone
// stores or publishes.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
