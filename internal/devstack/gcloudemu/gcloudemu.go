// Package gcloudemu runs the Google Cloud SDK's Pub/Sub emulator as a child
// process: a Java program installed by the google-cloud-cli-pubsub-emulator
// package. `gcloud beta emulators pubsub start` only locates and runs its
// launcher; this runs the launcher directly, which skips gcloud's own
// start-up and configuration directory.
package gcloudemu

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

	"github.com/backbone-sync/backbone/internal/tail"
)

const (
	// Package is the Debian/RPM package that installs the emulator.
	Package = "google-cloud-cli-pubsub-emulator"
	// Startup bounds the emulator's start-up (measured: about 3-10 s).
	Startup  = 60 * time.Second
	launcher = "platform/pubsub-emulator/bin/cloud-pubsub-emulator"
)

// roots are the SDK roots searched for the launcher: the Debian/RPM
// package's, then the one of a gcloud found on PATH.
func roots() []string {
	roots := []string{"/usr/lib/google-cloud-sdk", "/usr/share/google-cloud-sdk", "/opt/google-cloud-sdk"}
	if p, err := exec.LookPath("gcloud"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			roots = append(roots, filepath.Dir(filepath.Dir(r)))
		}
	}
	return roots
}

// Find returns the emulator's launcher, or an error that says what is
// missing and how to install it.
func Find() (string, error) {
	var found string
	for _, root := range roots() {
		p := filepath.Join(root, launcher)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			found = p
			break
		}
	}
	if found == "" {
		return "", fmt.Errorf("the gcloud Pub/Sub emulator is not installed (apt-get install %s, or gcloud components install pubsub-emulator)", Package)
	}
	if _, err := exec.LookPath("java"); err != nil && os.Getenv("JAVA_HOME") == "" {
		return "", fmt.Errorf("the gcloud Pub/Sub emulator at %s needs Java 11 or later: no java on PATH and JAVA_HOME is unset", found)
	}
	return found, nil
}

// Emulator is a running emulator process.
type Emulator struct {
	Addr string // host:port, for PUBSUB_EMULATOR_HOST
	cmd  *exec.Cmd
	out  *tail.Buffer
	done chan struct{}
	err  error // the process's exit, once done is closed
}

// Start starts the emulator on 127.0.0.1:port (0: a free port) and waits
// until it accepts connections. A busy port, a missing Java or a process
// that dies early is one error that names it.
func Start(ctx context.Context, port int) (*Emulator, error) {
	bin, err := Find()
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

	e := &Emulator{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), out: &tail.Buffer{Max: 64 << 10}, done: make(chan struct{})}
	e.cmd = exec.Command(bin, "--host=127.0.0.1", "--port="+strconv.Itoa(port))
	e.cmd.Stdout, e.cmd.Stderr = e.out, e.out
	// Its own process group, so stop reaches java and not only the shell
	// script that starts it.
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := e.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the gcloud Pub/Sub emulator %s: %w", bin, err)
	}
	go func() {
		e.err = e.cmd.Wait()
		close(e.done)
	}()
	deadline := time.Now().Add(Startup)
	for {
		if strings.Contains(e.out.String(), "Server started") {
			if c, err := net.DialTimeout("tcp", e.Addr, 200*time.Millisecond); err == nil {
				_ = c.Close()
				return e, nil
			}
		}
		select {
		case <-e.done:
			return nil, fmt.Errorf("the gcloud Pub/Sub emulator exited during start-up (%v): %s", e.err, tail.LastLine(e.out.String()))
		case <-ctx.Done():
			e.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.Stop()
			return nil, fmt.Errorf("the gcloud Pub/Sub emulator did not listen on %s within %s: %s", e.Addr, Startup, tail.LastLine(e.out.String()))
		}
	}
}

// Stop ends the emulator's process group: SIGTERM, then SIGKILL.
func (e *Emulator) Stop() {
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
func (e *Emulator) Output() string { return e.out.String() }
