package eventfile

import (
	"strings"
	"testing"
)

func TestSplitEvents(t *testing.T) {
	t.Parallel()
	obj := `{"record_type":"customer","record_id":"C-1","x":1}`
	cases := []struct {
		name, in string
		verbatim bool
		want     []string // data
		keys     []string
		err      string
	}{
		{name: "object", in: "  " + obj + "\n", want: []string{obj}, keys: []string{"customer:C-1"}},
		{name: "pretty object", in: "{\n \"record_type\": \"order\",\n \"record_id\": \"O:1\"\n}", want: []string{`{"record_type":"order","record_id":"O:1"}`}, keys: []string{"order:O:1"}},
		{name: "array", in: `[` + obj + `, {"a":2}]`, want: []string{obj, `{"a":2}`}, keys: []string{"customer:C-1", ""}},
		{name: "lines", in: obj + "\n\n{\"a\": 2}\n", want: []string{obj, `{"a":2}`}, keys: []string{"customer:C-1", ""}},
		{name: "bad line", in: obj + "\n{nope\n", err: "line 2"},
		{name: "verbatim poison", in: obj + "\n{nope\n", verbatim: true, want: []string{obj, "{nope"}, keys: []string{"customer:C-1", ""}},
		{name: "empty", in: " \n", err: "no events"},
		{name: "bad array", in: `[{"a":1},`, err: "not valid JSON"},
	}
	for _, c := range cases {
		got, err := Split([]byte(c.in), c.verbatim)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err = %v, want %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if len(got) != len(c.want) {
			t.Errorf("%s: %d messages, want %d", c.name, len(got), len(c.want))
			continue
		}
		for i := range got {
			if string(got[i].Data) != c.want[i] || got[i].OrderingKey != c.keys[i] {
				t.Errorf("%s[%d] = %q key %q", c.name, i, got[i].Data, got[i].OrderingKey)
			}
		}
	}
}
