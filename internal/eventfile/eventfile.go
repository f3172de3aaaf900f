// Package eventfile reads the raw events an operator publishes from a file
// (`backbone publish`): one JSON object, a JSON array of objects, or JSON
// lines.
package eventfile

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/backbone-sync/backbone/shared/publish"
)

// Rejected is input that fails the local check: N events are not JSON.
type Rejected struct {
	N      int
	Detail string
}

func (e Rejected) Error() string { return e.Detail }

// Split turns a JSON object, a JSON array or JSON lines into messages, each
// with the ordering key of its record when it names one. Everything is
// checked before anything is returned, so that nothing is published unless
// everything can be; verbatim takes each line as it is, JSON or not (to
// test poison messages).
func Split(data []byte, verbatim bool) ([]publish.Message, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, errors.New("no events in the input")
	}
	var items [][]byte
	if trimmed[0] == '[' && !verbatim {
		var arr []json.RawMessage
		if err := json.Unmarshal(trimmed, &arr); err != nil {
			return nil, fmt.Errorf("input is not valid JSON (an array was expected): %w", err)
		}
		for _, a := range arr {
			items = append(items, a)
		}
	} else if json.Valid(trimmed) && !verbatim {
		items = [][]byte{trimmed}
	} else {
		sc := bufio.NewScanner(bytes.NewReader(trimmed))
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		line := 0
		var bad []string
		for sc.Scan() {
			line++
			l := bytes.TrimSpace(sc.Bytes())
			if len(l) == 0 {
				continue
			}
			if !verbatim && !json.Valid(l) {
				bad = append(bad, fmt.Sprint(line))
				continue
			}
			items = append(items, append([]byte(nil), l...))
		}
		if err := sc.Err(); err != nil {
			return nil, err
		}
		if len(bad) > 0 {
			return nil, Rejected{N: len(bad), Detail: fmt.Sprintf("line %s is not valid JSON (use --verbatim to publish it anyway)", strings.Join(bad, ", "))}
		}
	}
	msgs := make([]publish.Message, 0, len(items))
	for _, it := range items {
		var compact bytes.Buffer
		if json.Compact(&compact, it) == nil {
			it = compact.Bytes()
		}
		var key struct {
			RecordType string `json:"record_type"`
			RecordID   string `json:"record_id"`
		}
		m := publish.Message{Data: it}
		if json.Unmarshal(it, &key) == nil && key.RecordType != "" && key.RecordID != "" {
			m.OrderingKey = publish.OrderingKey(key.RecordType, key.RecordID)
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}
