package sink_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// The randomized convergence test (SPEC §7): the test that decides whether
// two-way sync converges. Each seed is a random schedule over a few
// records: both systems edit (often on a stale base, with equal
// timestamps, toggling a field back to an earlier value), targets fail at
// random (503 before applying, 504 after applying, 400 for a poisoned
// field), re-emit what they were sent (before answering, with their new or
// their old base), SuiteX answers 409 to a reused key, and redeliveries and
// Retry runs interleave with live deliveries. After quiescence, with the
// poisoned field healed and the dead letters redriven, every record must be
// equal in NetSuite, SuiteX and the store, and nothing left unpublished.
//
//	go test ./shared/sink -run TestConvergence -converge.seeds 10000
//	go test ./shared/sink -run 'TestConvergence/seed=42$' -v
var (
	convergeSeeds = flag.Int("converge.seeds", 200, "schedules the convergence test runs")
	convergeFirst = flag.Int("converge.first", 1, "first seed of the convergence test")
)

// convergeWorkers schedules run at once, each on its own records.
const convergeWorkers = 4

func TestConvergence(t *testing.T) {
	w := newWorld(t, 5)
	var (
		wg  sync.WaitGroup
		sem = make(chan struct{}, convergeWorkers)
		mu  sync.Mutex
		bad []int
	)
	for seed := *convergeFirst; seed < *convergeFirst+*convergeSeeds; seed++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ok := t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
				runSchedule(t, w, uint64(seed))
			})
			if !ok {
				mu.Lock()
				bad = append(bad, seed)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// The schedules must have crossed known-state checkpoints, or the test
	// did not cover deliveries that read through one.
	if n := w.checkpoints(t); *worldCheckpointEvery > 0 && *convergeSeeds >= 20 && n == 0 {
		t.Errorf("no delivery wrote a known-state checkpoint (world.checkpoint=%d)", *worldCheckpointEvery)
	} else {
		t.Logf("%d known-state checkpoints written", n)
	}
	if len(bad) > 0 {
		t.Errorf("%d of %d schedules did not converge; first seeds: %v (rerun one with -run 'TestConvergence/seed=N$' -v)",
			len(bad), *convergeSeeds, bad[:min(len(bad), 10)])
	}
}

func runSchedule(t *testing.T, shared *world, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed*7919+1))
	nrec := 1 + rng.IntN(3)
	recs := make([]string, nrec)
	for i := range recs {
		recs[i] = fmt.Sprintf("cv-%d-%d", seed, i)
	}
	s := shared.newSched(t, recs...)
	ctx := context.Background()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	fields := []string{"f1", "f2", "f3", "p"}
	value := func() any {
		if rng.IntN(10) == 0 {
			return nil // clears the field
		}
		return rng.IntN(4)
	}
	healing := false
	// Targets re-emit some of what they applied, before answering, with the
	// base they now hold or the one they held before.
	s.echo = func(sys, rid string, version, oldBase uint64, applied map[string]json.RawMessage) {
		if rng.IntN(10) >= 3 || len(applied) == 0 {
			return
		}
		echoed := map[string]json.RawMessage{}
		for f, v := range applied {
			if rng.IntN(10) < 7 {
				echoed[f] = v
			}
		}
		if len(echoed) == 0 {
			return
		}
		b := version
		if rng.IntN(2) == 0 {
			b = oldBase
		}
		if rng.IntN(4) != 0 {
			s.clock++
		}
		m := s.emit(sys, rid, b, echoed, t0.Add(time.Duration(s.clock)*time.Second), rng.IntN(2) == 0)
		if rng.IntN(2) == 0 {
			// Merged while the delivery is still in flight.
			s.mu.Lock()
			q := s.rawQ[sys]
			s.rawQ[sys] = q[:len(q)-1]
			s.mu.Unlock()
			s.mergeMsg(ctx, sys, m)
		}
	}
	s.mu.Lock()
	s.poisoned = true
	s.mu.Unlock()
	pickPlan := func() plan {
		if healing {
			return planOK
		}
		switch u := rng.IntN(100); {
		case u < 15:
			return planFail
		case u < 30:
			return planApplyFail
		}
		return planOK
	}
	steps := 20 + rng.IntN(40)
	for i := 0; i < steps; i++ {
		sys := systems[rng.IntN(2)]
		rid := recs[rng.IntN(nrec)]
		switch u := rng.IntN(100); {
		case u < 30: // an edit of one or two fields
			ch := map[string]json.RawMessage{}
			for range 1 + rng.IntN(2) {
				b, _ := json.Marshal(value())
				ch[fields[rng.IntN(len(fields))]] = b
			}
			if rng.IntN(4) != 0 {
				s.clock++
			}
			s.edit(sys, rid, ch, t0.Add(time.Duration(s.clock)*time.Second), rng.IntN(2) == 0)
		case u < 55:
			s.mergeOne(ctx, sys, rng.IntN(20) == 0)
		case u < 85:
			s.mu.Lock()
			s.plans[sys] = []plan{pickPlan()}
			s.mu.Unlock()
			s.deliverOne(ctx, sys, rng.IntN(10) == 0)
		default:
			s.mu.Lock()
			s.plans[sys] = []plan{pickPlan()}
			s.mu.Unlock()
			s.retryOne(ctx, sys)
		}
	}
	// Quiescence: the sources stop, the targets stop failing, the poisoned
	// field is healed and the dead letters are redriven. Echoes go on.
	healing = true
	s.mu.Lock()
	s.poisoned = false
	s.plans = map[string][]plan{}
	s.mu.Unlock()
	s.logf("---- quiet: no edits, no failures, poison healed ----")
	s.drain(ctx, 500)
	for _, sys := range systems {
		s.redrive(ctx, sys)
	}
	s.drain(ctx, 500)
	s.converged(ctx)
	if testing.Verbose() {
		t.Log("schedule:\n" + strings.Join(s.log, "\n"))
	}
}
