package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
)

func TestPublishVerb(t *testing.T) {
	t.Parallel()
	ps := pubsubtest.New(t, config.Sandbox, true)
	envs := map[string]string{"BACKBONE_ENV": "sandbox", "GCP_PROJECT": pubsubtest.Project, "PUBSUB_EMULATOR_HOST": ps.Addr()}
	var out, errb bytes.Buffer
	c := &cli{stdout: &out, stderr: &errb, getenv: func(k string) string { return envs[k] }}
	f := t.TempDir() + "/events.jsonl"
	writeFile(t, f, `{"record_type":"customer","record_id":"C-1","n":1}`+"\n"+`{"record_type":"customer","record_id":"C-2","n":2}`+"\n")
	// Flags after the file, as before it.
	if code := run(context.Background(), c, []string{"publish", f, "--verbose"}); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	got := ps.Drain(t, ps.Names.MergeSub)
	if len(lines) != 3 || len(got) != 2 || !strings.HasPrefix(lines[2], "publish: 2 published to events.raw.sandbox (project "+pubsubtest.Project) ||
		!strings.HasSuffix(lines[2], ", 0 rejected locally") || !strings.HasSuffix(lines[0], "  customer:C-1") {
		t.Fatalf("printed %q, received %d", lines, len(got))
	}
	for _, m := range got {
		if m.Attributes["env"] != "sandbox" || !strings.HasPrefix(m.OrderingKey, "customer:C-") || !strings.Contains(out.String(), m.ID) {
			t.Errorf("message %+v", m)
		}
	}
	if code := run(context.Background(), c, []string{"publish"}); code != 2 {
		t.Errorf("no file: exit %d, want 2", code)
	}
	// Without --verbose: the summary line only.
	out.Reset()
	if code := run(context.Background(), c, []string{"publish", f}); code != 0 || strings.Count(out.String(), "\n") != 1 {
		t.Errorf("exit %d, printed %q", code, out.String())
	}
	ps.Drain(t, ps.Names.MergeSub)
	// One event that is not JSON: nothing published, counted, exit 1.
	bad := t.TempDir() + "/bad.jsonl"
	writeFile(t, bad, `{"record_type":"customer","record_id":"C-1"}`+"\n{oops\n")
	out.Reset()
	errb.Reset()
	if code := run(context.Background(), c, []string{"publish", bad}); code != 1 || !strings.Contains(out.String(), "0 published, 1 rejected locally") ||
		!strings.Contains(errb.String(), "line 2 is not valid JSON") {
		t.Errorf("invalid line: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	// A project the topology is not in: the error names it, the emulator
	// and the fix.
	envs["GCP_PROJECT"] = "my-team-project"
	errb.Reset()
	if code := run(context.Background(), c, []string{"publish", f}); code != 1 || !strings.Contains(errb.String(), "project my-team-project") ||
		!strings.Contains(errb.String(), ps.Addr()) || !strings.Contains(errb.String(), "export line") || strings.Count(strings.TrimSpace(errb.String()), "\n") != 0 {
		t.Errorf("missing topic: exit %d, %s", code, errb.String())
	}
	envs["GCP_PROJECT"] = pubsubtest.Project
	// A bad BACKBONE_ENV is a usage error (2), as for every verb.
	envs["BACKBONE_ENV"] = "staging"
	errb.Reset()
	if code := run(context.Background(), c, []string{"publish", f}); code != 2 || !strings.Contains(errb.String(), "BACKBONE_ENV") {
		t.Errorf("bad env: exit %d, %s", code, errb.String())
	}
}
