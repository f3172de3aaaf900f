package tail_test

import (
	"fmt"
	"testing"

	"github.com/backbone-sync/backbone/internal/tail"
)

func TestBufferKeepsTheLastMaxBytes(t *testing.T) {
	b := &tail.Buffer{Max: 8}
	fmt.Fprint(b, "0123456789")
	fmt.Fprint(b, "ab")
	if got := b.String(); got != "456789ab" {
		t.Fatalf("%q, want the last 8 bytes", got)
	}
}

func TestLastLineSkipsBlankLines(t *testing.T) {
	for in, want := range map[string]string{
		"a\nb\n\n  \n": "b",
		"one":          "one",
		"":             "no output",
	} {
		if got := tail.LastLine(in); got != want {
			t.Errorf("LastLine(%q) = %q, want %q", in, got, want)
		}
	}
}
