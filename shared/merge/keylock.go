package merge

import (
	"context"
	"sync"
)

// keyLocks serialises work on one record inside this process, from the
// record lock in the database through the publish after commit: without it
// two merges of one record could commit v1 and v2 in order and still publish
// them in the opposite order. Across processes the database row lock orders
// the commits, the outbox gate (see decide) orders the publishes, and Pub/Sub
// ordering keys keep them in order on the topic.
type keyLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	ch   chan struct{} // a one-slot semaphore: holding the lock = a token inside
	refs int           // holders and waiters; the entry goes when it drops to 0
}

func newKeyLocks() *keyLocks { return &keyLocks{m: map[string]*keyLock{}} }

// lock takes the lock of key, or gives up when ctx ends. The returned func
// releases it.
func (k *keyLocks) lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	l, ok := k.m[key]
	if !ok {
		l = &keyLock{ch: make(chan struct{}, 1)}
		k.m[key] = l
	}
	l.refs++
	k.mu.Unlock()

	select {
	case l.ch <- struct{}{}:
		return func() {
			<-l.ch
			k.release(key, l)
		}, nil
	case <-ctx.Done():
		k.release(key, l)
		return nil, ctx.Err()
	}
}

func (k *keyLocks) release(key string, l *keyLock) {
	k.mu.Lock()
	l.refs--
	if l.refs == 0 {
		delete(k.m, key)
	}
	k.mu.Unlock()
}

// size is the number of keys held or waited for (tests: nothing leaks).
func (k *keyLocks) size() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}
