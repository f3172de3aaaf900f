package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/backbone-sync/backbone/internal/devstack"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// runWith runs the CLI in-process with env as its whole environment.
func runWith(env map[string]string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	c := &cli{stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }}
	code = run(context.Background(), c, args)
	return code, out.String(), errb.String()
}

// verbArgs are, per verb, arguments that pass its own checks, so that a
// test reaches what it means to test.
var verbArgs = map[string][]string{
	"serve": {}, "dev": {}, "migrate": {"status"}, "grants": {}, "provision": {"--env", "sandbox"},
	"publish": {"../../examples/customer-create.json"}, "stress": {"--skip-pubsub"}, "bench": {"--quick"},
	"dlq": {"list"}, "outbox": {"flush"}, "trace": {"customer:C-1"}, "rebuild": {}, "status": {}, "console": {},
}

// TestHelpOnStdout: -h, -help, --help and `backbone help VERB` print the
// verb's help to standard output and exit 0, for every verb.
func TestHelpOnStdout(t *testing.T) {
	t.Parallel()
	for verb := range commands() {
		if _, ok := verbArgs[verb]; !ok {
			t.Errorf("verb %s has no entry in verbArgs", verb)
		}
		for _, args := range [][]string{{verb, "-h"}, {verb, "-help"}, {verb, "--help"}, {"help", verb}, append([]string{verb}, append(verbArgs[verb], "--help")...)} {
			code, out, errs := runWith(map[string]string{"BACKBONE_ENV": "bogus"}, args...)
			if code != 0 || !strings.Contains(out, "usage: backbone "+verb) || errs != "" {
				t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, firstLine(out), errs)
			}
		}
	}
	for _, args := range [][]string{{"dlq", "list", "--help"}, {"help", "dlq", "show"}, {"dlq", "redrive", "-h"}} {
		if code, out, errs := runWith(nil, args...); code != 0 || !strings.Contains(out, "usage: backbone dlq") || errs != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, firstLine(out), errs)
		}
	}
	for _, args := range [][]string{{"-h"}, {"-help"}, {"--help"}, {"help"}} {
		if code, out, errs := runWith(nil, args...); code != 0 || !strings.Contains(out, "verbs:") || errs != "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, errs)
		}
	}
	if code, _, errs := runWith(nil); code != 2 || !strings.Contains(errs, "usage:") {
		t.Errorf("no verb: exit %d, stderr %q", code, errs)
	}
	if code, _, errs := runWith(nil, "-bogus"); code != 2 || !strings.Contains(errs, "unknown verb") {
		t.Errorf("unknown verb: exit %d, stderr %q", code, errs)
	}
}

// TestExitCodesAlike: a bad BACKBONE_ENV and an unknown flag are usage
// errors (2) for every verb, each reported in one line.
func TestExitCodesAlike(t *testing.T) {
	t.Parallel()
	for verb := range commands() {
		args := append([]string{verb}, verbArgs[verb]...)
		code, _, errs := runWith(map[string]string{"BACKBONE_ENV": "staging", "EVENT_STORE_DSN": "root@tcp(127.0.0.1:1)/x"}, args...)
		if code != 2 || !strings.Contains(errs, "BACKBONE_ENV") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("%v with BACKBONE_ENV=staging: exit %d, stderr %q", args, code, errs)
		}
		args = append(args, "--no-such-flag")
		code, _, errs = runWith(map[string]string{"BACKBONE_ENV": "sandbox"}, args...)
		if code != 2 || !strings.Contains(errs, "no-such-flag") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q", args, code, errs)
		}
	}
	// A missing setting is a usage error too.
	for _, args := range [][]string{{"trace", "customer:C-1"}, {"dlq", "list"}, {"publish", "../../examples/customer-create.json"}, {"outbox", "flush"}} {
		if code, _, errs := runWith(map[string]string{}, args...); code != 2 {
			t.Errorf("%v with nothing set: exit %d, want 2; stderr %q", args, code, errs)
		}
	}
}

// TestFlagsBeforeOrAfterPositionals: the same command line with its flags
// moved after the positional arguments means the same.
func TestFlagsBeforeOrAfterPositionals(t *testing.T) {
	t.Parallel()
	db := mysqltest.New(t)
	env := map[string]string{"EVENT_STORE_DSN": db.DSN}
	for _, pair := range [][2][]string{
		{{"trace", "--json", "customer:C-1"}, {"trace", "customer:C-1", "--json"}},
		{{"migrate", "--dsn", db.DSN, "status"}, {"migrate", "status", "--dsn", db.DSN}},
		{{"dlq", "list", "--json", "--stage", "merge"}, {"dlq", "list", "--stage", "merge", "--json"}},
		{{"grants", "--database", "x"}, {"grants", "--database=x"}},
	} {
		c1, o1, e1 := runWith(env, pair[0]...)
		c2, o2, e2 := runWith(env, pair[1]...)
		if c1 != c2 || o1 != o2 || e1 != e2 || c1 == 2 {
			t.Errorf("%v: exit %d %q; %v: exit %d %q", pair[0], c1, e1, pair[1], c2, e2)
		}
	}
	// After "--" everything is positional.
	if code, _, errs := runWith(env, "trace", "--", "--json"); code != 2 || !strings.Contains(errs, "RECORD_TYPE:RECORD_ID") {
		t.Errorf("trace -- --json: exit %d, %q", code, errs)
	}
}

// TestEnumeratedFlags reject values they do not know, with exit 2.
func TestEnumeratedFlags(t *testing.T) {
	t.Parallel()
	env := map[string]string{"BACKBONE_ENV": "sandbox", "EVENT_STORE_DSN": "root@tcp(127.0.0.1:1)/x"}
	for _, args := range [][]string{
		{"dlq", "list", "--stage", "bogus"},
		{"dlq", "redrive", "--stage", "bogus"},
		{"dev", "--emulator", "bogus"},
		{"dev", "--env", "staging"},
		{"provision", "--env", "staging"},
	} {
		code, _, errs := runWith(env, args...)
		if code != 2 || !strings.Contains(errs, "bogus") && !strings.Contains(errs, "staging") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errs)
		}
	}
}

// TestDevProject: dev's project is GCP_PROJECT, then GOOGLE_CLOUD_PROJECT,
// then backbone-dev, as every other verb resolves it.
func TestDevProject(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, devstack.Project},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "g"}, "g"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "g", "GCP_PROJECT": "p"}, "p"},
	} {
		if got := devProjectFrom(func(k string) string { return c.env[k] }); got != c.want {
			t.Errorf("%v: %s, want %s", c.env, got, c.want)
		}
	}
}

// TestNoPanicReachesTheUser: a verb that panics is one line, exit 1.
func TestNoPanicReachesTheUser(t *testing.T) {
	t.Parallel()
	var errb bytes.Buffer
	c := &cli{stdout: &bytes.Buffer{}, stderr: &errb, getenv: func(string) string { panic("boom") }}
	code := run(context.Background(), c, []string{"trace", "customer:C-1"})
	if out := errb.String(); code != 1 || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "boom") || strings.Contains(out, "goroutine") {
		t.Errorf("panic: exit %d, stderr %q", code, out)
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
