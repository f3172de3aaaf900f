package sink

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/store"
)

var knownSeeds = flag.Int("known.seeds", 2000, "random histories the checkpoint equivalence test runs")

// randomHistory is one target's history of a record in the order written:
// reports (merge rows, some without a version) and attempts (a sending row
// and maybe an outcome row, at one version), with created_at ties, ids out
// of time order and versions out of row order, as concurrent writers make
// them.
func randomHistory(rng *rand.Rand, target string) []store.Audit {
	fields := []string{"a", "b", "c"}
	digests := []string{"d1", "d2", "d3"}
	pick := func() map[string]string {
		out := map[string]string{}
		for _, f := range fields {
			if rng.IntN(2) == 0 {
				out[f] = digests[rng.IntN(len(digests))]
			}
		}
		if len(out) == 0 {
			out[fields[rng.IntN(len(fields))]] = digests[0]
		}
		return out
	}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var h []store.Audit
	at := 0
	row := func(a store.Audit) store.Audit {
		at += rng.IntN(2) // ties on created_at are common
		a.CreatedAt = t0.Add(time.Duration(at) * time.Microsecond)
		a.ID = fmt.Sprintf("%08x", rng.Uint32())
		a.Stage = cmpOr(a.Stage, target)
		return a
	}
	n := 2 + rng.IntN(30)
	for range n {
		v := uint64(rng.IntN(12))
		switch rng.IntN(3) {
		case 0:
			h = append(h, row(store.Audit{Stage: store.StageMerge, Outcome: store.OutcomeAccepted, Source: target, Version: v,
				Fields: &store.FieldSet{Base: uint64(rng.IntN(int(v) + 1)), Fields: pick()}}))
		default:
			if v == 0 {
				v = 1
			}
			fs := pick()
			s := row(store.Audit{Outcome: store.OutcomeSending, Version: v, Fields: &store.FieldSet{Fields: fs}})
			h = append(h, s)
			outcomes := []string{store.OutcomeDelivered, store.OutcomeFailed, store.OutcomeRefused, ""}
			if o := outcomes[rng.IntN(len(outcomes))]; o != "" {
				h = append(h, row(store.Audit{Outcome: o, Version: v, Fields: &store.FieldSet{Attempt: s.ID, Fields: fs}}))
			}
		}
	}
	slices.SortStableFunc(h, func(x, y store.Audit) int {
		if keyOf(x).after(keyOf(y)) {
			return 1
		}
		if keyOf(y).after(keyOf(x)) {
			return -1
		}
		return 0
	})
	return h
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// sameKnowledge fails unless a and b give every field the same known
// value and agree on the last delivered version.
func sameKnowledge(t *testing.T, what string, a, b *knowledge) {
	t.Helper()
	names := []string{"absent"}
	for f := range a.fields {
		names = append(names, f)
	}
	for f := range b.fields {
		names = append(names, f)
	}
	for _, f := range names {
		va, oka := a.value(f)
		vb, okb := b.value(f)
		if va != vb || oka != okb {
			t.Errorf("%s: field %s known as %+v/%v, want %+v/%v", what, f, vb, okb, va, oka)
		}
	}
	if a.lastDelivered != b.lastDelivered {
		t.Errorf("%s: last delivered %d, want %d", what, b.lastDelivered, a.lastDelivered)
	}
}

// TestCheckpointsSummariseExactly: the known state read through
// checkpoints (each the summary of the rows below a version, encoded and
// decoded as stored) is the known state of the whole history, for random
// histories and every chain of checkpoint versions, which is what lets a
// delivery read only the rows since the newest checkpoint.
func TestCheckpointsSummariseExactly(t *testing.T) {
	for seed := 1; seed <= *knownSeeds; seed++ {
		rng := rand.New(rand.NewPCG(uint64(seed), 7))
		h := randomHistory(rng, store.StageSuiteX)
		whole := learn(h)
		// Checkpoints at rising versions, each built as a delivery builds
		// it: the previous checkpoint and the rows read since.
		hist := &history{rows: h}
		for b := uint64(1); b <= 12; b += uint64(1 + rng.IntN(4)) {
			raw := hist.checkpoint(b, 1)
			if raw == nil {
				continue
			}
			base, err := decodeKnowledge(raw)
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			var since []store.Audit
			for _, a := range h {
				if a.Version == 0 || a.Version >= b {
					since = append(since, a)
				}
			}
			hist = &history{since: b, base: base, rows: since}
			sameKnowledge(t, fmt.Sprintf("seed %d, checkpoint at %d", seed, b), whole, hist.knowledge())
			if t.Failed() {
				t.Fatalf("seed %d: history %+v", seed, h)
			}
		}
	}
}

// TestCheckpointOnlyWhenItSavesRows: a checkpoint is written once enough
// rows would be summarised beyond the current one, and never at or below
// the current checkpoint's version.
func TestCheckpointOnlyWhenItSavesRows(t *testing.T) {
	row := func(v uint64) store.Audit {
		return store.Audit{Stage: store.StageMerge, Source: store.StageNetSuite, Outcome: store.OutcomeAccepted, Version: v,
			ID: fmt.Sprint(v), Fields: &store.FieldSet{Base: v - 1, Fields: map[string]string{"a": "d"}}}
	}
	h := &history{rows: []store.Audit{row(1), row(2), row(3), {Version: 0, Stage: store.StageMerge}}}
	for _, c := range []struct {
		name  string
		b     uint64
		every int
		want  bool
	}{
		{"enough rows below", 4, 3, true},
		{"too few rows below", 3, 3, false},
		{"never", 4, 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := h.checkpoint(c.b, c.every) != nil; got != c.want {
				t.Errorf("checkpoint(%d, %d) written = %v, want %v", c.b, c.every, got, c.want)
			}
		})
	}
	t.Run("rows below the current checkpoint do not count", func(t *testing.T) {
		// A young record is read whole: rows 1 and 2 are below the
		// checkpoint at 3 and already in it.
		young := &history{since: 3, base: learn(nil), rows: h.rows}
		if n := len(young.pending(4)); n != 1 {
			t.Errorf("pending(4) = %d rows, want 1 (only the row at version 3)", n)
		}
		if young.checkpoint(4, 2) != nil {
			t.Error("a checkpoint counting rows the current one holds")
		}
	})
	t.Run("at the current checkpoint", func(t *testing.T) {
		at := &history{since: 4, base: learn(nil), rows: h.rows}
		if at.checkpoint(4, 1) != nil {
			t.Error("a checkpoint at the current one's version")
		}
	})
}

func TestCheckpointOfAnotherFormatIsNotTrusted(t *testing.T) {
	for name, raw := range map[string]string{
		"another format":     `{"format":2,"fields":{}}`,
		"cut short":          `{"format":1,"fields":`,
		"not an object":      `[]`,
		"row out of range":   `{"format":1,"rows":[[1,"a"]],"fields":{"f":{"r":[1,2,"d"]}}}`,
		"negative row":       `{"format":1,"rows":[[1,"a"]],"fields":{"f":{"r":[-1,2,"d"]}}}`,
		"report with flags":  `{"format":1,"rows":[[1,"a"]],"fields":{"f":{"r":[0,2,"d",1]}}}`,
		"attempt sans flags": `{"format":1,"rows":[[1,"a"]],"fields":{"f":{"s":[0,2,"d"]}}}`,
		"unknown flags":      `{"format":1,"rows":[[1,"a"]],"fields":{"f":{"s":[0,2,"d",4]}}}`,
		"no digest":          `{"format":1,"rows":[[1,"a"]],"fields":{"f":{"s":[0,2,"",1]}}}`,
		"unknown entry":      `{"format":1,"rows":[[1,"a"]],"fields":{"f":{"x":[0,2,"d"]}}}`,
		"row of one element": `{"format":1,"rows":[[1]],"fields":{}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeKnowledge([]byte(raw)); err == nil {
				t.Errorf("decodeKnowledge(%s) accepted", raw)
			}
		})
	}
}

// TestCheckpointSize: a checkpoint names each row once, so a 20-field
// record's costs about 80 bytes a field, not one copy of a row key per
// field and entry.
func TestCheckpointSize(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	var h []store.Audit
	for v := 1; v <= 40; v++ {
		fs := map[string]string{}
		for f := range 20 {
			if (v+f)%7 == 0 || v == 1 {
				fs[fmt.Sprintf("field_%02d", f)] = "0123456789abcdef"
			}
		}
		at := t0.Add(time.Duration(v) * time.Millisecond)
		id := func(kind int) string { return fmt.Sprintf("0193b2f1-%04x-7000-8000-%012x", kind, v) }
		h = append(h,
			store.Audit{ID: id(1), Stage: store.StageMerge, Outcome: store.OutcomeAccepted, Version: uint64(v), CreatedAt: at,
				Fields: &store.FieldSet{Base: uint64(v - 1), Fields: fs}},
			store.Audit{ID: id(2), Stage: store.StageSuiteX, Outcome: store.OutcomeSending, Version: uint64(v), CreatedAt: at.Add(time.Microsecond),
				Fields: &store.FieldSet{Fields: fs}},
			store.Audit{ID: id(3), Stage: store.StageSuiteX, Outcome: store.OutcomeDelivered, Version: uint64(v), CreatedAt: at.Add(2 * time.Microsecond),
				Fields: &store.FieldSet{Attempt: id(2), Fields: fs}})
	}
	k := learn(h)
	b, err := k.encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeKnowledge(b)
	if err != nil {
		t.Fatal(err)
	}
	sameKnowledge(t, "round trip", k, back)
	if len(b) > 2500 {
		t.Errorf("a checkpoint of 20 fields is %d bytes, want at most 2,500", len(b))
	}
	t.Logf("a checkpoint of 20 fields: %d bytes", len(b))
}
