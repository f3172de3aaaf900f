// Package tail keeps the end of a child process's output: enough to say in
// one line why it failed, or to show a test what it printed last.
package tail

import (
	"strings"
	"sync"
)

// Buffer keeps the last Max bytes written. Safe for concurrent writers (a
// process's stdout and stderr).
type Buffer struct {
	mu  sync.Mutex
	Max int
	b   []byte
}

func (t *Buffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.Max {
		t.b = append([]byte(nil), t.b[len(t.b)-t.Max:]...)
	}
	return len(p), nil
}

func (t *Buffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// LastLine is the last non-empty line of s, for one-line errors.
func LastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return "no output"
}
