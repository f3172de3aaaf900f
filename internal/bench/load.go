package bench

import (
	"context"
	"fmt"
	"io"
	"runtime/pprof"
	"sync"
	"time"
)

// Timing is how long one measurement point runs: a warm-up whose events are
// not recorded (connection pools fill, caches warm), then the window.
type Timing struct {
	Warmup time.Duration
	Window time.Duration
}

// Point is one concurrency level of one mode, measured in closed loop.
type Point struct {
	Concurrency int `json:"concurrency"`
	// Events completed inside the window; EventsPerSec = Events / window.
	Events       int     `json:"events"`
	EventsPerSec float64 `json:"events_per_sec"`
	// Latency of the events completed inside the window.
	Latency    Latency `json:"latency"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	// Succeeded counts every successful event, warm-up and tail included:
	// what the database must hold afterwards (verification).
	Succeeded int `json:"succeeded"`
	CPU       CPU `json:"cpu"`
	// WindowSeconds is the measured time (the sum, for a pooled point).
	WindowSeconds float64 `json:"window_s"`

	samples []time.Duration // sorted latencies, for pooling
}

// Pool combines points measured at one concurrency in separate windows (a
// mode measured before and after others, to cancel drift) into one: the
// events and latency samples of all windows, the throughput over their
// total time, the CPU weighted by events.
func Pool(ps ...Point) Point {
	if len(ps) == 0 {
		return Point{}
	}
	out := Point{Concurrency: ps[0].Concurrency, CPU: CPU{MachineCores: ps[0].CPU.MachineCores}}
	var all []time.Duration
	for _, p := range ps {
		out.Events += p.Events
		out.Errors += p.Errors
		out.Succeeded += p.Succeeded
		out.WindowSeconds += p.WindowSeconds
		if out.FirstError == "" {
			out.FirstError = p.FirstError
		}
		all = append(all, p.samples...)
		e := float64(p.Events)
		out.CPU.SelfMSPerEvent += p.CPU.SelfMSPerEvent * e
		out.CPU.ServerMSPerEvent += p.CPU.ServerMSPerEvent * e
		out.CPU.OwnServerMSPerEvent += p.CPU.OwnServerMSPerEvent * e
		out.CPU.SelfCores += p.CPU.SelfCores * p.WindowSeconds
		out.CPU.ServerCores += p.CPU.ServerCores * p.WindowSeconds
		out.CPU.OtherCores += p.CPU.OtherCores * p.WindowSeconds
	}
	if out.Events > 0 {
		out.CPU.SelfMSPerEvent = round3(out.CPU.SelfMSPerEvent / float64(out.Events))
		out.CPU.ServerMSPerEvent = round3(out.CPU.ServerMSPerEvent / float64(out.Events))
		out.CPU.OwnServerMSPerEvent = round3(out.CPU.OwnServerMSPerEvent / float64(out.Events))
	}
	if out.WindowSeconds > 0 {
		out.EventsPerSec = round3(float64(out.Events) / out.WindowSeconds)
		out.CPU.SelfCores = round3(out.CPU.SelfCores / out.WindowSeconds)
		out.CPU.ServerCores = round3(out.CPU.ServerCores / out.WindowSeconds)
		out.CPU.OtherCores = round3(out.CPU.OtherCores / out.WindowSeconds)
	}
	out.samples = all
	out.Latency = Summarize(all)
	return out
}

// Op does one event and returns when it is complete.
type Op func(ctx context.Context) error

// Runner runs measurement points with one CPU meter.
type Runner struct {
	Timing Timing
	meter  *cpuMeter
}

// NewRunner returns a runner; serverPID is the database server's process
// (FindServerPID; 0 to skip its CPU).
func NewRunner(t Timing, serverPID int) *Runner {
	return &Runner{Timing: t, meter: newCPUMeter(serverPID)}
}

// OwnThreads makes the runner measure the server threads of the
// connections that list returns (connection id -> OS thread id); see
// ServerThreads.
func (r *Runner) OwnThreads(list func() map[int64]int) { r.meter.threads = list }

// window snaps the CPU (and profiles, when profile is set) between
// warm-up end and window end, in its own goroutine so no worker is delayed.
type window struct {
	start, end time.Time
	done       chan struct{}
	a, b       cpuSnap
	profErr    error
}

func (r *Runner) startWindow(t Timing, profile io.Writer) *window {
	w := &window{done: make(chan struct{})}
	w.start = time.Now().Add(t.Warmup)
	w.end = w.start.Add(t.Window)
	go func() {
		defer close(w.done)
		time.Sleep(time.Until(w.start))
		w.a = r.meter.snap()
		if profile != nil {
			w.profErr = pprof.StartCPUProfile(profile)
		}
		time.Sleep(time.Until(w.end))
		if profile != nil && w.profErr == nil {
			pprof.StopCPUProfile()
		}
		w.b = r.meter.snap()
	}()
	return w
}

// Closed runs conc workers, each doing one event after another (closed
// loop: the offered load adapts to the system, which is how the throughput
// at a given concurrency is found). newOp is called once per worker, so each
// worker may own its records. profile, if set, receives a CPU profile of the
// window.
func (r *Runner) Closed(ctx context.Context, conc int, newOp func(worker int) Op, profile io.Writer) Point {
	return r.ClosedFor(ctx, r.Timing, conc, newOp, profile)
}

// ClosedFor is Closed with another timing.
func (r *Runner) ClosedFor(ctx context.Context, t Timing, conc int, newOp func(worker int) Op, profile io.Writer) Point {
	w := r.startWindow(t, profile)
	type acc struct {
		lat       []time.Duration
		errs      int
		firstErr  error
		succeeded int
	}
	accs := make([]acc, conc)
	var wg sync.WaitGroup
	for i := range conc {
		op := newOp(i)
		wg.Go(func() {
			a := &accs[i]
			for ctx.Err() == nil {
				t1 := time.Now()
				if !t1.Before(w.end) {
					return
				}
				err := op(ctx)
				t2 := time.Now()
				if err != nil {
					// Every error counts, warm-up included: a run with errors
					// is not a clean measurement.
					a.errs++
					if a.firstErr == nil {
						a.firstErr = err
					}
					// An error is usually fast: do not spin on a broken path.
					time.Sleep(10 * time.Millisecond)
					continue
				}
				a.succeeded++
				if !t2.Before(w.start) && t2.Before(w.end) {
					a.lat = append(a.lat, t2.Sub(t1))
				}
			}
		})
	}
	wg.Wait()
	<-w.done
	p := Point{Concurrency: conc}
	var all []time.Duration
	for _, a := range accs {
		all = append(all, a.lat...)
		p.Errors += a.errs
		p.Succeeded += a.succeeded
		if a.firstErr != nil && p.FirstError == "" {
			p.FirstError = a.firstErr.Error()
		}
	}
	if w.profErr != nil && p.FirstError == "" {
		p.FirstError = fmt.Sprintf("cpu profile: %v", w.profErr)
	}
	p.Events = len(all)
	p.WindowSeconds = t.Window.Seconds()
	p.EventsPerSec = round3(float64(len(all)) / p.WindowSeconds)
	p.Latency = Summarize(all)
	p.samples = all
	p.CPU = r.meter.between(w.a, w.b, p.Events)
	return p
}

// OpenOp sends one event and returns the time each of its stages completed
// (in the order of the stage names given to Open).
type OpenOp func(ctx context.Context) ([]time.Time, error)

// OpenResult is an open-loop run at a fixed arrival rate.
type OpenResult struct {
	TargetRate float64 `json:"target_events_per_sec"`
	// Sent is the number of events scheduled inside the window; Completed
	// how many of those finished every stage.
	Sent      int `json:"sent"`
	Completed int `json:"completed"`
	// Stages: latency from each event's scheduled send time (not the
	// moment the generator got round to it, so a stalled generator cannot
	// hide queueing) to the completion of the stage.
	Stages     map[string]Latency `json:"stages"`
	Errors     int                `json:"errors"`
	FirstError string             `json:"first_error,omitempty"`
	CPU        CPU                `json:"cpu"`
}

// Open sends events at rate per second (open loop: arrivals do not wait for
// completions, as real sources do not), each bounded by timeout. profile,
// if set, receives a CPU profile of the window.
func (r *Runner) Open(ctx context.Context, rate float64, timeout time.Duration, stages []string, op OpenOp, profile io.Writer) OpenResult {
	res := OpenResult{TargetRate: round3(rate), Stages: map[string]Latency{}}
	if rate <= 0 {
		res.FirstError = "rate must be positive"
		res.Errors = 1
		return res
	}
	w := r.startWindow(r.Timing, profile)
	interval := time.Duration(float64(time.Second) / rate)
	begin := time.Now()
	var (
		mu       sync.Mutex
		lat      = make([][]time.Duration, len(stages))
		wg       sync.WaitGroup
		firstErr error
	)
	for i := 0; ctx.Err() == nil; i++ {
		at := begin.Add(time.Duration(i) * interval)
		if !at.Before(w.end) {
			break
		}
		time.Sleep(time.Until(at))
		measured := !at.Before(w.start)
		wg.Go(func() {
			octx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			done, err := op(octx)
			if !measured {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			res.Sent++
			if err != nil {
				res.Errors++
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			res.Completed++
			for k := range stages {
				if k < len(done) {
					lat[k] = append(lat[k], done[k].Sub(at))
				}
			}
		})
	}
	wg.Wait()
	<-w.done
	for k, name := range stages {
		res.Stages[name] = Summarize(lat[k])
	}
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	res.CPU = r.meter.between(w.a, w.b, res.Completed)
	return res
}
