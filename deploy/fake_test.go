package deploy_test

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// fakeTool stands in for gcloud, docker, go and the backbone binary: it
// records every call (tool name and arguments, separated by US characters,
// one call a line), keeps what it was given on stdin for --data-file=-, keeps
// the variables named in FAKE_ENV_KEYS, and answers from a response table
// (glob on "tool args...", TAB, exit code, TAB, output with \n escapes). With
// no matching line, `describe` fails as NOT_FOUND and anything else succeeds
// silently, which is a project where nothing exists yet.
const fakeTool = `#!/usr/bin/env bash
name="$(basename "$0")"
n=$(( $(wc -l < "$FAKE_DIR/calls") + 1 ))
{ printf '%s' "$name"; for a in "$@"; do printf '\x1f%s' "$a"; done; printf '\n'; } >> "$FAKE_DIR/calls"
for a in "$@"; do
  if [[ "$a" == --data-file=- ]]; then cat > "$FAKE_DIR/stdin.$n"; fi
done
for k in ${FAKE_ENV_KEYS-}; do
  if [[ -v $k ]]; then printf '%s=%s\n' "$k" "${!k}"; else printf '%s\n' "$k"; fi
done > "$FAKE_DIR/env.$n"
if [[ "$name" == gcloud && "$1 $2 $3" == "run services describe" ]]; then
  echo "https://$4-abc.a.run.app"
  exit 0
fi
line="$name $*"
while IFS=$'\t' read -r pattern code output; do
  [[ -z "$pattern" ]] && continue
  if [[ "$line" == $pattern ]]; then
    [[ -n "$output" ]] && printf '%b\n' "$output"
    exit "$code"
  fi
done < "$FAKE_DIR/responses"
case " $* " in
  *" describe "*) echo "ERROR: (gcloud) NOT_FOUND: fake" >&2; exit 1 ;;
esac
exit 0
`

const (
	project       = "my-project"
	projectNumber = "123456789012"
	// migratorPW is what the fake Secret Manager returns for every access.
	migratorPW = "s3cr3t-migrator-pw"
)

// repoRoot is the repository root (this file lives in deploy/).
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller")
	}
	return filepath.Dir(filepath.Dir(file))
}

type fake struct {
	dir, bin string
	backbone string // path of the fake backbone binary
	deploy   string // the deploy/ directory the scripts run from
}

func newFake(t *testing.T) *fake {
	t.Helper()
	dir := t.TempDir()
	f := &fake{dir: dir, bin: filepath.Join(dir, "bin"), backbone: filepath.Join(dir, "backbone"), deploy: filepath.Join(repoRoot(t), "deploy")}
	if err := os.Mkdir(f.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(f.bin, "gcloud"), filepath.Join(f.bin, "docker"), filepath.Join(f.bin, "go"), f.backbone} {
		if err := os.WriteFile(p, []byte(fakeTool), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"calls", "responses"} {
		if err := os.WriteFile(filepath.Join(dir, p), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f.respond(
		"gcloud projects describe *\t0\t"+projectNumber,
		"gcloud secrets versions access *\t0\t"+migratorPW,
	)
	return f
}

// respond appends response lines; earlier lines win.
func (f *fake) respond(lines ...string) {
	fh, err := os.OpenFile(filepath.Join(f.dir, "responses"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		panic(err)
	}
	defer fh.Close()
	for _, l := range lines {
		if _, err := fh.WriteString(l + "\n"); err != nil {
			panic(err)
		}
	}
}

type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return "exit " + strconv.Itoa(r.code) + "\nstdout:\n" + r.stdout + "\nstderr:\n" + r.stderr
}

// run runs deploy/<script> with the fakes first on PATH and a clean
// environment (plus extra KEY=VALUE entries).
func (f *fake) run(t *testing.T, script string, extra []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(filepath.Join(f.deploy, script), args...)
	cmd.Dir = f.dir
	cmd.Env = append([]string{
		"PATH=" + f.bin + ":/usr/local/bin:/usr/bin:/bin",
		"HOME=" + f.dir,
		"LANG=C",
		"FAKE_DIR=" + f.dir,
	}, extra...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %s: %v", script, err)
	}
	return result{code, out.String(), errb.String()}
}

type call struct {
	n    int
	tool string
	args []string
}

func (c call) String() string { return c.tool + " " + strings.Join(c.args, " ") }

// is reports whether the call's first arguments are prefix.
func (c call) is(tool string, prefix ...string) bool {
	if c.tool != tool || len(c.args) < len(prefix) {
		return false
	}
	for i, p := range prefix {
		if c.args[i] != p {
			return false
		}
	}
	return true
}

func (c call) has(arg string) bool {
	for _, a := range c.args {
		if a == arg {
			return true
		}
	}
	return false
}

// flag returns the value of --name=value or "--name value".
func (c call) flag(name string) (string, bool) {
	for i, a := range c.args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
		if a == name && i+1 < len(c.args) {
			return c.args[i+1], true
		}
	}
	return "", false
}

func (c call) env(t *testing.T, f *fake) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "env."+strconv.Itoa(c.n)))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

func (c call) stdin(t *testing.T, f *fake) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "stdin."+strconv.Itoa(c.n)))
	if err != nil {
		t.Fatalf("no stdin recorded for %s: %v", c, err)
	}
	return string(b)
}

func (f *fake) calls(t *testing.T) []call {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "calls"))
	if err != nil {
		t.Fatal(err)
	}
	var out []call
	for i, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if l == "" {
			continue
		}
		parts := strings.Split(l, "\x1f")
		out = append(out, call{n: i + 1, tool: parts[0], args: parts[1:]})
	}
	return out
}

func (f *fake) find(t *testing.T, tool string, prefix ...string) []call {
	t.Helper()
	var out []call
	for _, c := range f.calls(t) {
		if c.is(tool, prefix...) {
			out = append(out, c)
		}
	}
	return out
}

// listen opens a TCP listener that accepts and drops connections, standing
// in for a database port; it returns host:port.
func listen(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return ln.Addr().String()
}
