package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/backbone-sync/backbone/internal/bench"
)

// The Google Cloud SDK's Pub/Sub emulator: a Java program installed by the
// google-cloud-cli-pubsub-emulator package. `gcloud beta emulators pubsub
// start` only locates and runs its launcher; dev runs the launcher directly,
// which skips gcloud's own start-up and configuration directory.
const (
	gcloudEmulatorPackage  = "google-cloud-cli-pubsub-emulator"
	gcloudEmulatorLauncher = "platform/pubsub-emulator/bin/cloud-pubsub-emulator"
	gcloudEmulatorStartup  = 60 * time.Second // measured: about 3-10 s here
)

// gcloudEmulatorRoots are the SDK roots searched for the launcher: the
// Debian/RPM package's, then the one of a gcloud found on PATH.
func gcloudEmulatorRoots() []string {
	roots := []string{"/usr/lib/google-cloud-sdk", "/usr/share/google-cloud-sdk", "/opt/google-cloud-sdk"}
	if p, err := exec.LookPath("gcloud"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			roots = append(roots, filepath.Dir(filepath.Dir(r)))
		}
	}
	return roots
}

// findGcloudEmulator returns the emulator's launcher, or an error that says
// what is missing and how to install it.
func findGcloudEmulator() (string, error) {
	var launcher string
	for _, root := range gcloudEmulatorRoots() {
		p := filepath.Join(root, gcloudEmulatorLauncher)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			launcher = p
			break
		}
	}
	if launcher == "" {
		return "", fmt.Errorf("the gcloud Pub/Sub emulator is not installed (apt-get install %s, or gcloud components install pubsub-emulator)", gcloudEmulatorPackage)
	}
	if _, err := exec.LookPath("java"); err != nil && os.Getenv("JAVA_HOME") == "" {
		return "", fmt.Errorf("the gcloud Pub/Sub emulator at %s needs Java 11 or later: no java on PATH and JAVA_HOME is unset", launcher)
	}
	return launcher, nil
}

// gcloudEmulator is a running emulator process.
type gcloudEmulator struct {
	Addr string
	cmd  *exec.Cmd
	out  *bench.TailBuffer
	done chan struct{}
	err  error // the process's exit, once done is closed
}

// startGcloudEmulator starts the emulator on 127.0.0.1:port (0: a free
// port) and waits until it accepts connections. A busy port, a missing Java
// or a process that dies early is one error that names it.
func startGcloudEmulator(ctx context.Context, port int) (*gcloudEmulator, error) {
	launcher, err := findGcloudEmulator()
	if err != nil {
		return nil, err
	}
	// Java reports a busy port only in a stack trace: check it first.
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("the gcloud Pub/Sub emulator cannot listen on 127.0.0.1:%d: %w (pass another --pubsub-port, or 0 for any)", port, err)
	}
	port = ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()

	e := &gcloudEmulator{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), out: &bench.TailBuffer{Max: 64 << 10}, done: make(chan struct{})}
	e.cmd = exec.Command(launcher, "--host=127.0.0.1", "--port="+strconv.Itoa(port))
	e.cmd.Stdout, e.cmd.Stderr = e.out, e.out
	// Its own process group, so stop reaches java and not only the shell
	// script that starts it.
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := e.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the gcloud Pub/Sub emulator %s: %w", launcher, err)
	}
	go func() {
		e.err = e.cmd.Wait()
		close(e.done)
	}()
	deadline := time.Now().Add(gcloudEmulatorStartup)
	for {
		if strings.Contains(e.out.String(), "Server started") {
			if c, err := net.DialTimeout("tcp", e.Addr, 200*time.Millisecond); err == nil {
				_ = c.Close()
				return e, nil
			}
		}
		select {
		case <-e.done:
			return nil, fmt.Errorf("the gcloud Pub/Sub emulator exited during start-up (%v): %s", e.err, lastLine(e.out.String()))
		case <-ctx.Done():
			e.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.Stop()
			return nil, fmt.Errorf("the gcloud Pub/Sub emulator did not listen on %s within %s: %s", e.Addr, gcloudEmulatorStartup, lastLine(e.out.String()))
		}
	}
}

// Stop ends the emulator's process group: SIGTERM, then SIGKILL.
func (e *gcloudEmulator) Stop() {
	pgid := e.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-e.done
	}
}

// Output is what the emulator printed (its last 64 KiB).
func (e *gcloudEmulator) Output() string { return e.out.String() }

// lastLine is the last non-empty line of s, for one-line errors.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return "no output"
}
