package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/internal/devstack"
	"github.com/backbone-sync/backbone/internal/devstack/gcloudemu"
	"github.com/backbone-sync/backbone/internal/tail"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// The built binary, shared by the tests that run it as a user does (exit
// codes, stdout and stderr as a shell sees them; go run would turn every
// code into 1).
var (
	binOnce sync.Once
	binPath string
	binErr  error
	binOut  []byte
)

func backboneBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		// One build per test process; the builds of earlier processes are
		// removed once they are an hour old (no test can still use them).
		old, _ := filepath.Glob(filepath.Join(os.TempDir(), "backbone-bin-*"))
		for _, o := range old {
			if st, err := os.Stat(o); err == nil && time.Since(st.ModTime()) > time.Hour {
				_ = os.RemoveAll(o)
			}
		}
		dir, err := os.MkdirTemp("", "backbone-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "backbone")
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		binOut, binErr = cmd.CombinedOutput()
	})
	if binErr != nil {
		t.Fatalf("go build: %v\n%s", binErr, binOut)
	}
	return binPath
}

// devProcess is `backbone dev` running as a child process.
type devProcess struct {
	cmd    *exec.Cmd
	banner string
	// exports are the variables of the banner's export lines.
	exports map[string]string
	stderr  *tail.Buffer
}

// startDevProcess runs `backbone dev` on free ports with env (added to a
// minimal environment) and waits for its banner.
func startDevProcess(t *testing.T, env map[string]string, args ...string) *devProcess {
	t.Helper()
	bin := backboneBinary(t)
	return startDevCommand(t, exec.Command(bin, append([]string{"dev", "--port", "0", "--pubsub-port", "0"}, args...)...), env)
}

// startDevCommand runs cmd (dev, or make dev) and waits for dev's banner.
func startDevCommand(t *testing.T, cmd *exec.Cmd, env map[string]string) *devProcess {
	t.Helper()
	cmd.Env = minimalEnv(env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &devProcess{cmd: cmd, stderr: &tail.Buffer{Max: 256 << 10}, exports: map[string]string{}}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The whole group: make, and the dev it runs.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("dev stderr (tail):\n%s", p.stderr.String())
		}
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	var banner strings.Builder
	deadline := time.After(90 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("dev exited before its banner:\nstdout:\n%s\nstderr:\n%s", banner.String(), p.stderr.String())
			}
			banner.WriteString(l + "\n")
			if strings.HasPrefix(strings.TrimSpace(l), "export ") {
				parseExports(strings.TrimSpace(l), p.exports)
			}
			if strings.HasPrefix(l, "Ctrl-C stops it") {
				p.banner = banner.String()
				go func() {
					for range lines {
					}
				}()
				return p
			}
		case <-deadline:
			t.Fatalf("no banner from dev within 90s:\n%s\nstderr:\n%s", banner.String(), p.stderr.String())
		}
	}
}

// parseExports reads `export K=V K='V' ...   # comment` as a shell does
// (single quotes only: that is what the banner prints).
func parseExports(line string, into map[string]string) {
	line = strings.TrimPrefix(line, "export ")
	if i := strings.Index(line, "   #"); i >= 0 {
		line = line[:i]
	}
	for len(line) > 0 {
		line = strings.TrimLeft(line, " ")
		k, rest, ok := strings.Cut(line, "=")
		if !ok {
			return
		}
		var v string
		if strings.HasPrefix(rest, "'") {
			end := strings.Index(rest[1:], "'")
			v, line = rest[1:1+end], rest[2+end:]
		} else {
			v, line, _ = strings.Cut(rest, " ")
		}
		into[k] = v
	}
}

// minimalEnv is a clean environment plus extra: no BACKBONE_* or Pub/Sub
// settings leak in from the test's own environment.
func minimalEnv(extra map[string]string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for _, k := range []string{"GOCACHE", "GOPATH", "GOMODCACHE", "TMPDIR", "JAVA_HOME"} {
		if v := os.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}

// runWalkthrough runs scripts/walkthrough.sh in a shell whose environment is
// shell plus the banner's exports, as the README says.
func runWalkthrough(t *testing.T, d *devProcess, shell map[string]string) string {
	t.Helper()
	env := map[string]string{"BACKBONE": backboneBinary(t)}
	for k, v := range shell {
		env[k] = v
	}
	for k, v := range d.exports {
		env[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../../scripts/walkthrough.sh")
	cmd.Env = minimalEnv(env)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("walkthrough failed: %v\n%s", err, out)
	}
	return string(out)
}

// TestWalkthrough runs the README's walkthrough against `backbone dev`, in
// a fresh database, from a shell like a Google Cloud shell: once with
// GCP_PROJECT exported to both shells (dev must use it), once with a
// different project in the second shell (the banner's export line must
// win).
func TestWalkthrough(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		devEnv     map[string]string
		shell      map[string]string
		wantProjct string
		args       []string
	}{
		{"GCP_PROJECT in both shells", map[string]string{"GCP_PROJECT": "my-team-project"}, map[string]string{"GCP_PROJECT": "my-team-project"}, "my-team-project", nil},
		{"another project in the second shell", map[string]string{}, map[string]string{"GOOGLE_CLOUD_PROJECT": "someone-elses", "GCP_PROJECT": "someone-elses"}, devstack.Project, nil},
		{"gcloud emulator", map[string]string{"GOOGLE_CLOUD_PROJECT": "cloud-shell-project"}, map[string]string{"GOOGLE_CLOUD_PROJECT": "cloud-shell-project"}, "cloud-shell-project",
			[]string{"--emulator", "gcloud"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.args != nil && !gcloudEmulatorInstalled() {
				t.Skip("the " + gcloudemu.Package + " package is not installed on this machine")
			}
			db := devDB(t)
			devEnv := map[string]string{"EVENT_STORE_DSN": db.DSN}
			for k, v := range tc.devEnv {
				devEnv[k] = v
			}
			d := startDevProcess(t, devEnv, tc.args...)
			if d.exports["GCP_PROJECT"] != tc.wantProjct || d.exports["WORKER_DSN"] == "" || d.exports["PUBSUB_EMULATOR_HOST"] == "" {
				t.Fatalf("banner exports %v, want GCP_PROJECT=%s and WORKER_DSN:\n%s", d.exports, tc.wantProjct, d.banner)
			}
			if strings.Contains(d.banner, `Serving function: ""`) || strings.Contains(d.stderr.String(), `Serving function: ""`) {
				t.Errorf("unnamed function lines at start:\n%s", d.banner)
			}
			out := runWalkthrough(t, d, tc.shell)
			if !strings.Contains(out, "every step gave the outcome the README states") || !strings.Contains(out, "all steps passed") {
				t.Errorf("walkthrough output:\n%s", out)
			}
		})
	}
}

// TestMakeDevPassesArgs: `make dev ARGS='--port P --pubsub-port Q'` runs
// dev on those ports (the binary is built into a scratch path).
func TestMakeDevPassesArgs(t *testing.T) {
	t.Parallel()
	db := devDB(t)
	port, psPort := unusedPort(t), unusedPort(t)
	cmd := exec.Command("make", "-s", "-C", "../..", "dev", "BIN="+filepath.Join(t.TempDir(), "backbone"), "ARGS=--port "+port+" --pubsub-port "+psPort)
	d := startDevCommand(t, cmd, map[string]string{"EVENT_STORE_DSN": db.DSN})
	if !strings.Contains(d.banner, "http://127.0.0.1:"+port+"/") || d.exports["PUBSUB_EMULATOR_HOST"] != "127.0.0.1:"+psPort {
		t.Errorf("banner does not show ports %s and %s:\n%s", port, psPort, d.banner)
	}
}

// TestBusyPortsAreOneLineFailures runs the binary as a user does, with each
// of dev's ports taken: exit 1, one line that names the port, no panic.
func TestBusyPortsAreOneLineFailures(t *testing.T) {
	t.Parallel()
	bin := backboneBinary(t)
	db := devDB(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := strings.TrimPrefix(ln.Addr().String(), "127.0.0.1:")
	for _, args := range [][]string{
		{"dev", "--pubsub-port", busy, "--port", "0"},
		{"dev", "--pubsub-port", "0", "--port", busy},
		{"dev", "--emulator", "gcloud", "--pubsub-port", busy, "--port", "0"},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Env = minimalEnv(map[string]string{"EVENT_STORE_DSN": db.DSN})
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := cmd.ProcessState.ExitCode()
		msg := strings.TrimSpace(stderr.String())
		if code != 1 || strings.Count(msg, "\n") != 0 || !strings.Contains(msg, busy) || strings.Contains(msg, "panic") || strings.Contains(msg, "goroutine") {
			t.Errorf("%v: exit %d (%v), want 1 and one line naming port %s; stderr:\n%s", args, code, err, busy, msg)
		}
	}
	// serve on a busy PORT.
	cmd := exec.Command(bin, "serve")
	cmd.Env = minimalEnv(map[string]string{"BACKBONE_ENV": "sandbox", "FUNCTION_TARGET": "DLQArchive", "PORT": busy, "EVENT_STORE_DSN": db.DSN,
		"GCP_PROJECT": "backbone-dev", "PUBSUB_EMULATOR_HOST": "127.0.0.1:" + unusedPort(t)})
	var serveErr strings.Builder
	cmd.Stderr = &serveErr
	_ = cmd.Run()
	if code, msg := cmd.ProcessState.ExitCode(), tail.LastLine(serveErr.String()); code != 1 || !strings.Contains(msg, busy) || strings.Contains(serveErr.String(), "panic") {
		t.Errorf("serve on a busy port: exit %d, want 1 and a line naming port %s; stderr:\n%s", code, busy, serveErr.String())
	}

	// Unreachable servers: the database, and Pub/Sub for publish.
	free := unusedPort(t)
	for _, c := range []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"dev", "--port", "0", "--pubsub-port", "0"}, map[string]string{"EVENT_STORE_DSN": "root@tcp(127.0.0.1:" + free + ")/x"}},
		{[]string{"trace", "customer:C-1"}, map[string]string{"EVENT_STORE_DSN": "root@tcp(127.0.0.1:" + free + ")/x"}},
		{[]string{"publish", "../../examples/customer-create.json"}, map[string]string{"BACKBONE_ENV": "sandbox", "PUBSUB_EMULATOR_HOST": "127.0.0.1:" + free}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmd := exec.CommandContext(ctx, bin, c.args...)
		cmd.Env = minimalEnv(c.env)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		_ = cmd.Run()
		cancel()
		code := cmd.ProcessState.ExitCode()
		msg := strings.TrimSpace(stderr.String())
		if code != 1 || strings.Count(msg, "\n") != 0 || !strings.Contains(msg, free) || strings.Contains(msg, "panic") {
			t.Errorf("%v unreachable: exit %d, want 1 and one line naming port %s; stderr:\n%s", c.args, code, free, msg)
		}
	}
}

func unusedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strings.TrimPrefix(ln.Addr().String(), "127.0.0.1:")
}

// devDB is a fresh database for a dev stack; the worker user dev creates on
// it (devstack.WorkerName) is dropped with it.
func devDB(t *testing.T) *mysqltest.DB {
	t.Helper()
	db := mysqltest.Empty(t)
	t.Cleanup(func() { _, _ = db.Root.Exec("DROP USER IF EXISTS '" + devstack.WorkerName(db.Name) + "'@'%'") })
	return db
}
