package record

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/store"
)

// wideState is a 20-field record edited from both sides, as the storage
// figure's record is.
func wideState() *State {
	st := Empty()
	for v := uint64(1); v <= 60; v++ {
		src := []string{"netsuite", "suitex"}[v%2]
		changes := map[string]json.RawMessage{fmt.Sprintf("field_%02d", v%20): json.RawMessage(fmt.Sprintf(`"value %d of a customer field"`, v))}
		st = st.Apply(store.Event{ID: fmt.Sprintf("0193b2f1-0000-7000-8000-%012x", v), Source: src,
			Timestamp: time.Date(2026, 12, 2, 0, 0, int(v), 123456000, time.UTC), BaseVersion: v - 1}, changes)
	}
	return st
}

// BenchmarkState: what a merge pays to read and write a 20-field record's
// state, in format 1 (the reflection-based encoding it had) and format 2.
//
//	go test ./shared/record -run XXX -bench BenchmarkState -benchmem
func BenchmarkState(b *testing.B) {
	st := wideState()
	v1, err := event.Marshal(stateV1(*st))
	if err != nil {
		b.Fatal(err)
	}
	v1 = []byte(`{"format":1,` + string(v1[len(`{"format":2,`):]))
	v2, err := event.Marshal(st)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		doc  []byte
		enc  func() ([]byte, error)
	}{
		{"format=1", v1, func() ([]byte, error) { return event.Marshal(stateV1(*st)) }},
		{"format=2", v2, func() ([]byte, error) { return event.Marshal(st) }},
	} {
		b.Run(c.name+"/decode", func(b *testing.B) {
			b.SetBytes(int64(len(c.doc)))
			for b.Loop() {
				if _, ok := Parse(store.Head{Version: st.Version, State: c.doc}); !ok {
					b.Fatal("refused")
				}
			}
		})
		b.Run(c.name+"/encode", func(b *testing.B) {
			for b.Loop() {
				if _, err := c.enc(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
