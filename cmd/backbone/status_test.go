package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/internal/health"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// statusResult is `status --json`'s output.
type statusResult struct {
	Healthy  bool             `json:"healthy"`
	Problems []string         `json:"problems"`
	Snapshot *health.Snapshot `json:"snapshot"`
}

func statusJSON(t *testing.T, env map[string]string, args ...string) (int, statusResult, string) {
	t.Helper()
	code, stdout, stderr := dlqRun(t, env, append([]string{"status", "--json"}, args...)...)
	var r statusResult
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("status --json: exit %d, not JSON (%v):\n%s\n%s", code, err, stdout, stderr)
	}
	return code, r, stderr
}

func target(t *testing.T, s *health.Snapshot, name string) health.Target {
	t.Helper()
	for _, tg := range s.Targets {
		if tg.Name == name {
			return tg
		}
	}
	t.Fatalf("no target %s in %+v", name, s.Targets)
	return health.Target{}
}

// TestStatusOnTheDevStack: healthy once every record converged (exit 0,
// deliveries counted, nothing unconverged, backlogs n/a on the emulator);
// then SuiteX goes down until a delivery is dead-lettered: exit 1, the dead
// letter by stage and reason, SuiteX's failure rate, and the record SuiteX
// lacks, with the fields it lacks.
func TestStatusOnTheDevStack(t *testing.T) {
	t.Parallel()
	db := mysqltest.Empty(t)
	ft := newFaultTargets(t)
	down := ft.failSuiteX()
	d, pub := startDevWith(t, db.DSN, ft, 50*time.Millisecond, 200*time.Millisecond)
	env := map[string]string{"BACKBONE_ENV": "sandbox", "EVENT_STORE_DSN": d.WorkerDSN, "PUBSUB_EMULATOR_HOST": d.Emulator, "GCP_PROJECT": d.Project}

	c := &chain{prefix: "stok", records: 3, versions: 2, targets: ft}
	c.publishVersions(t, pub, config.Sandbox, 0, 2)
	c.waitConverged(t, db, ft, time.Minute)
	code, r, stderr := statusJSON(t, env)
	if code != 0 || !r.Healthy || len(r.Problems) != 0 {
		t.Fatalf("healthy stack: exit %d, problems %v\n%s", code, r.Problems, stderr)
	}
	s := r.Snapshot
	if ns, sx := target(t, s, "netsuite"), target(t, s, "suitex"); ns.Delivered == 0 || sx.Delivered == 0 || ns.FailureRate != 0 || sx.FailureRate != 0 ||
		ns.LastDelivered == nil || sx.LastDelivered == nil {
		t.Errorf("targets: %+v", s.Targets)
	}
	if s.Unconverged.Count != 0 || s.Unconverged.Checked != c.records {
		t.Errorf("unconverged: %+v, want 0 of %d checked", s.Unconverged, c.records)
	}
	if s.Outbox.Unprocessed != 0 || s.DeadLetters.LastDay != 0 {
		t.Errorf("outbox %+v, dead letters %+v", s.Outbox, s.DeadLetters)
	}
	if len(s.Subscriptions) != 5 || s.Subscriptions[0].Backlog != nil || !strings.Contains(s.Subscriptions[0].Note, "emulator") {
		t.Errorf("subscriptions on the emulator: %+v", s.Subscriptions)
	}
	merged := 0
	for _, b := range s.Chart {
		merged += b.Merged
	}
	if merged != c.records*c.versions {
		t.Errorf("chart counts %d merges, want %d", merged, c.records*c.versions)
	}
	code, text, _ := dlqRun(t, env, "status")
	if code != 0 || !strings.Contains(text, "HEALTHY") || !strings.Contains(text, "n/a") {
		t.Errorf("status: exit %d\n%s", code, text)
	}

	// SuiteX down: a NetSuite change cannot reach it, Retry dead-letters it.
	down.Store(true)
	bad := &chain{prefix: "sbad", records: 1, versions: 1, targets: ft}
	bad.publishVersions(t, pub, config.Sandbox, 0, 1)
	deadline := time.Now().Add(90 * time.Second)
	for deadLetterCount(t, db, "WHERE stage = 'suitex'") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the SuiteX delivery was not dead-lettered")
		}
		time.Sleep(100 * time.Millisecond)
	}
	code, r, _ = statusJSON(t, env, "--unconverged-grace", "0s")
	if code != 1 || r.Healthy {
		t.Fatalf("unhealthy stack: exit %d, healthy %v", code, r.Healthy)
	}
	s = r.Snapshot
	if s.DeadLetters.LastHour < 1 || len(s.DeadLetters.ByReason) == 0 || s.DeadLetters.ByReason[0].Stage != "suitex" ||
		s.DeadLetters.ByReason[0].Reason != "http_503" {
		t.Errorf("dead letters: %+v", s.DeadLetters)
	}
	if sx := target(t, s, "suitex"); sx.Failed+sx.Refused == 0 || sx.FailureRate <= 0 {
		t.Errorf("suitex: %+v", sx)
	}
	if s.Unconverged.Count != 1 || s.Unconverged.Oldest == nil || s.Unconverged.Oldest.RecordID != bad.rid(0) ||
		len(s.Unconverged.Oldest.Missing["suitex"]) == 0 || len(s.Unconverged.Oldest.Missing["netsuite"]) != 0 {
		t.Errorf("unconverged: %+v", s.Unconverged)
	}
	joined := strings.Join(r.Problems, "\n")
	for _, want := range []string{"dead letter(s) in the last hour", "suitex: failure rate", "not converged"} {
		if !strings.Contains(joined, want) {
			t.Errorf("problems miss %q:\n%s", want, joined)
		}
	}
	code, text, stderr = dlqRun(t, env, "status", "--unconverged-grace", "0s")
	if code != 1 || !strings.Contains(text, "UNHEALTHY") || !strings.Contains(text, "http_503") || !strings.Contains(stderr, "threshold") {
		t.Errorf("status: exit %d\n%s\n%s", code, text, stderr)
	}
	// Thresholds are flags: turned off, the same state passes.
	code, _, stderr = statusJSON(t, env, "--max-dead-letters-hour", "-1", "--max-failure-rate", "-1", "--max-unconverged", "-1")
	if code != 0 {
		t.Errorf("with every failing check off: exit %d\n%s", code, stderr)
	}
	if code, _, _ := dlqRun(t, env, "status", "--bogus"); code != 2 {
		t.Errorf("a bad flag: exit %d, want 2", code)
	}
}
