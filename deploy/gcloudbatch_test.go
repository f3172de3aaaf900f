package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// A gcloud process spends about a second of CPU starting Python and loading
// its command tree, so ~260 calls, one process each, take minutes on a
// small, shared machine. gcloudBatch runs the same installed gcloud (its
// own lib/gcloud.py, the Python it ships, the CLI object gcloud_main builds,
// and its Execute, which parses and runs exactly as the gcloud script does)
// once per worker, and hands it one command line after another; each
// command's stdout and stderr are captured at the file descriptors, as a
// separate process would have them. Jobs come in on fd 3 and results go out
// on fd 4, so a command that reads stdin (--data-file=-) reads /dev/null.
// TestGcloudBatchAgrees checks that it reports what gcloud itself does.
const gcloudBatch = `import json, os, sys, tempfile
sys.path.insert(0, sys.argv[1])
import gcloud
sys.path = gcloud.reorder_sys_path(sys.path)
cli = gcloud._import_gcloud_main().CreateCLI([])
jobs = os.fdopen(3, "r")
results = os.fdopen(4, "w")
for line in jobs:
    args = json.loads(line)
    code = 0
    with tempfile.TemporaryFile() as f:
        sys.stdout.flush(); sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(f.fileno(), 1); os.dup2(f.fileno(), 2)
        try:
            cli.Execute(args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException as e:
            code = 99
            sys.stderr.write("gcloud batch: %r\n" % (e,))
        sys.stdout.flush(); sys.stderr.flush()
        os.dup2(saved[0], 1); os.dup2(saved[1], 2)
        os.close(saved[0]); os.close(saved[1])
        f.seek(0)
        out = f.read().decode("utf-8", "replace")
    results.write(json.dumps({"code": code, "output": out}) + "\n")
    results.flush()
`

// sdkRoot returns the installation the gcloud on PATH belongs to, and the
// Python it runs on (the bundled one, as bin/gcloud prefers).
func sdkRoot(t *testing.T, gcloud string) (lib, python string) {
	t.Helper()
	real, err := filepath.EvalSymlinks(gcloud)
	if err != nil {
		t.Fatalf("resolve %s: %v", gcloud, err)
	}
	root := filepath.Dir(filepath.Dir(real))
	lib = filepath.Join(root, "lib")
	if _, err := os.Stat(filepath.Join(lib, "gcloud.py")); err != nil {
		t.Fatalf("%s is not an installed %s (no lib/gcloud.py under %s): %v", gcloud, gcloudPackage, root, err)
	}
	python = filepath.Join(root, "platform", "bundledpythonunix", "bin", "python3")
	if _, err := os.Stat(python); err != nil {
		if python, err = exec.LookPath("python3"); err != nil {
			t.Fatalf("no Python for %s: %v", gcloudPackage, err)
		}
	}
	return lib, python
}

// replayBatch runs every command through gcloudBatch on replayWorkers
// worker processes, each with its own empty configuration folder.
func replayBatch(t *testing.T, gcloud string, runs []gcloudRun) []gcloudRun {
	t.Helper()
	lib, python := sdkRoot(t, gcloud)
	script := filepath.Join(t.TempDir(), "gcloud_batch.py")
	if err := os.WriteFile(script, []byte(gcloudBatch), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()

	out := make([]gcloudRun, len(runs))
	jobs := make(chan int)
	var wg sync.WaitGroup
	errs := make([]error, replayWorkers)
	for w := range replayWorkers {
		dir := t.TempDir()
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[w] = batchWorker(ctx, python, script, lib, gcloud, dir, runs, out, jobs)
		}()
	}
	for i := range runs {
		select {
		case jobs <- i:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("gcloud batch worker: %v", err)
		}
	}
	return out
}

func batchWorker(ctx context.Context, python, script, lib, gcloud, dir string, runs, out []gcloudRun, jobs <-chan int) error {
	jobR, jobW, err := os.Pipe()
	if err != nil {
		return err
	}
	resR, resW, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, python, script, lib)
	cmd.Env = sandboxEnv(gcloud, dir)
	cmd.Dir = dir
	cmd.ExtraFiles = []*os.File{jobR, resW}
	var diag bytes.Buffer
	cmd.Stdout, cmd.Stderr = &diag, &diag
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", python, err)
	}
	_ = jobR.Close()
	_ = resW.Close()
	results := bufio.NewReader(resR)
	enc := json.NewEncoder(jobW)
	var failed error
	for i := range jobs {
		if failed != nil {
			continue // drain, so that the feeder never blocks
		}
		if err := enc.Encode(runs[i].args); err != nil {
			failed = fmt.Errorf("send a command: %w\n%s", err, diag.String())
			continue
		}
		line, err := results.ReadBytes('\n')
		if err != nil {
			failed = fmt.Errorf("read the result of gcloud %v: %w\n%s", runs[i].args, err, diag.String())
			continue
		}
		var res struct {
			Code   int    `json:"code"`
			Output string `json:"output"`
		}
		if err := json.Unmarshal(line, &res); err != nil {
			failed = fmt.Errorf("result %q: %w", line, err)
			continue
		}
		out[i] = runs[i]
		out[i].code, out[i].stderr = res.Code, res.Output
	}
	_ = jobW.Close()
	werr := cmd.Wait()
	_ = resR.Close()
	if failed != nil {
		return failed
	}
	if werr != nil {
		return fmt.Errorf("gcloud batch exited: %w\n%s", werr, diag.String())
	}
	return nil
}
