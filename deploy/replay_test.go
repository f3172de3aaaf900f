package deploy_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/config"
)

// The fake gcloud checks the scripts' logic; the tests here check the CLI's
// grammar. Every command line the deploy scripts give gcloud, in every
// branch, is replayed through the real gcloud with no credentials: it must
// get as far as "no active account", which gcloud says only after it has
// parsed every flag and value. An unknown flag, a bad value or a missing
// argument fails earlier, with another message.

// gcloudPackage is the Debian package of the real CLI (the machine image and
// deploy/ci-test.sh install release 528).
const gcloudPackage = "google-cloud-cli"

// noAccount is what gcloud 528 says when it has parsed a command and is about
// to call the API without credentials.
const noAccount = "You do not currently have an active account selected"

// replayWorkers bounds the concurrent gcloud processes: each is a Python
// start-up of about a second of CPU, and the machine has few cores.
const replayWorkers = 3

func realGcloud(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("gcloud")
	if err != nil {
		t.Fatalf("the real gcloud is not on PATH (%v): install the package %s (apt-get install %s); "+
			"these tests replay every deploy gcloud call through it and never skip", err, gcloudPackage, gcloudPackage)
	}
	return p
}

// gcloudRun is one real gcloud invocation and what came of it.
type gcloudRun struct {
	args   []string
	dir    string // working directory; empty: a temporary one
	code   int
	stdout string
	stderr string
}

// grammarProblem says why a replayed command was not accepted by gcloud's
// parser, or "" when it was (it reached the credentials check, or ran).
func grammarProblem(r gcloudRun) string {
	if r.code == 0 || strings.Contains(r.stderr, noAccount) {
		return ""
	}
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.HasPrefix(l, "ERROR:") {
			return strings.TrimSpace(l)
		}
	}
	if s := strings.TrimSpace(r.stderr); s != "" {
		return s
	}
	return "exit code " + strconv.Itoa(r.code) + " with nothing on stderr"
}

// sandboxEnv is the environment of a real gcloud run: its own configuration
// folder, no credentials of any kind (not even the metadata server of a
// Cloud Build worker, which would make these commands act on a real
// project), and any network attempt sent to a closed loopback port.
func sandboxEnv(gcloud, configDir string) []string {
	return []string{
		"PATH=" + filepath.Dir(gcloud) + ":/usr/bin:/bin",
		"HOME=" + configDir,
		"LANG=C.UTF-8",
		"CLOUDSDK_CONFIG=" + configDir,
		"CLOUDSDK_CORE_CHECK_GCE_METADATA=false",
		"CLOUDSDK_CORE_DISABLE_USAGE_REPORTING=true",
		"CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=true",
		"CLOUDSDK_CORE_DISABLE_PROMPTS=1",
		"GCE_METADATA_HOST=127.0.0.1:9",
		"GCE_METADATA_IP=127.0.0.1:9",
		"HTTP_PROXY=http://127.0.0.1:9",
		"HTTPS_PROXY=http://127.0.0.1:9",
		"http_proxy=http://127.0.0.1:9",
		"https_proxy=http://127.0.0.1:9",
	}
}

// runGcloud runs the real gcloud once; configDir is owned by the caller's
// worker, since concurrent gcloud processes would race on one.
func runGcloud(ctx context.Context, gcloud, configDir string, r gcloudRun) gcloudRun {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, gcloud, r.args...)
	cmd.Env = sandboxEnv(gcloud, configDir)
	cmd.Dir = r.dir
	if cmd.Dir == "" {
		cmd.Dir = configDir
	}
	var outb, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outb, &errb
	err := cmd.Run()
	r.stdout, r.stderr = outb.String(), errb.String()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		r.code = -1
		r.stderr += "\n" + err.Error()
	}
	if ctx.Err() != nil {
		r.code = -1
		r.stderr = "ERROR: timed out after 90s\n" + r.stderr
	}
	return r
}

// noCredentials stops the test unless gcloud, in the replay environment,
// sees no account at all: with one, the replay would change a real project.
func noCredentials(t *testing.T, gcloud string) {
	t.Helper()
	acct := runGcloud(t.Context(), gcloud, t.TempDir(), gcloudRun{args: []string{"auth", "list", "--format=value(account)"}})
	if acct.code != 0 {
		t.Fatalf("gcloud auth list failed (is %s installed whole?): exit %d\n%s", gcloudPackage, acct.code, acct.stderr)
	}
	if strings.TrimSpace(acct.stdout) != "" {
		t.Fatalf("the replay environment sees credentials (%q): refusing to replay", acct.stdout)
	}
}

// replay runs each command as its own gcloud process, on a bounded pool of
// workers, each with its own empty configuration folder.
func replay(t *testing.T, gcloud string, runs []gcloudRun) []gcloudRun {
	t.Helper()
	dirs := make([]string, replayWorkers)
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	out2 := make([]gcloudRun, len(runs))
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := range replayWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				out2[i] = runGcloud(t.Context(), gcloud, dirs[w], runs[i])
			}
		}()
	}
	for i := range runs {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return out2
}

// scenario runs one deploy script against the fake gcloud in one state of
// the project.
type scenario struct {
	name    string
	env     config.Env
	script  string
	extra   []string                // environment of the script
	prepare func(*testing.T, *fake) // responses of the fake gcloud
	fails   string                  // when set, the script must fail saying this
}

func writeEndpoints(t *testing.T, f *fake) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.dir, "endpoints"), []byte("Merge=https://m.example"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func secretValues() []string {
	var extra []string
	for _, v := range append(slices.Clone(netsuiteSecrets), suitexSecrets...) {
		extra = append(extra, v+"=value-of-"+strings.ToLower(v))
	}
	return extra
}

// scenarios: every script, both environments, and every branch: a project
// where nothing exists yet and one where everything does (for every script
// in scriptArgs, so a new script is covered once it is listed there), and
// the states in between that take other branches.
func scenarios() []scenario {
	var out []scenario
	var all []string
	for script := range scriptArgs(&fake{}, "") {
		all = append(all, script)
	}
	sort.Strings(all)
	for _, env := range config.Envs {
		e := string(env)
		hasVPC := func(_ *testing.T, f *fake) {
			f.respond("gcloud compute networks describe *\t0\t", "gcloud compute networks subnets describe *\t0\t")
		}
		good := func(t *testing.T, f *fake) {
			prod := env == config.Production
			avail := map[bool]string{false: "ZONAL", true: "REGIONAL"}[prod]
			existing(t, f, env, instanceJSON(avail, !prod, prod, "log_bin_trust_function_creators", "cloudsql_iam_authentication"))
		}
		for _, script := range all {
			out = append(out,
				scenario{name: e + "/" + script + "/nothing-exists", env: env, script: script, prepare: func(t *testing.T, f *fake) {
					hasVPC(t, f)
					f.respond(secretVersion)
					writeEndpoints(t, f)
				}},
				scenario{name: e + "/" + script + "/everything-exists", env: env, script: script, prepare: func(t *testing.T, f *fake) {
					good(t, f)
					writeEndpoints(t, f)
				}},
			)
		}
		out = append(out,
			// Secrets without versions take their values from the environment.
			scenario{name: e + "/setup/fresh-with-secret-values", env: env, script: "setup-env.sh", extra: secretValues(), prepare: hasVPC},
			// Users exist but the migrator secret lost its versions: a new
			// password is generated and set.
			scenario{name: e + "/setup/new-migrator-password", env: env, script: "setup-env.sh", prepare: func(t *testing.T, f *fake) {
				f.respond("gcloud secrets versions list backbone-" + e + "-migrator-password *\t0\t")
				good(t, f)
			}},
			scenario{name: e + "/setup/wrong-instance", env: env, script: "setup-env.sh", fails: "does not have the " + e + " shape",
				prepare: func(t *testing.T, f *fake) { existing(t, f, env, instanceJSON("NONE", true, false)) }},
			scenario{name: e + "/deploy/secret-missing", env: env, script: "cloudbuild-deploy.sh", fails: "without an enabled version"},
			// Policies, the dashboard and the log metric exist: updated.
			scenario{name: e + "/monitoring/exists", env: env, script: "monitoring.sh", prepare: func(_ *testing.T, f *fake) {
				f.respond("gcloud logging metrics describe *\t0\tname: m",
					"gcloud alpha monitoring policies list *\t0\tprojects/"+project+"/alertPolicies/1",
					"gcloud monitoring dashboards list *\t0\tprojects/"+projectNumber+"/dashboards/d1")
			}},
			scenario{name: e + "/console/invokers", env: env, script: "console.sh", extra: []string{"CONSOLE_INVOKERS=group:ops@example.com,user:a@example.com", "CONSOLE_OPERATORS=a@example.com"}},
		)
		if env == config.Production {
			out = append(out,
				scenario{name: e + "/setup/no-vpc", env: env, script: "setup-env.sh", fails: "VPC network"},
				scenario{name: e + "/setup/pool-on-another-network", env: env, script: "setup-env.sh", fails: "worker pool",
					prepare: func(t *testing.T, f *fake) {
						f.respond("gcloud builds worker-pools describe *\t0\tprojects/1/global/networks/default")
						good(t, f)
					}},
			)
		}
	}
	return out
}

// recordedCalls runs every scenario against the fake gcloud and returns the
// distinct gcloud command lines, each with the scenarios that gave it.
func recordedCalls(t *testing.T) (lines [][]string, from map[string][]string) {
	t.Helper()
	from = map[string][]string{}
	for _, sc := range scenarios() {
		f := newFake(t)
		if sc.prepare != nil {
			sc.prepare(t, f)
		}
		r := f.run(t, sc.script, sc.extra, scriptArgs(f, string(sc.env))[sc.script]...)
		switch {
		case sc.fails == "" && r.code != 0:
			t.Fatalf("scenario %s: %s", sc.name, r)
		case sc.fails != "" && (r.code == 0 || !strings.Contains(r.stderr, sc.fails)):
			t.Fatalf("scenario %s: want a failure saying %q; %s", sc.name, sc.fails, r)
		}
		for _, c := range f.calls(t) {
			if c.tool != "gcloud" {
				continue
			}
			key := strings.Join(c.args, "\x1f")
			if _, seen := from[key]; !seen {
				lines = append(lines, c.args)
			}
			from[key] = append(from[key], sc.name)
		}
	}
	return lines, from
}

// gcloudInScript finds the gcloud commands a script runs (through gcloud
// itself or its g/exists wrappers), as their leading command words, where a
// command starts: a line, $( , a pipe, && or ||, or after if/!. Commands
// quoted in messages for an operator are not run, so they are not listed.
var gcloudInScript = regexp.MustCompile(`(?:^\s*|\$\(|\|\| |&& |\| |\bif (?:! )?)(?:g|gcloud|exists) ([a-z][a-z0-9-]*(?: [a-z][a-z0-9-]*)*)`)

func TestGcloudAcceptsEveryDeployCall(t *testing.T) {
	t.Parallel()
	gcloud := realGcloud(t)
	noCredentials(t, gcloud)
	start := time.Now()
	lines, from := recordedCalls(t)

	// Every gcloud command written in a script was recorded by some scenario.
	var joined []string
	for _, l := range lines {
		joined = append(joined, strings.Join(l, " "))
	}
	for _, s := range scripts(t) {
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "#") {
				continue
			}
			for _, m := range gcloudInScript.FindAllStringSubmatch(l, -1) {
				if !slices.ContainsFunc(joined, func(j string) bool { return strings.HasPrefix(j, m[1]) }) {
					t.Errorf("%s runs `gcloud %s`, which no scenario reached: add one to scenarios()", filepath.Base(s), m[1])
				}
			}
		}
	}

	runs := make([]gcloudRun, len(lines))
	for i, l := range lines {
		runs[i] = gcloudRun{args: l}
	}
	// The negative cases ride in the same pool: a misspelled flag and a bad
	// value must be caught, or a pass above would prove nothing.
	runDeploy := -1
	for i, l := range lines {
		if len(l) > 2 && l[0] == "run" && l[1] == "deploy" {
			runDeploy = i
			break
		}
	}
	if runDeploy < 0 {
		t.Fatal("no gcloud run deploy was recorded")
	}
	misspelled := replaceArg(lines[runDeploy], "--max-instances=", "--max-instanses=")
	badValue := replaceArg(lines[runDeploy], "--timeout=", "--timeout=sixty")
	runs = append(runs, gcloudRun{args: misspelled}, gcloudRun{args: badValue})

	results := replayBatch(t, gcloud, runs)
	accepted := 0
	for _, r := range results[:len(lines)] {
		if p := grammarProblem(r); p != "" {
			t.Errorf("gcloud refuses a deploy call: %s\n  gcloud %s\n  from %v", p, strings.Join(r.args, " "), from[strings.Join(r.args, "\x1f")])
			continue
		}
		accepted++
	}
	for _, r := range results[len(lines):] {
		if p := grammarProblem(r); p == "" {
			t.Errorf("negative case passed, so the replay cannot catch a broken call: gcloud %s\n%s", strings.Join(r.args, " "), r.stderr)
		} else {
			t.Logf("negative case caught: %s", p)
		}
	}
	if !strings.Contains(results[len(lines)].stderr, "unrecognized arguments: --max-instanses") {
		t.Errorf("misspelled flag: want gcloud's unrecognized-arguments error, got:\n%s", results[len(lines)].stderr)
	}
	t.Logf("%d distinct gcloud calls from %d scenarios: %d accepted by the real gcloud in %s",
		len(lines), len(scenarios()), accepted, time.Since(start).Round(100*time.Millisecond))

	// The batch runner must say what gcloud itself says: the negative cases
	// and the first calls of three command groups, each as its own process.
	var sample []int
	groups := map[string]bool{}
	for i, l := range lines {
		if !groups[l[0]] && len(groups) < 3 {
			groups[l[0]] = true
			sample = append(sample, i)
		}
	}
	sample = append(sample, len(lines), len(lines)+1)
	var own []gcloudRun
	for _, i := range sample {
		own = append(own, gcloudRun{args: runs[i].args})
	}
	for k, r := range replay(t, gcloud, own) {
		if got, want := grammarProblem(results[sample[k]]), grammarProblem(r); got != want {
			t.Errorf("batch and gcloud disagree on gcloud %s:\n  batch:  %q\n  gcloud: %q", strings.Join(r.args, " "), got, want)
		}
	}
	t.Logf("%d of them also run as their own gcloud process, with the same outcome; %s in all",
		len(sample), time.Since(start).Round(100*time.Millisecond))
}

// replaceArg returns args with the argument that starts with prefix
// replaced by repl followed by the rest of its value.
func replaceArg(args []string, prefix, repl string) []string {
	out := slices.Clone(args)
	for i, a := range out {
		if v, ok := strings.CutPrefix(a, prefix); ok {
			if strings.HasSuffix(repl, "=") {
				out[i] = repl + v
			} else {
				out[i] = repl
			}
		}
	}
	return out
}

// readmeGcloud returns the gcloud command lines of deploy/README.md: in
// shell blocks (continuation lines joined; after a pipe, from "gcloud" on)
// and in inline code spans that give flags.
func readmeGcloud(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	inBlock := false
	var cur string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			inBlock = !inBlock
			continue
		}
		if !inBlock {
			for _, m := range inlineGcloud.FindAllStringSubmatch(l, -1) {
				if strings.Contains(m[1], " --") {
					out = append(out, m[1])
				}
			}
			continue
		}
		l = strings.TrimSpace(l)
		if cur == "" {
			k := strings.Index(l, "gcloud ")
			if k < 0 || strings.HasPrefix(l, "#") || (k > 0 && !strings.HasSuffix(strings.TrimSpace(l[:k]), "|")) {
				continue
			}
			l = l[k:]
		}
		cur += " " + strings.TrimSuffix(l, "\\")
		if strings.HasSuffix(l, "\\") {
			continue
		}
		out = append(out, strings.Join(strings.Fields(cur), " "))
		cur = ""
	}
	return out
}

var inlineGcloud = regexp.MustCompile("`(gcloud [^`]+)`")

// shellWords splits a README command line as the shell would: words, with
// '...' and "..." quoting (no variables or escapes inside).
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case strings.ContainsRune("$`|;&<>\\", r):
			t.Fatalf("README command %q has %q outside quotes: it must be copied as is", line, r)
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		t.Fatalf("README command %q: unterminated quote", line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// TestGcloudAcceptsTheREADME runs every gcloud line of deploy/README.md
// through the real gcloud from the repository root. For the two `gcloud
// builds submit` lines that proves the flags (--worker-pool with --region,
// --machine-type only without a pool) and that gcloud reads cloudbuild.yaml
// as a build config with no unknown field. Cloud Build refuses unused
// substitutions on its server, so those are checked here against the file.
func TestGcloudAcceptsTheREADME(t *testing.T) {
	t.Parallel()
	gcloud := realGcloud(t)
	lines := readmeGcloud(t)
	subs, _, yaml := parseCloudbuild(t)
	submits := map[config.Env][]string{}
	var runs []gcloudRun
	for _, l := range lines {
		words := shellWords(t, l)
		runs = append(runs, gcloudRun{args: words[1:], dir: repoRoot(t)})
		if !strings.HasPrefix(l, "gcloud builds submit ") {
			continue
		}
		for _, env := range config.Envs {
			if slices.Contains(words, "--substitutions=_ENV="+string(env)) {
				submits[env] = append(submits[env], l)
			}
		}
		for _, a := range words {
			list, ok := strings.CutPrefix(a, "--substitutions=")
			if !ok {
				continue
			}
			for _, kv := range strings.Split(list, ",") {
				k, _, _ := strings.Cut(kv, "=")
				if _, declared := subs[k]; !declared {
					t.Errorf("%q passes substitution %s, which cloudbuild.yaml does not declare (Cloud Build refuses it)", l, k)
				}
			}
		}
	}
	for _, env := range config.Envs {
		if len(submits[env]) != 1 {
			t.Fatalf("deploy/README.md has %d `gcloud builds submit` lines for %s, want 1: %v", len(submits[env]), env, submits[env])
		}
		if want := submitCommand(t, env); submits[env][0] != want {
			t.Errorf("deploy/README.md deploys %s with\n  %s\nwant what setup-env.sh prints:\n  %s", env, submits[env][0], want)
		}
	}
	for _, l := range yaml {
		if strings.Contains(l, "machineType") {
			t.Errorf("cloudbuild.yaml sets a machine type (%s): production's private pool refuses it; sandbox passes --machine-type", strings.TrimSpace(l))
		}
	}

	// Negative: the production command with a config that has an unknown
	// field must be refused.
	bad := filepath.Join(t.TempDir(), "cloudbuild.yaml")
	src, err := os.ReadFile(filepath.Join(repoRoot(t), "cloudbuild.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, bytes.Replace(src, []byte("\ntimeout:"), []byte("\ntimeoutt:"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	neg := shellWords(t, submits[config.Production][0])[1:]
	for i, a := range neg {
		if strings.HasPrefix(a, "--config=") {
			neg[i] = "--config=" + bad
		}
	}
	runs = append(runs, gcloudRun{args: append(neg, "--no-source"), dir: repoRoot(t)})

	noCredentials(t, gcloud)
	start := time.Now()
	results := replay(t, gcloud, runs)
	for _, r := range results[:len(results)-1] {
		if p := grammarProblem(r); p != "" {
			t.Errorf("gcloud refuses a README command: %s\n  gcloud %s", p, strings.Join(r.args, " "))
		}
	}
	last := results[len(results)-1]
	if p := grammarProblem(last); p == "" || !strings.Contains(last.stderr, "timeoutt: unused") {
		t.Errorf("a config with an unknown field was not refused: %q\n%s", p, last.stderr)
	}
	t.Logf("%d README gcloud lines accepted by the real gcloud, each as its own process, in %s",
		len(lines), time.Since(start).Round(100*time.Millisecond))
}

// TestGrammarProblem pins the classifier on gcloud 528's own messages.
func TestGrammarProblem(t *testing.T) {
	t.Parallel()
	cases := map[string]bool{
		"ERROR: (gcloud.sql.instances.create) " + noAccount + ".\nPlease run:\n":                                               true,
		"ERROR: (gcloud.run.deploy) unrecognized arguments: --regionn=us (did you mean '--region'?)":                           false,
		"ERROR: (gcloud.builds.submit) Invalid value for [--region]: --region flag required when workerpool resource includes": false,
		"ERROR: (gcloud.builds.submit) interpreting cloudbuild.yaml as build config: .steps[0].bogus: unused":                  false,
		"": false,
	}
	keys := make([]string, 0, len(cases))
	for k := range cases {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, stderr := range keys {
		if got := grammarProblem(gcloudRun{code: 1, stderr: stderr}) == ""; got != cases[stderr] {
			t.Errorf("grammarProblem(%q) accepted=%v, want %v", stderr, got, cases[stderr])
		}
	}
}
