package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/backbone-sync/backbone/internal/devstack"
	"github.com/backbone-sync/backbone/internal/tail"
	"github.com/backbone-sync/backbone/shared/config"
)

// ServeOptions configure MeasureServe.
type ServeOptions struct {
	// Command is the server's argv (e.g. the backbone binary and "serve");
	// Env its whole environment. Port is the port it listens on (PORT).
	Command []string
	Env     []string
	Port    int
	// Starts is how many cold starts to time.
	Starts int
	// Concurrency and Duration of the load during which the peak RSS is
	// taken; NewOp returns one worker's request loop against base (the
	// server's URL).
	Concurrency int
	Duration    time.Duration
	NewOp       func(worker int, base string) Op
}

// ServeResult is the server's start-up time and its memory under load.
type ServeResult struct {
	// StartupMS are the cold starts: process start (fork/exec) to the first
	// accepted TCP connection on its port.
	StartupMS       []float64 `json:"startup_ms"`
	StartupMedianMS float64   `json:"startup_median_ms"`
	StartupMaxMS    float64   `json:"startup_max_ms"`
	// PeakRSSMiB is VmHWM (the kernel's resident-set high-water mark) after
	// the load; RSSIdleMiB the resident set right after start-up.
	PeakRSSMiB  float64 `json:"peak_rss_mib"`
	RSSIdleMiB  float64 `json:"rss_idle_mib"`
	Concurrency int     `json:"concurrency"`
	// Load is the load generator's view; in its CPU, "server" is the serve
	// process (its CPU per request) and "self" the load generator.
	Load Point `json:"load"`
}

// MeasureServe starts the server o.Starts times to time its start-up, then
// once more under o.Concurrency concurrent requests for o.Duration and reads
// its peak RSS. Every start is stopped with SIGTERM.
func MeasureServe(ctx context.Context, o ServeOptions) (ServeResult, error) {
	res := ServeResult{Concurrency: o.Concurrency}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(o.Port))
	var startups []time.Duration
	for range o.Starts {
		p, d, err := startServer(ctx, o, addr)
		if err != nil {
			return res, err
		}
		startups = append(startups, d)
		if err := p.stop(); err != nil {
			return res, err
		}
	}
	for _, d := range startups {
		res.StartupMS = append(res.StartupMS, ms(d))
	}
	if len(startups) > 0 {
		sorted := slices.Clone(startups)
		slices.Sort(sorted)
		res.StartupMedianMS = ms(Percentile(sorted, 50))
		res.StartupMaxMS = ms(sorted[len(sorted)-1])
	}

	p, _, err := startServer(ctx, o, addr)
	if err != nil {
		return res, err
	}
	defer func() { _ = p.stop() }()
	res.RSSIdleMiB = memoryMiB(p.cmd.Process.Pid, "VmRSS")
	// The meter's "server" is the serve process here: its CPU per request.
	r := &Runner{Timing: Timing{Window: o.Duration}, meter: newCPUMeter(p.cmd.Process.Pid)}
	res.Load = r.Closed(ctx, o.Concurrency, func(w int) Op { return o.NewOp(w, "http://"+addr) }, nil)
	res.PeakRSSMiB = memoryMiB(p.cmd.Process.Pid, "VmHWM")
	if res.PeakRSSMiB == 0 {
		return res, fmt.Errorf("could not read VmHWM of the server (pid %d)", p.cmd.Process.Pid)
	}
	if err := p.stop(); err != nil {
		return res, err
	}
	return res, nil
}

type server struct {
	cmd    *exec.Cmd
	out    *tail.Buffer
	exited chan struct{}
	err    error
}

// startServer starts the server and waits for its port to accept.
func startServer(ctx context.Context, o ServeOptions, addr string) (*server, time.Duration, error) {
	if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
		_ = c.Close()
		return nil, 0, fmt.Errorf("port %s is already taken: cannot time a start-up on it", addr)
	}
	cmd := exec.Command(o.Command[0], o.Command[1:]...)
	cmd.Env = o.Env
	out := &tail.Buffer{Max: 16 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	s := &server{cmd: cmd, out: out, exited: make(chan struct{})}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, 0, fmt.Errorf("start %s: %w", o.Command[0], err)
	}
	go func() { s.err = cmd.Wait(); close(s.exited) }()
	deadline := start.Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 50*time.Millisecond)
		if err == nil {
			d := time.Since(start)
			_ = c.Close()
			return s, d, nil
		}
		select {
		case <-s.exited:
			return nil, 0, fmt.Errorf("the server exited before listening (%v); its output ends with:\n%s", s.err, out.String())
		case <-ctx.Done():
			_ = s.stop()
			return nil, 0, ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			_ = s.stop()
			return nil, 0, fmt.Errorf("the server did not listen on %s within 20s; its output ends with:\n%s", addr, out.String())
		}
		time.Sleep(500 * time.Microsecond)
	}
}

// stop sends SIGTERM (Cloud Run's shutdown) and waits, then kills.
func (s *server) stop() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return nil
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		return errors.New("the server did not stop within 10s of SIGTERM (killed)")
	}
}

// memoryMiB reads one Vm* line of /proc/PID/status in MiB.
func memoryMiB(pid int, field string) float64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != field {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			return 0
		}
		return round3(kb / 1024)
	}
	return 0
}

// serve is the run's serve phase: MeasureServe on the binary running the
// run, against a scratch database and an in-process pstest.
func (b *benchmark) serve(ctx context.Context) error {
	_, workerDSN, err := b.scratchDB(ctx, "serve")
	if err != nil {
		return err
	}
	srv, ps, err := b.topicsOnly(ctx)
	if err != nil {
		return err
	}
	defer srv.Close()
	defer ps.Close()
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the backbone binary: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	client := pushClient()
	var seq atomic.Int64
	b.printf("\nbackbone serve (FUNCTION_TARGET=Merge) as a subprocess: %s\n", exe)
	res, err := MeasureServe(ctx, ServeOptions{
		Command: []string{exe, "serve"},
		// Only what serve needs: the bench's own environment stays out.
		Env: []string{"BACKBONE_ENV=" + string(b.o.Env), "GCP_PROJECT=" + devstack.Project, "PUBSUB_EMULATOR_HOST=" + srv.Addr,
			"EVENT_STORE_DSN=" + workerDSN, "FUNCTION_TARGET=" + config.TargetMerge, "PORT=" + strconv.Itoa(port)},
		Port: port, Starts: b.sizes.serveStarts, Concurrency: b.sizes.serveConc, Duration: b.timing.Window,
		NewOp: func(w int, base string) Op {
			return b.pushOp(client, base+"/", fmt.Sprintf("serve-w%d", w), w, &seq)
		},
	})
	b.res.Serve = &res
	if err != nil {
		return err
	}
	b.printf("  start-up %v ms (median %.1f ms)\n  peak RSS %.1f MiB (idle %.1f MiB) under %d concurrent requests: %d requests, %.0f/s, p99 %.1f ms, serve's CPU %.3f ms/request\n",
		res.StartupMS, res.StartupMedianMS, res.PeakRSSMiB, res.RSSIdleMiB, res.Concurrency, res.Load.Succeeded, res.Load.EventsPerSec, res.Load.Latency.P99MS,
		res.Load.CPU.ServerMSPerEvent)
	if res.Load.Errors > 0 {
		b.fail("serve: %d errors under load, first: %s", res.Load.Errors, res.Load.FirstError)
	}
	return nil
}

// freePort is a loopback port free at the time of asking.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
