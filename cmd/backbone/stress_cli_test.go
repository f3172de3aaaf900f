package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/internal/devstack"
	"github.com/backbone-sync/backbone/internal/stress"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/store/mysql"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// `backbone stress` through the CLI: exit codes, the step denominators the
// predecessor got wrong (3 without the Pub/Sub probe, 4 with it), fail-fast
// on an over-privileged user, and the --json summary.

// stressRun runs `backbone stress ARGS` with env as the whole environment.
func stressRun(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	c := &cli{stdout: &out, stderr: &errOut, getenv: func(k string) string { return env[k] }}
	code = run(context.Background(), c, append([]string{"stress"}, args...))
	return code, out.String(), errOut.String()
}

// deleteWorker returns the DSN of a sync_worker-style user that was also
// granted DELETE: one privilege too many must fail the run.
func deleteWorker(t *testing.T, db *mysqltest.DB) string {
	t.Helper()
	_, cfg := db.Worker(t)
	mc, err := mysql.ParseDSN(cfg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Root.Exec(fmt.Sprintf("GRANT DELETE ON `%s`.`events` TO '%s'@'%%'", db.Name, mc.User)); err != nil {
		t.Fatal(err)
	}
	return cfg.DSN
}

// stepLines returns the progress lines of stdout, checking that each one
// carries the denominator want ("[k/want]").
func stepLines(t *testing.T, out string, want int) []string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "[") {
			continue
		}
		lines = append(lines, l)
		if !strings.Contains(l, fmt.Sprintf("/%d] ", want)) {
			t.Errorf("line %q: want denominator %d", l, want)
		}
	}
	if len(lines) == 0 {
		t.Errorf("no step lines in %q", out)
	}
	return lines
}

// checkRefused checks a run as an over-privileged user: exit 1 after the
// privilege check alone, which names the offending privilege.
func checkRefused(t *testing.T, code int, out, errOut string, total int, privilege string) {
	t.Helper()
	if code != 1 {
		t.Fatalf("exit %d, want 1\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	lines := stepLines(t, out, total)
	want := fmt.Sprintf("[1/%d] least-privilege check: FAILED", total)
	if !strings.Contains(out, want) || !strings.Contains(out, privilege) {
		t.Errorf("stdout %q: want %q naming %s", out, want, privilege)
	}
	if strings.Contains(out, fmt.Sprintf("[2/%d]", total)) || len(lines) != 2 {
		t.Errorf("ran past the failed privilege check:\n%s", out)
	}
	if strings.Contains(out, "all steps passed") || !strings.Contains(errOut, "verification failed") {
		t.Errorf("failure not reported: stdout %q stderr %q", out, errOut)
	}
}

// checkPassed checks a healthy run: exit 0, every step [k/total] ok.
func checkPassed(t *testing.T, code int, out, errOut string, total int) {
	t.Helper()
	if code != 0 {
		t.Fatalf("exit %d, want 0\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	stepLines(t, out, total)
	for k := 1; k <= total; k++ {
		if !strings.Contains(out, fmt.Sprintf("[%d/%d] ", k, total)) {
			t.Errorf("step %d/%d missing:\n%s", k, total, out)
		}
	}
	if strings.Contains(out, "FAILED") || !strings.Contains(out, fmt.Sprintf("[%d/%d]", total, total)) || !strings.Contains(out, "all steps passed") {
		t.Errorf("stdout:\n%s", out)
	}
}

// decodeSummary parses --json output: stdout must be exactly one summary.
func decodeSummary(t *testing.T, out string) stress.Summary {
	t.Helper()
	var sum stress.Summary
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sum); err != nil {
		t.Fatalf("--json output is not a summary: %v\n%s", err, out)
	}
	if dec.More() {
		t.Fatalf("--json output has more than the summary:\n%s", out)
	}
	return sum
}

func TestStressCLISkipPubSub(t *testing.T) {
	t.Parallel()
	db := mysqltest.New(t)
	_, worker := db.Worker(t)
	withDelete := deleteWorker(t, db)
	// No BACKBONE_ENV: --skip-pubsub needs none.
	env := func(dsn string) map[string]string { return map[string]string{"EVENT_STORE_DSN": dsn} }

	t.Run("root is refused", func(t *testing.T) {
		t.Parallel()
		code, out, errOut := stressRun(t, env(db.DSN), "--skip-pubsub", "--n", "50")
		checkRefused(t, code, out, errOut, 3, "ALL PRIVILEGES") // step 2, the appends, never ran
	})
	t.Run("worker with DELETE is refused", func(t *testing.T) {
		t.Parallel()
		code, out, errOut := stressRun(t, env(withDelete), "--skip-pubsub", "--n", "50")
		checkRefused(t, code, out, errOut, 3, "DELETE")
	})
	t.Run("sync_worker passes", func(t *testing.T) {
		t.Parallel()
		code, out, errOut := stressRun(t, env(worker.DSN), "--skip-pubsub", "--n", "200", "--concurrency", "8")
		checkPassed(t, code, out, errOut, 3)
		if !strings.Contains(out, "200 events, no duplicates") {
			t.Errorf("integrity step does not report the 200 events:\n%s", out)
		}
	})
	t.Run("json", func(t *testing.T) {
		t.Parallel()
		code, out, errOut := stressRun(t, env(worker.DSN), "--skip-pubsub", "--json", "--n", "100", "--records", "5", "--concurrency", "4")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		sum := decodeSummary(t, out)
		if !sum.OK || len(sum.Steps) != 3 || sum.Appends != 100 || sum.RunID == "" || sum.AppendsPerSec <= 0 {
			t.Fatalf("summary %+v", sum)
		}
		for _, s := range sum.Steps {
			if !s.OK || s.Name == "" || s.Detail == "" || s.Duration <= 0 {
				t.Errorf("step %+v", s)
			}
		}
		// The run's appends are in the store under its run id.
		if n := count(t, db, "SELECT COUNT(*) FROM events WHERE record_type = ? AND record_id LIKE ?", stress.RecordType, sum.RunID+"-%"); n != 100 {
			t.Errorf("%d events of run %s stored, want 100", n, sum.RunID)
		}

		code, out, _ = stressRun(t, env(withDelete), "--skip-pubsub", "--json", "--n", "10")
		if code != 1 {
			t.Fatalf("exit %d with DELETE, want 1", code)
		}
		sum = decodeSummary(t, out)
		if sum.OK || len(sum.Steps) != 1 || sum.Steps[0].OK || !strings.Contains(sum.Steps[0].Detail, "DELETE") {
			t.Errorf("summary of a refused run %+v", sum)
		}
	})
}

// TestStressCLIWithPubSub runs the verification against a running dev
// stack: step 4 publishes a raw event through its Pub/Sub and waits until
// the stack's Merge has stored and published it.
func TestStressCLIWithPubSub(t *testing.T) {
	t.Parallel()
	db := mysqltest.Empty(t)
	d, err := startDev(context.Background(), devstack.Options{Env: config.Sandbox, DSN: db.DSN, FuncAddr: "127.0.0.1:0",
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Serve: devstack.ServeInProcess})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	// A user of its own: the dev stack's backbone_dev_worker is server-wide
	// and holds grants on every test database, which the check rightly
	// refuses as grants on more than one schema.
	_, worker := db.Worker(t)
	withDelete := deleteWorker(t, db)
	env := func(dsn string) map[string]string {
		return map[string]string{
			"BACKBONE_ENV":         string(config.Sandbox),
			"PUBSUB_EMULATOR_HOST": d.Emulator,
			"GCP_PROJECT":          devstack.Project,
			"EVENT_STORE_DSN":      dsn,
		}
	}

	// The cases run in parallel inside a group, so that the check after the
	// group sees them all done.
	t.Run("cases", func(t *testing.T) { stressWithPubSubCases(t, env, db.DSN, withDelete, worker.DSN) })

	// The probe went through the stack: its events were merged there.
	if n := count(t, db, "SELECT COUNT(*) FROM events WHERE record_type = ? AND processed = 1", stress.RecordType+"_probe"); n < 2 {
		t.Errorf("%d probe events merged and published, want at least 2", n)
	}
}

func stressWithPubSubCases(t *testing.T, env func(string) map[string]string, rootDSN, withDelete, worker string) {
	t.Run("root is refused", func(t *testing.T) {
		t.Parallel()
		code, out, errOut := stressRun(t, env(rootDSN), "--n", "50")
		checkRefused(t, code, out, errOut, 4, "ALL PRIVILEGES")
	})
	t.Run("worker with DELETE is refused", func(t *testing.T) {
		t.Parallel()
		code, out, errOut := stressRun(t, env(withDelete), "--n", "50")
		checkRefused(t, code, out, errOut, 4, "DELETE")
	})
	t.Run("sync_worker passes", func(t *testing.T) {
		t.Parallel()
		code, out, errOut := stressRun(t, env(worker), "--n", "200", "--concurrency", "8")
		checkPassed(t, code, out, errOut, 4)
		if !strings.Contains(out, "[4/4] end-to-end Pub/Sub probe: ok") {
			t.Errorf("probe step:\n%s", out)
		}
	})
	t.Run("json", func(t *testing.T) {
		t.Parallel()
		code, out, errOut := stressRun(t, env(worker), "--json", "--n", "50", "--records", "5", "--concurrency", "4")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		sum := decodeSummary(t, out)
		if !sum.OK || len(sum.Steps) != 4 || sum.Steps[3].Name != "end-to-end Pub/Sub probe" || !sum.Steps[3].OK {
			t.Fatalf("summary %+v", sum)
		}
	})
	t.Run("probe fails without a backbone", func(t *testing.T) {
		t.Parallel()
		// The same user and store, but Pub/Sub of another (empty) project:
		// the probe's raw event is never merged. Fail-closed: exit 1 at 4/4.
		e := env(worker)
		e["GCP_PROJECT"] = "no-backbone-here"
		code, out, errOut := stressRun(t, e, "--n", "20", "--probe-timeout", "1s")
		if code != 1 || !strings.Contains(out, "[4/4] end-to-end Pub/Sub probe: FAILED") || !strings.Contains(out, "[3/4] integrity check: ok") {
			t.Errorf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
		}
	})
}

func count(t *testing.T, db *mysqltest.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Root.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
