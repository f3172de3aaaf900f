package deadletter

import (
	"context"
	"fmt"
	"time"
)

// Limiter paces redrives: Wait returns when the next message may go.
type Limiter interface {
	Wait(ctx context.Context) error
}

// Clock is the time a Pacer reads and sleeps on; tests inject a fake one so
// the pacing is checked without timing anything.
type Clock interface {
	Now() time.Time
	Sleep(ctx context.Context, d time.Duration) error
}

// RealClock is the wall clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// Sleep waits d or until ctx ends.
func (RealClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Pacer lets one call through every 1/rate seconds: the first at once, each
// next one no sooner than the interval after the previous. It is not a
// bucket on purpose: a redrive of a thousand dead letters must not start
// with a burst onto a target that has only just recovered. Not safe for
// concurrent use (a redrive is sequential).
type Pacer struct {
	every time.Duration
	clock Clock
	next  time.Time
}

// MaxRate bounds --rate: above it the pacing interval is below a millisecond
// and means nothing.
const MaxRate = 1000

// NewPacer paces at perSecond calls per second on clock.
func NewPacer(perSecond float64, clock Clock) (*Pacer, error) {
	if !(perSecond > 0 && perSecond <= MaxRate) {
		return nil, fmt.Errorf("rate %v is not valid: accepted values are above 0 and at most %d per second", perSecond, MaxRate)
	}
	return &Pacer{every: time.Duration(float64(time.Second) / perSecond), clock: clock}, nil
}

// Interval is the time between two calls.
func (p *Pacer) Interval() time.Duration { return p.every }

// Wait sleeps until the next call is due.
func (p *Pacer) Wait(ctx context.Context) error {
	now := p.clock.Now()
	if p.next.After(now) {
		if err := p.clock.Sleep(ctx, p.next.Sub(now)); err != nil {
			return fmt.Errorf("redrive pacing: %w", err)
		}
		now = p.next
	}
	p.next = now.Add(p.every)
	return nil
}
