package merge

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestKeyLocks(t *testing.T) {
	t.Parallel()
	k := newKeyLocks()
	ctx := context.Background()

	// One holder per key; other keys are independent.
	unlockA, err := k.lock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	unlockB, err := k.lock(ctx, "b")
	if err != nil {
		t.Fatal("key b blocked behind key a")
	}
	unlockB()

	// A waiter gives up when its context ends, and leaves nothing behind.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := k.lock(short, "a"); err == nil {
		t.Fatal("second holder of key a")
	}

	// Mutual exclusion under contention.
	unlockA()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		inside  int
		maxSeen int
	)
	for range 50 {
		wg.Go(func() {
			unlock, err := k.lock(ctx, "c")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			inside++
			maxSeen = max(maxSeen, inside)
			mu.Unlock()
			time.Sleep(100 * time.Microsecond)
			mu.Lock()
			inside--
			mu.Unlock()
			unlock()
		})
	}
	wg.Wait()
	if maxSeen != 1 {
		t.Errorf("%d holders at once, want 1", maxSeen)
	}
	if n := k.size(); n != 0 {
		t.Errorf("%d keys left in the table", n)
	}
}
