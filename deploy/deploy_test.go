// Package deploy_test checks the deploy scripts, cloudbuild.yaml and the
// Dockerfile: the scripts run against a fake gcloud (Google Cloud has no
// emulator for Cloud SQL, Cloud Run or IAM) and every flag that matters is
// asserted, for both environments.
package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

var shorts = map[string]string{
	config.TargetMerge:      "merge",
	config.TargetNetSuite:   "netsuite",
	config.TargetSuiteX:     "suitex",
	config.TargetRetry:      "retry",
	config.TargetDLQArchive: "dlq",
}

func saID(target string, env config.Env) string { return "bb-" + shorts[target] + "-" + string(env) }
func saEmail(target string, env config.Env) string {
	return saID(target, env) + "@" + project + ".iam.gserviceaccount.com"
}
func serviceName(target string, env config.Env) string {
	return "backbone-" + shorts[target] + "-" + string(env)
}
func invoker(env config.Env) string {
	return "bb-push-" + string(env) + "@" + project + ".iam.gserviceaccount.com"
}
func secretName(v string, env config.Env) string {
	return "backbone-" + string(env) + "-" + strings.ReplaceAll(strings.ToLower(v), "_", "-")
}
func buildSAID(env config.Env) string { return "bb-build-" + string(env) }
func buildSAEmail(env config.Env) string {
	return buildSAID(env) + "@" + project + ".iam.gserviceaccount.com"
}
func buildMember(env config.Env) string { return "serviceAccount:" + buildSAEmail(env) }

// secretVersion answers every version listing with version 3, a project
// whose secrets all have a value.
const secretVersion = "gcloud secrets versions list *\t0\t3"

// submitCommand is the deploy command of env, built from its settings file:
// production on its private pool (which needs --region), sandbox on the
// default pool with the machine type on the command line.
func submitCommand(t *testing.T, env config.Env) string {
	t.Helper()
	s := envFile(t, string(env))
	cmd := []string{"gcloud", "builds", "submit", "--config=cloudbuild.yaml", "--substitutions=_ENV=" + string(env), "--region=" + s["REGION"]}
	if env == config.Production {
		cmd = append(cmd, "--worker-pool=projects/"+project+"/locations/"+s["REGION"]+"/workerPools/backbone-"+string(env))
	} else {
		cmd = append(cmd, "--machine-type="+s["BUILD_MACHINE_TYPE"])
	}
	cmd = append(cmd, "--service-account=projects/"+project+"/serviceAccounts/"+buildSAEmail(env),
		"--gcs-source-staging-dir=gs://"+project+"_cloudbuild/source", "--project="+project)
	return strings.Join(cmd, " ")
}

func otherEnv(env config.Env) config.Env {
	if env == config.Sandbox {
		return config.Production
	}
	return config.Sandbox
}

var (
	netsuiteSecrets = []string{"NETSUITE_CONSUMER_KEY", "NETSUITE_CONSUMER_SECRET", "NETSUITE_TOKEN_ID", "NETSUITE_TOKEN_SECRET"}
	suitexSecrets   = []string{"SUITEX_SIGNING_SECRET"}
)

// secretsOf is what each function may read (tba auth, as both env files say).
func secretsOf(target string) []string {
	switch target {
	case config.TargetNetSuite:
		return netsuiteSecrets
	case config.TargetSuiteX:
		return suitexSecrets
	case config.TargetRetry:
		return append(slices.Clone(netsuiteSecrets), suitexSecrets...)
	}
	return nil
}

// publishesTo is the least-privilege publisher table, by topic kind.
var publishesTo = map[string][]string{
	config.TargetMerge:      {config.KindMerged, config.KindError},
	config.TargetNetSuite:   {config.KindError},
	config.TargetSuiteX:     {config.KindError},
	config.TargetRetry:      {config.KindMerged, config.KindError, config.KindDLQ},
	config.TargetDLQArchive: nil,
}

// envFile parses deploy/env/{env}.env.
func envFile(t *testing.T, env string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "env", env+".env"))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for i, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s.env:%d: not KEY=VALUE", env, i+1)
		}
		if _, dup := m[k]; dup {
			t.Errorf("%s.env: %s set twice", env, k)
		}
		m[k] = strings.Trim(v, `"'`)
	}
	return m
}

// libList returns a bash array of deploy/lib.sh as bash sees it.
func libList(t *testing.T, name string) []string {
	t.Helper()
	out, err := exec.Command("bash", "-c", `source "$1"; printf '%s\n' "${`+name+`[@]}"`, "bash",
		filepath.Join(repoRoot(t), "deploy", "lib.sh")).Output()
	if err != nil {
		t.Fatalf("read %s from lib.sh: %v", name, err)
	}
	return strings.Fields(string(out))
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%q is not a number", s)
	}
	return n
}

func scripts(t *testing.T) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(repoRoot(t), "deploy", "*.sh"))
	if err != nil || len(m) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	return m
}

func TestScriptsAreCleanBash(t *testing.T) {
	t.Parallel()
	for _, s := range scripts(t) {
		base := filepath.Base(s)
		if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", base, err, out)
		}
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		if base == "lib.sh" {
			continue // sourced, not run
		}
		if !strings.HasPrefix(string(b), "#!/usr/bin/env bash\n") || !strings.Contains(string(b), "\nset -euo pipefail\n") {
			t.Errorf("%s: must start with #!/usr/bin/env bash and set -euo pipefail", base)
		}
		if fi, err := os.Stat(s); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s is not executable", base)
		}
	}
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		// .ci/run installs shellcheck, so CI always runs this part.
		t.Log("shellcheck not installed: skipping the shellcheck part (bash -n ran)")
		return
	}
	cmd := exec.Command(sc, append([]string{"-x", "--severity=style"}, scripts(t)...)...)
	cmd.Dir = filepath.Join(repoRoot(t), "deploy")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}

// scriptArgs gives each script valid arguments for env, so that only the
// environment differs between a valid and an invalid run.
func scriptArgs(f *fake, env string) map[string][]string {
	ep := filepath.Join(f.dir, "endpoints")
	return map[string][]string{
		"check-env.sh":         {env},
		"check-capacity.sh":    {env},
		"setup-env.sh":         {env, project},
		"build-image.sh":       {env, project, "tag1"},
		"migrate.sh":           {env, project, f.backbone},
		"cloudbuild-deploy.sh": {env, project, "tag1", ep},
		"provision.sh":         {env, project, projectNumber, ep, f.backbone},
		"grant-publishers.sh":  {env, project},
		"scheduler-redrive.sh": {env, project, "tag1"},
		"console.sh":           {env, project, "tag1"},
		"monitoring.sh":        {env, project},
	}
}

func TestInvalidEnvironmentRunsNothing(t *testing.T) {
	t.Parallel()
	probe := newFake(t)
	all := scriptArgs(probe, "x")
	for _, s := range scripts(t) {
		base := filepath.Base(s)
		if base != "lib.sh" && base != "ci-test.sh" && all[base] == nil {
			t.Errorf("%s is not covered by this test: add it to scriptArgs", base)
		}
	}
	for script := range all {
		for _, bad := range []string{"", "staging", "Sandbox", "PRODUCTION", "production ", " sandbox", "sandbox;id", "prod", "sandbox\nproduction"} {
			f := newFake(t)
			if err := os.WriteFile(filepath.Join(f.dir, "endpoints"), []byte("Merge=https://x"), 0o644); err != nil {
				t.Fatal(err)
			}
			r := f.run(t, script, nil, scriptArgs(f, bad)[script]...)
			if r.code == 0 || !strings.Contains(r.stderr, "must be sandbox or production") {
				t.Errorf("%s %q: want a non-zero exit naming the valid environments; %s", script, bad, r)
			}
			if calls := f.calls(t); len(calls) != 0 {
				t.Errorf("%s %q ran %d commands before failing, first: %s", script, bad, len(calls), calls[0])
			}
		}
	}
}

func TestInvalidProjectRunsNothing(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	for _, p := range []string{"", "My-Project", "p", "proj;rm -rf", "-project"} {
		r := f.run(t, "setup-env.sh", nil, "sandbox", p)
		if r.code == 0 || !strings.Contains(r.stderr, "project id") {
			t.Errorf("project %q: %s", p, r)
		}
	}
	if calls := f.calls(t); len(calls) != 0 {
		t.Errorf("ran %v", calls)
	}
}

func sqlCreate(t *testing.T, f *fake) call {
	t.Helper()
	cs := f.find(t, "gcloud", "sql", "instances", "create")
	if len(cs) != 1 {
		t.Fatalf("%d sql instances create calls, want 1", len(cs))
	}
	return cs[0]
}

func TestSetupEnvironment(t *testing.T) {
	t.Parallel()
	for _, env := range config.Envs {
		t.Run(string(env), func(t *testing.T) {
			t.Parallel()
			settings := envFile(t, string(env))
			f := newFake(t)
			if env == config.Production {
				// The VPC is not made here (it is usually shared); without it
				// the script stops with what to do.
				r := f.run(t, "setup-env.sh", nil, string(env), project)
				if r.code == 0 || !strings.Contains(r.stderr, "VPC network "+settings["NETWORK"]+" does not exist") ||
					len(f.find(t, "gcloud", "sql", "instances", "create")) != 0 {
					t.Fatalf("production without its VPC: %s", r)
				}
				f = newFake(t)
				f.respond("gcloud compute networks describe *\t0\t", "gcloud compute networks subnets describe *\t0\t")
			}
			r := f.run(t, "setup-env.sh", nil, string(env), project)
			if r.code != 0 {
				t.Fatalf("setup-env.sh: %s", r)
			}
			all := f.calls(t)
			for _, c := range all {
				if c.tool != "gcloud" {
					t.Errorf("unexpected tool: %s", c)
				}
				if p, ok := c.flag("--project"); !ok || p != project {
					t.Errorf("call without --project=%s: %s", project, c)
				}
				for _, a := range c.args {
					if strings.Contains(a, string(otherEnv(env))) {
						t.Errorf("%s run touches the other environment: %s", env, c)
					}
				}
			}

			// Cloud SQL: the shape follows from the environment.
			sql := sqlCreate(t, f)
			if sql.args[3] != settings["SQL_INSTANCE"] {
				t.Errorf("instance name %s, want %s", sql.args[3], settings["SQL_INSTANCE"])
			}
			flags, _ := sql.flag("--database-flags")
			// cloudsql_iam_authentication is the MySQL flag; the dotted
			// cloudsql.iam_authentication is PostgreSQL's and MySQL refuses it.
			for _, want := range []string{"log_bin_trust_function_creators=on", "cloudsql_iam_authentication=on"} {
				if !slices.Contains(strings.Split(flags, ","), want) {
					t.Errorf("--database-flags=%s lacks %s", flags, want)
				}
			}
			if v, _ := sql.flag("--database-version"); !regexp.MustCompile(`^MYSQL_8_\d+$`).MatchString(v) {
				t.Errorf("database version %q, want MySQL 8", v)
			}
			if !sql.has("--backup") {
				t.Error("backups are off")
			}
			if v, _ := sql.flag("--backup-start-time"); v == "" {
				t.Error("no backup start time")
			}
			avail, _ := sql.flag("--availability-type")
			switch env {
			case config.Sandbox:
				if avail != "ZONAL" || !sql.has("--assign-ip") {
					t.Errorf("sandbox: availability %q, --assign-ip %v; want ZONAL with a public IP", avail, sql.has("--assign-ip"))
				}
				for _, c := range all {
					for _, a := range c.args {
						if strings.Contains(a, "REGIONAL") || a == "--no-assign-ip" || strings.HasPrefix(a, "--network") || a == "--enable-bin-log" {
							t.Errorf("sandbox got %s in %s", a, c)
						}
					}
				}
			case config.Production:
				netw, _ := sql.flag("--network")
				if avail != "REGIONAL" || !sql.has("--no-assign-ip") || sql.has("--assign-ip") || !sql.has("--enable-bin-log") ||
					netw != "projects/"+project+"/global/networks/"+settings["NETWORK"] {
					t.Errorf("production: want REGIONAL, --no-assign-ip, --network on the VPC and --enable-bin-log: %s", sql)
				}
				if len(f.find(t, "gcloud", "services", "vpc-peerings", "connect")) != 1 {
					t.Error("production: no private services access peering")
				}
			}

			if dbs := f.find(t, "gcloud", "sql", "databases", "create", settings["DB_NAME"]); len(dbs) != 1 {
				t.Errorf("database %s created %d times", settings["DB_NAME"], len(dbs))
			}

			// Service accounts: one per function and the push invoker.
			var sas []string
			for _, c := range f.find(t, "gcloud", "iam", "service-accounts", "create") {
				sas = append(sas, c.args[3])
			}
			var wantSAs []string
			for _, tg := range config.Targets {
				wantSAs = append(wantSAs, saID(tg, env))
			}
			wantSAs = append(wantSAs, "bb-push-"+string(env), buildSAID(env))
			if !slices.Equal(sas, wantSAs) {
				t.Errorf("service accounts %v, want %v", sas, wantSAs)
			}

			// Database users: migrator with its secret's password; each
			// function's account as an IAM user.
			var iamUsers []string
			migrator := 0
			for _, c := range f.find(t, "gcloud", "sql", "users", "create") {
				if ty, _ := c.flag("--type"); ty == "cloud_iam_service_account" {
					iamUsers = append(iamUsers, c.args[3])
					continue
				}
				pw, _ := c.flag("--password")
				if c.args[3] != "migrator" || pw != migratorPW {
					t.Errorf("unexpected user: %s", c)
				}
				migrator++
			}
			var wantIAM []string
			for _, tg := range config.Targets {
				wantIAM = append(wantIAM, saEmail(tg, env))
			}
			if migrator != 1 || !slices.Equal(iamUsers, wantIAM) {
				t.Errorf("migrator users %d, IAM users %v; want 1 and %v", migrator, iamUsers, wantIAM)
			}
			if strings.Contains(r.stdout+r.stderr, migratorPW) {
				t.Error("the migrator password was printed")
			}

			// Secrets: names derived from the environment; each function
			// may read exactly its own.
			var created []string
			for _, c := range f.find(t, "gcloud", "secrets", "create") {
				created = append(created, c.args[2])
			}
			wantSecrets := []string{"backbone-" + string(env) + "-migrator-password"}
			for _, v := range append(slices.Clone(netsuiteSecrets), suitexSecrets...) {
				wantSecrets = append(wantSecrets, secretName(v, env))
			}
			sort.Strings(created)
			sort.Strings(wantSecrets)
			if !slices.Equal(created, wantSecrets) {
				t.Errorf("secrets %v, want %v", created, wantSecrets)
			}
			access := map[string][]string{}
			for _, c := range f.find(t, "gcloud", "secrets", "add-iam-policy-binding") {
				m, _ := c.flag("--member")
				access[m] = append(access[m], c.args[2])
			}
			for _, tg := range config.Targets {
				var want []string
				for _, v := range secretsOf(tg) {
					want = append(want, secretName(v, env))
				}
				if got := access["serviceAccount:"+saEmail(tg, env)]; !slices.Equal(got, want) {
					t.Errorf("%s reads secrets %v, want %v", tg, got, want)
				}
			}

			// Cloud SQL roles only on this environment's instance; the
			// functions hold no other project role.
			roles := map[string]int{}
			projectRoles := map[string][]string{}
			sqlCond := "resource.name == 'projects/" + project + "/instances/" + settings["SQL_INSTANCE"] + "'"
			for _, c := range f.find(t, "gcloud", "projects", "add-iam-policy-binding", project) {
				role, _ := c.flag("--role")
				cond, _ := c.flag("--condition")
				m, _ := c.flag("--member")
				projectRoles[m] = append(projectRoles[m], role)
				if strings.HasPrefix(role, "roles/cloudsql.") && !strings.Contains(cond, sqlCond) {
					t.Errorf("Cloud SQL role not conditioned on the instance: %s", c)
				}
				if m != buildMember(env) && m != settings["BUILD_SUBMITTER"] {
					roles[role]++
				}
			}
			if len(roles) != 2 || roles["roles/cloudsql.client"] != 5 || roles["roles/cloudsql.instanceUser"] != 5 {
				t.Errorf("function project roles %v, want cloudsql.client and cloudsql.instanceUser for the 5 functions only", roles)
			}
			wantBuild := []string{"roles/run.admin", "roles/pubsub.admin", "roles/logging.logWriter", "roles/cloudsql.client"}
			if got := projectRoles[buildMember(env)]; !slices.Equal(got, wantBuild) {
				t.Errorf("build account project roles %v, want %v", got, wantBuild)
			}
			wantSubmitter := []string{"roles/cloudbuild.builds.editor", "roles/serviceusage.serviceUsageConsumer", "roles/logging.viewer"}
			if env == config.Production {
				wantSubmitter = append(wantSubmitter, "roles/cloudbuild.workerPoolUser")
			}
			if got := projectRoles[settings["BUILD_SUBMITTER"]]; !slices.Equal(got, wantSubmitter) {
				t.Errorf("submitter project roles %v, want %v", got, wantSubmitter)
			}

			// The build account may act as the five function accounts (to
			// deploy them) and as the push invoker (backbone provision
			// creates OIDC push subscriptions); the submitter as the build
			// account.
			actAs := map[string][]string{}
			for _, c := range f.find(t, "gcloud", "iam", "service-accounts", "add-iam-policy-binding") {
				if role, _ := c.flag("--role"); role == "roles/iam.serviceAccountUser" {
					m, _ := c.flag("--member")
					actAs[m] = append(actAs[m], c.args[3])
				}
			}
			var wantActAs []string
			for _, tg := range config.Targets {
				wantActAs = append(wantActAs, saEmail(tg, env))
			}
			wantActAs = append(wantActAs, invoker(env))
			if got := actAs[buildMember(env)]; !slices.Equal(got, wantActAs) {
				t.Errorf("build account acts as %v, want %v", got, wantActAs)
			}
			if got := actAs[settings["BUILD_SUBMITTER"]]; !slices.Equal(got, []string{buildSAEmail(env)}) {
				t.Errorf("submitter acts as %v, want the build account only", got)
			}
			if len(actAs) != 2 {
				t.Errorf("serviceAccountUser holders %v, want the build account and the submitter only", actAs)
			}
			// Build account: the migrator password, and viewer (list
			// versions, no values) on the function secrets.
			for _, c := range f.find(t, "gcloud", "secrets", "add-iam-policy-binding") {
				m, _ := c.flag("--member")
				role, _ := c.flag("--role")
				want := "roles/secretmanager.viewer"
				if c.args[2] == "backbone-"+string(env)+"-migrator-password" {
					want = "roles/secretmanager.secretAccessor"
				}
				if m == buildMember(env) && role != want {
					t.Errorf("build account gets %s on %s, want %s", role, c.args[2], want)
				}
			}
			if ar := f.find(t, "gcloud", "artifacts", "repositories", "add-iam-policy-binding", settings["ARTIFACT_REPO"]); len(ar) != 1 {
				t.Errorf("artifact registry bindings %v, want the build account as writer", ar)
			} else if m, _ := ar[0].flag("--member"); m != buildMember(env) {
				t.Errorf("artifact registry writer %s", m)
			}
			bucket := "gs://" + project + "_cloudbuild"
			if len(f.find(t, "gcloud", "storage", "buckets", "create", bucket)) != 1 {
				t.Errorf("staging bucket %s not created", bucket)
			}
			if n := len(f.find(t, "gcloud", "storage", "buckets", "add-iam-policy-binding", bucket)); n != 3 {
				t.Errorf("%d staging bucket bindings, want 3 (build account reads, submitter writes)", n)
			}

			// The Pub/Sub service agent is made to exist before it is named.
			ids := f.find(t, "gcloud", "beta", "services", "identity", "create")
			if len(ids) != 1 || !ids[0].has("--service=pubsub.googleapis.com") {
				t.Errorf("service identity calls %v, want one for pubsub.googleapis.com", ids)
			}

			// Production's private pool, peered with the VPC, sized on the pool.
			pools := f.find(t, "gcloud", "builds", "worker-pools", "create")
			switch env {
			case config.Production:
				if len(pools) != 1 {
					t.Fatalf("worker pool creations: %v", pools)
				}
				netw, _ := pools[0].flag("--peered-network")
				mt, _ := pools[0].flag("--worker-machine-type")
				rg, _ := pools[0].flag("--region")
				if pools[0].args[3] != "backbone-production" || netw != "projects/"+project+"/global/networks/"+settings["NETWORK"] ||
					mt != settings["BUILD_MACHINE_TYPE"] || rg != settings["REGION"] {
					t.Errorf("worker pool: %s", pools[0])
				}
			case config.Sandbox:
				if len(pools) != 0 {
					t.Errorf("sandbox has no VPC, so no pool: %v", pools)
				}
			}
			if !strings.Contains(r.stdout, submitCommand(t, env)) {
				t.Errorf("setup-env.sh does not print the deploy command %q:\n%s", submitCommand(t, env), r.stdout)
			}
			var tc []call
			for _, c := range f.find(t, "gcloud", "iam", "service-accounts", "add-iam-policy-binding", invoker(env)) {
				if role, _ := c.flag("--role"); role == "roles/iam.serviceAccountTokenCreator" {
					tc = append(tc, c)
				}
			}
			if len(tc) != 1 {
				t.Fatalf("invoker token creator bindings: %d", len(tc))
			}
			if m, _ := tc[0].flag("--member"); m != "serviceAccount:service-"+projectNumber+"@gcp-sa-pubsub.iam.gserviceaccount.com" {
				t.Errorf("token creator member %s", m)
			}
		})
	}
}

func instanceJSON(availability string, public, binlog bool, flags ...string) string {
	var fl []string
	for _, f := range flags {
		fl = append(fl, `{"name": "`+f+`", "value": "on"}`)
	}
	return `{"settings": {"availabilityType": "` + availability + `", "ipConfiguration": {"ipv4Enabled": ` + strconv.FormatBool(public) +
		`}, "backupConfiguration": {"binaryLogEnabled": ` + strconv.FormatBool(binlog) + `}, "databaseFlags": [` + strings.Join(fl, ", ") + `]}}`
}

// existing answers as a project where everything already exists.
func existing(t *testing.T, f *fake, env config.Env, instance string) {
	var users []string
	for _, tg := range config.Targets {
		users = append(users, saID(tg, env))
	}
	users = append(users, "migrator", "root")
	f.respond(
		"gcloud sql instances describe *\t0\t"+instance,
		"gcloud builds worker-pools describe *\t0\tprojects/"+projectNumber+"/global/networks/"+envFile(t, string(env))["NETWORK"],
		"gcloud secrets versions list *\t0\t1",
		"gcloud sql users list *\t0\t"+strings.Join(users, `\n`),
		"gcloud services vpc-peerings list *\t0\tservicenetworking.googleapis.com",
		"gcloud * describe *\t0\t",
	)
}

func TestSetupIsIdempotent(t *testing.T) {
	t.Parallel()
	for _, env := range config.Envs {
		f := newFake(t)
		prod := env == config.Production
		avail := map[bool]string{false: "ZONAL", true: "REGIONAL"}[prod]
		existing(t, f, env, instanceJSON(avail, !prod, prod, "log_bin_trust_function_creators", "cloudsql_iam_authentication"))
		r := f.run(t, "setup-env.sh", nil, string(env), project)
		if r.code != 0 {
			t.Fatalf("%s: %s", env, r)
		}
		for _, c := range f.calls(t) {
			// identity create only makes sure the service agent exists.
			if c.is("gcloud", "beta", "services", "identity", "create") {
				continue
			}
			if c.has("create") || c.has("connect") || (len(c.args) > 2 && c.args[2] == "add") || c.has("set-password") {
				t.Errorf("%s second run created something: %s", env, c)
			}
		}
	}
}

func TestSetupRefusesAWrongInstance(t *testing.T) {
	t.Parallel()
	flags := []string{"log_bin_trust_function_creators", "cloudsql_iam_authentication"}
	cases := []struct {
		env      config.Env
		instance string
		want     string
	}{
		{config.Sandbox, instanceJSON("REGIONAL", true, false, flags...), "availability type is not ZONAL"},
		{config.Sandbox, instanceJSON("ZONAL", false, false, flags...), "public IP is not true"},
		{config.Sandbox, instanceJSON("ZONAL", true, false, "cloudsql_iam_authentication"), "log_bin_trust_function_creators is not on"},
		// The PostgreSQL spelling does not count.
		{config.Sandbox, instanceJSON("ZONAL", true, false, "log_bin_trust_function_creators", "cloudsql.iam_authentication"), "cloudsql_iam_authentication is not on"},
		{config.Production, instanceJSON("ZONAL", false, true, flags...), "availability type is not REGIONAL"},
		{config.Production, instanceJSON("REGIONAL", true, true, flags...), "public IP is not false"},
		{config.Production, instanceJSON("REGIONAL", false, false, flags...), "binary logging"},
	}
	// An existing pool peered with another network cannot reach Cloud SQL.
	f := newFake(t)
	f.respond("gcloud builds worker-pools describe *\t0\tprojects/1/global/networks/default")
	existing(t, f, config.Production, instanceJSON("REGIONAL", false, true, flags...))
	if r := f.run(t, "setup-env.sh", nil, "production", project); r.code == 0 || !strings.Contains(r.stderr, "not backbone-vpc") {
		t.Errorf("production with a pool on another network: %s", r)
	}
	for _, c := range cases {
		f := newFake(t)
		existing(t, f, c.env, c.instance)
		r := f.run(t, "setup-env.sh", nil, string(c.env), project)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s with %s: want failure %q; %s", c.env, c.instance, c.want, r)
		}
	}
}

func TestSecretValuesAreNeverPrinted(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	values := map[string]string{}
	var extra []string
	for _, v := range append(slices.Clone(netsuiteSecrets), suitexSecrets...) {
		values[v] = "value-of-" + strings.ToLower(v) + "-x9"
		extra = append(extra, v+"="+values[v])
	}
	r := f.run(t, "setup-env.sh", extra, "sandbox", project)
	if r.code != 0 {
		t.Fatal(r)
	}
	added := map[string]string{}
	for _, c := range f.find(t, "gcloud", "secrets", "versions", "add") {
		if !c.has("--data-file=-") {
			t.Errorf("secret value not given on stdin: %s", c)
		}
		added[c.args[3]] = c.stdin(t, f)
	}
	for v, val := range values {
		if added[secretName(v, config.Sandbox)] != val {
			t.Errorf("%s: stored %q, want %q", v, added[secretName(v, config.Sandbox)], val)
		}
		if strings.Contains(r.stdout+r.stderr, val) {
			t.Errorf("%s printed", v)
		}
		for _, c := range f.calls(t) {
			if strings.Contains(strings.Join(c.args, " "), val) {
				t.Errorf("%s on a command line: %s", v, c)
			}
		}
	}
	if pw := added["backbone-sandbox-migrator-password"]; len(pw) < 32 {
		t.Errorf("generated migrator password too short: %d characters", len(pw))
	}
}

func TestCloudbuildDeploy(t *testing.T) {
	t.Parallel()
	for _, env := range config.Envs {
		t.Run(string(env), func(t *testing.T) {
			t.Parallel()
			s := envFile(t, string(env))
			f := newFake(t)
			f.respond(secretVersion)
			ep := filepath.Join(f.dir, "endpoints")
			r := f.run(t, "cloudbuild-deploy.sh", nil, string(env), project, "build-7", ep)
			if r.code != 0 {
				t.Fatalf("cloudbuild-deploy.sh: %s", r)
			}
			image := s["REGION"] + "-docker.pkg.dev/" + project + "/" + s["ARTIFACT_REPO"] + "/backbone:build-7"
			deploys := f.find(t, "gcloud", "run", "deploy")
			var targets []string
			capacity := 0
			for _, d := range deploys {
				vars := map[string]string{}
				raw, _ := d.flag("--set-env-vars")
				list, ok := strings.CutPrefix(raw, "^|^")
				if !ok {
					t.Fatalf("--set-env-vars without the | delimiter: %s", raw)
				}
				for _, kv := range strings.Split(list, "|") {
					k, v, _ := strings.Cut(kv, "=")
					if !slices.Contains(config.Variables, k) {
						t.Errorf("%s sets %s, which config.Load does not read", d.args[2], k)
					}
					vars[k] = v
				}
				tg := vars["FUNCTION_TARGET"]
				targets = append(targets, tg)
				if d.args[2] != serviceName(tg, env) {
					t.Errorf("service %s runs %s", d.args[2], tg)
				}
				want := map[string]string{
					"BACKBONE_ENV": string(env), "GCP_PROJECT": project, "DB_USER": saID(tg, env), "DB_IAM_AUTH": "true",
					"DB_PRIVATE_IP":      strconv.FormatBool(env == config.Production),
					"CLOUD_SQL_INSTANCE": project + ":" + s["REGION"] + ":" + s["SQL_INSTANCE"],
					"DB_NAME":            s["DB_NAME"], "BACKBONE_SOURCES": s["BACKBONE_SOURCES"],
				}
				for k, v := range want {
					if vars[k] != v {
						t.Errorf("%s: %s=%q, want %q", tg, k, vars[k], v)
					}
				}
				if v, _ := d.flag("--image"); v != image {
					t.Errorf("%s image %s, want %s", tg, v, image)
				}
				if v, _ := d.flag("--service-account"); v != saEmail(tg, env) {
					t.Errorf("%s runs as %s", tg, v)
				}
				if !d.has("--no-allow-unauthenticated") || d.has("--allow-unauthenticated") {
					t.Errorf("%s accepts unauthenticated calls", tg)
				}
				if v, _ := d.flag("--timeout"); v != s["REQUEST_TIMEOUT"]+"s" {
					t.Errorf("%s timeout %s", tg, v)
				}
				// Secrets: only the function's own, from this environment.
				got := map[string]string{}
				if raw, ok := d.flag("--set-secrets"); ok {
					for _, kv := range strings.Split(raw, ",") {
						k, v, _ := strings.Cut(kv, "=")
						if !slices.Contains(config.Variables, k) {
							t.Errorf("%s mounts secret as %s, which config.Load does not read", tg, k)
						}
						got[k] = v
						vars[k] = "secret"
					}
				} else if !d.has("--clear-secrets") {
					t.Errorf("%s: neither --set-secrets nor --clear-secrets", tg)
				}
				if len(got) != len(secretsOf(tg)) {
					t.Errorf("%s secrets %v, want %v", tg, got, secretsOf(tg))
				}
				for _, v := range secretsOf(tg) {
					// Pinned to the newest enabled version, never "latest".
					if got[v] != secretName(v, env)+":3" {
						t.Errorf("%s: secret %s = %q", tg, v, got[v])
					}
				}
				// The deployed configuration loads, and has what the function needs.
				cfg, err := config.Load(func(k string) string { return vars[k] })
				if err != nil {
					t.Errorf("%s: config.Load: %v", tg, err)
				} else if err := cfg.RequireStore(); err != nil {
					t.Errorf("%s: %v", tg, err)
				}
				if tg == config.TargetNetSuite || tg == config.TargetRetry {
					if err := cfg.RequireNetSuite(); err != nil {
						t.Errorf("%s: %v", tg, err)
					}
				}
				if tg == config.TargetSuiteX || tg == config.TargetRetry {
					if err := cfg.RequireSuiteX(); err != nil {
						t.Errorf("%s: %v", tg, err)
					}
				}
				netw, hasNet := d.flag("--network")
				egress, _ := d.flag("--vpc-egress")
				if env == config.Production && (netw != s["NETWORK"] || egress != "private-ranges-only") {
					t.Errorf("%s: production must egress through the VPC: %s", tg, d)
				}
				if env == config.Sandbox && hasNet {
					t.Errorf("%s: sandbox has no VPC: %s", tg, d)
				}
				if tg == config.TargetNetSuite || tg == config.TargetRetry {
					mi, _ := d.flag("--max-instances")
					cc, _ := d.flag("--concurrency")
					capacity += atoi(t, mi) * atoi(t, cc)
				}
			}
			if !slices.Equal(targets, config.Targets) {
				t.Errorf("deployed %v, want %v", targets, config.Targets)
			}
			limit := atoi(t, s["NETSUITE_ACCOUNT_CONCURRENCY_LIMIT"])
			if capacity >= limit || capacity > limit-atoi(t, s["NETSUITE_CONCURRENCY_RESERVE"]) {
				t.Errorf("NetSuite callers may open %d requests; the account allows %d (reserve %s)", capacity, limit, s["NETSUITE_CONCURRENCY_RESERVE"])
			}

			var invoked []string
			for _, c := range f.find(t, "gcloud", "run", "services", "add-iam-policy-binding") {
				m, _ := c.flag("--member")
				role, _ := c.flag("--role")
				if m != "serviceAccount:"+invoker(env) || role != "roles/run.invoker" {
					t.Errorf("unexpected binding %s", c)
				}
				invoked = append(invoked, c.args[3])
			}
			var wantEP []string
			for i, tg := range config.Targets {
				if i >= len(invoked) || invoked[i] != serviceName(tg, env) {
					t.Errorf("push invoker bindings %v", invoked)
					break
				}
				wantEP = append(wantEP, tg+"=https://"+serviceName(tg, env)+"-abc.a.run.app")
			}
			b, err := os.ReadFile(ep)
			if err != nil || strings.TrimSpace(string(b)) != strings.Join(wantEP, ",") {
				t.Errorf("endpoints file %q (%v), want %q", b, err, strings.Join(wantEP, ","))
			}
			for _, c := range f.calls(t) {
				for _, a := range c.args {
					if strings.Contains(a, string(otherEnv(env))) {
						t.Errorf("%s deploy touches the other environment: %s", env, c)
					}
				}
			}
		})
	}
}

// TestDeployNeedsSecretValues: a mounted secret without an enabled version
// stops the deploy before any service is touched.
func TestDeployNeedsSecretValues(t *testing.T) {
	t.Parallel()
	for _, env := range config.Envs {
		f := newFake(t)
		empty := secretName("SUITEX_SIGNING_SECRET", env)
		f.respond("gcloud secrets versions list "+empty+" *\t0\t", secretVersion)
		r := f.run(t, "cloudbuild-deploy.sh", nil, string(env), project, "b-1", filepath.Join(f.dir, "endpoints"))
		if r.code == 0 || !strings.Contains(r.stderr, "secrets without an enabled version: "+empty+";") {
			t.Errorf("%s: want a failure naming %s; %s", env, empty, r)
		}
		if d := f.find(t, "gcloud", "run"); len(d) != 0 {
			t.Errorf("%s: deployed with a secret missing: %v", env, d)
		}
		for _, c := range f.find(t, "gcloud", "secrets", "versions", "list") {
			if !c.has("--filter=state:ENABLED") {
				t.Errorf("version check counts disabled versions: %s", c)
			}
		}
	}
}

// copyDeploy copies deploy/ into a temporary directory, so that a test can
// change a settings file.
func copyDeploy(t *testing.T, f *fake) {
	t.Helper()
	dst := filepath.Join(f.dir, "deploy")
	if err := os.CopyFS(dst, os.DirFS(f.deploy)); err != nil {
		t.Fatal(err)
	}
	f.deploy = dst
}

func editEnv(t *testing.T, f *fake, env, key, value string) {
	t.Helper()
	p := filepath.Join(f.deploy, "env", env+".env")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^` + key + `=.*$`)
	out := string(b)
	if re.MatchString(out) {
		out = re.ReplaceAllLiteralString(out, key+"="+value)
	} else {
		out += key + "=" + value + "\n"
	}
	if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSettingsAreChecked(t *testing.T) {
	t.Parallel()
	cases := []struct {
		env, key, value, script, want string
	}{
		{"sandbox", "NETSUITE_SINK_MAX_INSTANCES", "5", "check-capacity.sh", "over the account limit"},
		{"production", "RETRY_CONCURRENCY", "10", "check-capacity.sh", "over the account limit"},
		{"sandbox", "NETSUITE_SINK_MAX_INSTANCES", "5", "cloudbuild-deploy.sh", "over the account limit"},
		{"production", "NETSUITE_CONCURRENCY_RESERVE", "0", "check-capacity.sh", "not a positive integer"},
		{"sandbox", "NETSUITE_SINK_CONCURRENCY", "a[$(id)]", "check-capacity.sh", "not a positive integer"},
		{"sandbox", "NETSUITE_SINK_MAX_INSTANCE", "1", "check-env.sh", "unknown setting NETSUITE_SINK_MAX_INSTANCE"},
		{"sandbox", "DB_PRIVATE_IP", "true", "check-env.sh", "unknown setting DB_PRIVATE_IP"},
		{"production", "NETWORK", "", "check-env.sh", "NETWORK and SUBNET must be set"},
		{"sandbox", "SQL_DATABASE_VERSION", "MYSQL_5_7", "check-env.sh", "MySQL 8"},
		{"sandbox", "SQL_TIER", "", "setup-env.sh", "SQL_TIER is not set"},
		{"sandbox", "NETSUITE_AUTH", "basic", "check-env.sh", "NETSUITE_AUTH"},
		{"sandbox", "REQUEST_TIMEOUT", "900", "check-env.sh", "REQUEST_TIMEOUT"},
	}
	for _, c := range cases {
		f := newFake(t)
		copyDeploy(t, f)
		editEnv(t, f, c.env, c.key, c.value)
		r := f.run(t, c.script, nil, scriptArgs(f, c.env)[c.script]...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s %s=%s: want failure %q; %s", c.script, c.key, c.value, c.want, r)
		}
		if calls := f.calls(t); len(calls) != 0 {
			t.Errorf("%s %s=%s ran %s", c.script, c.key, c.value, calls[0])
		}
	}
	f := newFake(t)
	for _, env := range config.Envs {
		if r := f.run(t, "check-capacity.sh", nil, string(env)); r.code != 0 || !strings.Contains(r.stdout, "NetSuite capacity") {
			t.Errorf("%s capacity: %s", env, r)
		}
	}
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	for _, env := range config.Envs {
		s := envFile(t, string(env))
		f := newFake(t)
		keys := "FAKE_ENV_KEYS=CLOUD_SQL_INSTANCE DB_USER DB_PASSWORD DB_NAME DB_PRIVATE_IP DB_IAM_AUTH EVENT_STORE_DSN BACKBONE_ENV"
		r := f.run(t, "migrate.sh", []string{keys, "EVENT_STORE_DSN=root@tcp(127.0.0.1:3306)/local"}, string(env), project, f.backbone)
		if r.code != 0 {
			t.Fatalf("%s: %s", env, r)
		}
		if strings.Contains(r.stdout+r.stderr, migratorPW) {
			t.Error("migrator password printed")
		}
		bb := f.find(t, "backbone")
		if len(bb) != 1+len(config.Targets) || !bb[0].is("backbone", "migrate", "up") {
			t.Fatalf("%s: backbone calls %v", env, bb)
		}
		for i, tg := range config.Targets {
			c := bb[i+1]
			user, _ := c.flag("--user")
			host, _ := c.flag("--host")
			db, _ := c.flag("--database")
			if !c.is("backbone", "grants", "--apply") || user != saID(tg, env) || host != "%" || db != s["DB_NAME"] {
				t.Errorf("grants for %s: %s", tg, c)
			}
		}
		for _, c := range bb {
			got := c.env(t, f)
			want := map[string]string{
				"CLOUD_SQL_INSTANCE": project + ":" + s["REGION"] + ":" + s["SQL_INSTANCE"],
				"DB_USER":            "migrator", "DB_PASSWORD": migratorPW, "DB_NAME": s["DB_NAME"], "DB_IAM_AUTH": "false",
				"DB_PRIVATE_IP": strconv.FormatBool(env == config.Production), "BACKBONE_ENV": string(env),
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s %s: %s=%q, want %q", env, c, k, got[k], v)
				}
			}
			if _, set := got["EVENT_STORE_DSN"]; set {
				t.Errorf("%s: EVENT_STORE_DSN leaked into %s", env, c)
			}
		}
	}
}

func TestProvisionScript(t *testing.T) {
	t.Parallel()
	for _, env := range config.Envs {
		f := newFake(t)
		ep := filepath.Join(f.dir, "endpoints")
		eps := "Merge=https://a,NetSuiteSink=https://b,SuiteXSink=https://c,Retry=https://d,DLQArchive=https://e"
		if err := os.WriteFile(ep, []byte(eps+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		r := f.run(t, "provision.sh", nil, string(env), project, projectNumber, ep, f.backbone)
		if r.code != 0 {
			t.Fatalf("%s: %s", env, r)
		}
		bb := f.find(t, "backbone", "provision")
		if len(bb) != 1 {
			t.Fatalf("provision calls: %v", f.calls(t))
		}
		want := map[string]string{"--env": string(env), "--project": project, "--project-number": projectNumber,
			"--endpoints": eps, "--invoker": invoker(env), "--ack-deadline": envFile(t, string(env))["REQUEST_TIMEOUT"] + "s"}
		for k, v := range want {
			if got, _ := bb[0].flag(k); got != v {
				t.Errorf("%s: %s %q, want %q", env, k, got, v)
			}
		}
		if r := f.run(t, "provision.sh", nil, string(env), project, "12x", ep, f.backbone); r.code == 0 {
			t.Errorf("bad project number accepted")
		}
	}
}

func TestGrantPublishers(t *testing.T) {
	t.Parallel()
	for _, env := range config.Envs {
		f := newFake(t)
		if r := f.run(t, "grant-publishers.sh", nil, string(env), project); r.code != 0 {
			t.Fatalf("%s: %s", env, r)
		}
		got := map[string][]string{}
		for _, c := range f.calls(t) {
			role, _ := c.flag("--role")
			m, _ := c.flag("--member")
			if !c.is("gcloud", "pubsub", "topics", "add-iam-policy-binding") || role != "roles/pubsub.publisher" {
				t.Errorf("unexpected call %s", c)
				continue
			}
			got[m] = append(got[m], c.args[3])
		}
		n := env.Names()
		topicOf := map[string]string{config.KindRaw: n.RawTopic, config.KindMerged: n.MergedTopic, config.KindError: n.ErrorTopic, config.KindDLQ: n.DLQTopic}
		for _, tg := range config.Targets {
			var want []string
			for _, k := range publishesTo[tg] {
				want = append(want, topicOf[k])
			}
			if g := got["serviceAccount:"+saEmail(tg, env)]; !slices.Equal(g, want) {
				t.Errorf("%s %s publishes to %v, want %v", env, tg, g, want)
			}
		}
		if len(got) != 4 {
			t.Errorf("%s: publishers %v, want exactly the four publishing functions", env, got)
		}
	}
}

func TestBuildImage(t *testing.T) {
	t.Parallel()
	for _, env := range config.Envs {
		s := envFile(t, string(env))
		f := newFake(t)
		if r := f.run(t, "build-image.sh", nil, string(env), project, "b-1"); r.code != 0 {
			t.Fatalf("%s: %s", env, r)
		}
		image := s["REGION"] + "-docker.pkg.dev/" + project + "/" + s["ARTIFACT_REPO"] + "/backbone:b-1"
		cs := f.calls(t)
		if len(cs) != 2 || !cs[0].is("docker", "build") || !cs[1].is("docker", "push", image) {
			t.Fatalf("%s: %v", env, cs)
		}
		if tag, _ := cs[0].flag("--tag"); tag != image || filepath.Clean(cs[0].args[len(cs[0].args)-1]) != repoRoot(t) {
			t.Errorf("%s: docker build %v", env, cs[0])
		}
		if r := f.run(t, "build-image.sh", nil, string(env), project, "bad tag"); r.code == 0 {
			t.Error("bad tag accepted")
		}
	}
}

func TestCITestScript(t *testing.T) {
	t.Parallel()
	f := newFake(t)
	// A listener stands in for the MariaDB service container.
	ln := listen(t)
	r := f.run(t, "ci-test.sh", []string{"BACKBONE_TEST_MYSQL_DSN=root@tcp(" + ln + ")/"})
	if r.code != 0 {
		t.Fatal(r)
	}
	cs := f.calls(t)
	if len(cs) != 3 || !cs[0].is("go", "vet", "./...") || !cs[1].is("go", "test", "-race") || !cs[1].has("./...") || cs[1].has("-short") ||
		!cs[2].is("go", "build") || !cs[2].has("./cmd/backbone") {
		t.Errorf("go calls: %v", cs)
	}
	if r := f.run(t, "ci-test.sh", nil); r.code == 0 || !strings.Contains(r.stderr, "BACKBONE_TEST_MYSQL_DSN") {
		t.Errorf("without a database: %s", r)
	}
}

// TestNoEnvironmentWrittenIntoNames: every topic and subscription name in
// deploy/ and the build files is derived from the environment.
func TestNoEnvironmentWrittenIntoNames(t *testing.T) {
	t.Parallel()
	re := regexp.MustCompile(`events\.(raw|merged|error|dlq)\.(sandbox|production)`)
	root := repoRoot(t)
	files := []string{filepath.Join(root, "cloudbuild.yaml"), filepath.Join(root, "Dockerfile")}
	err := filepath.WalkDir(filepath.Join(root, "deploy"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i, l := range strings.Split(string(b), "\n") {
			if m := re.FindString(l); m != "" {
				t.Errorf("%s:%d: %s is written out; derive it from the environment", strings.TrimPrefix(p, root+"/"), i+1, m)
			}
		}
	}
}

// TestEnvFilesAgreeWithConfig: the settings files, deploy/lib.sh and the Go
// configuration name the same targets and variables.
func TestEnvFilesAgreeWithConfig(t *testing.T) {
	t.Parallel()
	if got := libList(t, "TARGETS"); !slices.Equal(got, config.Targets) {
		t.Errorf("deploy/lib.sh TARGETS = %v, config.Targets = %v", got, config.Targets)
	}
	settings := libList(t, "SETTINGS")
	runtimeVars := libList(t, "RUNTIME_VARS")
	for _, v := range runtimeVars {
		if !slices.Contains(config.Variables, v) {
			t.Errorf("RUNTIME_VARS lists %s, which config.Load does not read", v)
		}
	}
	for _, v := range settings {
		if slices.Contains(config.Variables, v) {
			t.Errorf("deploy setting %s is also a backbone variable: list it in RUNTIME_VARS so the services get it", v)
		}
	}
	for _, v := range append(slices.Clone(netsuiteSecrets), append(suitexSecrets, "NETSUITE_PRIVATE_KEY")...) {
		if !slices.Contains(config.Variables, v) {
			t.Errorf("secret %s is not a backbone variable", v)
		}
	}
	var keys [2][]string
	for i, env := range config.Envs {
		m := envFile(t, string(env))
		for k := range m {
			keys[i] = append(keys[i], k)
			if !slices.Contains(settings, k) && !slices.Contains(runtimeVars, k) {
				t.Errorf("%s.env sets %s, which is neither a deploy setting nor a runtime variable", env, k)
			}
		}
		for _, k := range append(slices.Clone(settings), runtimeVars...) {
			if _, ok := m[k]; !ok {
				t.Errorf("%s.env does not set %s", env, k)
			}
		}
		sort.Strings(keys[i])
	}
	if !slices.Equal(keys[0], keys[1]) {
		t.Errorf("the env files set different keys:\n%v\n%v", keys[0], keys[1])
	}
}

func TestDockerBuild(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	d := string(df)
	froms := regexp.MustCompile(`(?m)^FROM `).FindAllString(d, -1)
	if len(froms) != 2 || !strings.Contains(d, "FROM gcr.io/distroless/static") || !strings.Contains(d, `ENTRYPOINT ["/backbone","serve"]`) ||
		!strings.Contains(d, "CGO_ENABLED=0") || !strings.Contains(d, "./cmd/backbone") {
		t.Errorf("Dockerfile: want a two-stage static build of ./cmd/backbone on distroless/static running `backbone serve`:\n%s", d)
	}

	// The .dockerignore allow-list holds every directory the binary is
	// built from, and no embedded file is excluded.
	di, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{}
	for _, l := range strings.Split(string(di), "\n") {
		if p, ok := strings.CutPrefix(strings.TrimSpace(l), "!"); ok {
			allowed[strings.TrimSuffix(p, "/")] = true
		}
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		if !allowed[f] {
			t.Errorf(".dockerignore leaves out %s", f)
		}
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("go is not on PATH")
	}
	cmd := exec.Command(goBin, "list", "-deps", "-f", `{{if .Module}}{{if .Module.Main}}{{.Dir}}|{{join .EmbedFiles ","}}{{end}}{{end}}`, "./cmd/backbone")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		dir, embeds, _ := strings.Cut(l, "|")
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			t.Fatal(err)
		}
		top := strings.Split(rel, string(filepath.Separator))[0]
		if !allowed[top] {
			t.Errorf(".dockerignore leaves out %s/, which cmd/backbone is built from", top)
		}
		for _, e := range strings.Split(embeds, ",") {
			if strings.HasSuffix(e, "_test.go") || strings.Contains(e, "testdata/") {
				t.Errorf("%s embeds %s, which .dockerignore leaves out", rel, e)
			}
		}
	}
}

// --- cloudbuild.yaml ------------------------------------------------------------

type buildStep struct {
	id, name, entrypoint string
	args, env            []string
}

var inlineItem = regexp.MustCompile(`'([^']*)'|"([^"]*)"|([^,\s][^,]*[^,\s]|[^,\s])`)

func unquote(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && (s[0] == '\'' && s[len(s)-1] == '\'' || s[0] == '"' && s[len(s)-1] == '"') {
		return s[1 : len(s)-1]
	}
	return s
}

// parseCloudbuild reads cloudbuild.yaml line by line (the module has no
// YAML parser, and the file keeps to a plain subset: top-level keys, a
// substitutions map, and steps with scalar fields and inline or block
// lists).
func parseCloudbuild(t *testing.T) (subs map[string]string, steps []buildStep, lines []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "cloudbuild.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	subs = map[string]string{}
	var top, list string
	var cur *buildStep
	for i, raw := range strings.Split(string(b), "\n") {
		if strings.Contains(raw, "\t") {
			t.Fatalf("cloudbuild.yaml:%d: tab in YAML", i+1)
		}
		trimmed := strings.TrimSpace(raw)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		lines = append(lines, raw)
		indent := len(raw) - len(strings.TrimLeft(raw, " "))
		if indent == 0 {
			top, _, _ = strings.Cut(trimmed, ":")
			continue
		}
		switch top {
		case "substitutions":
			k, v, _ := strings.Cut(trimmed, ":")
			subs[k] = unquote(v)
		case "steps":
			if rest, ok := strings.CutPrefix(trimmed, "- id:"); ok && indent == 2 {
				steps = append(steps, buildStep{id: unquote(rest)})
				cur = &steps[len(steps)-1]
				list = ""
				continue
			}
			if cur == nil {
				t.Fatalf("cloudbuild.yaml:%d: step without an id first", i+1)
			}
			if item, ok := strings.CutPrefix(trimmed, "- "); ok && list != "" {
				if list == "args" {
					cur.args = append(cur.args, unquote(item))
				} else {
					cur.env = append(cur.env, unquote(item))
				}
				continue
			}
			k, v, _ := strings.Cut(trimmed, ":")
			v = strings.TrimSpace(v)
			list = ""
			switch k {
			case "name":
				cur.name = unquote(v)
			case "entrypoint":
				cur.entrypoint = unquote(v)
			case "args", "env":
				var items []string
				if strings.HasPrefix(v, "[") {
					for _, m := range inlineItem.FindAllStringSubmatch(strings.Trim(v, "[]"), -1) {
						items = append(items, m[1]+m[2]+m[3])
					}
				} else if v == "" {
					list = k
				}
				if k == "args" {
					cur.args = items
				} else {
					cur.env = items
				}
			default:
				t.Fatalf("cloudbuild.yaml:%d: unexpected step field %q", i+1, k)
			}
		}
	}
	return subs, steps, lines
}

func TestCloudbuildYAML(t *testing.T) {
	t.Parallel()
	subs, steps, lines := parseCloudbuild(t)
	if len(subs) != 1 || subs["_ENV"] != "" {
		t.Errorf("substitutions = %v, want only _ENV, empty by default (no silent default environment)", subs)
	}
	var ids []string
	for _, s := range steps {
		ids = append(ids, s.id)
	}
	wantIDs := []string{"validate-env", "check-netsuite-capacity", "start-mariadb", "test", "stop-mariadb", "build-image", "migrate", "deploy-services", "provision", "grant-publishers"}
	if !slices.Equal(ids, wantIDs) {
		t.Fatalf("steps %v, want %v", ids, wantIDs)
	}
	if !slices.Equal(steps[0].args, []string{"deploy/check-env.sh", "$_ENV"}) {
		t.Errorf("the first step must validate _ENV: %v", steps[0].args)
	}

	// Every $ is a declared substitution, a Cloud Build built-in, or $$.
	builtins := []string{"PROJECT_ID", "PROJECT_NUMBER", "BUILD_ID"}
	used := map[string]bool{}
	dollar := regexp.MustCompile(`\$(\$|\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z_][A-Za-z0-9_]*)?`)
	for _, l := range lines {
		for _, m := range dollar.FindAllStringSubmatch(l, -1) {
			name := strings.Trim(m[1], "{}")
			switch {
			case m[1] == "$":
			case name == "":
				t.Errorf("stray $ in %q", l)
			case strings.HasPrefix(name, "_"):
				if _, ok := subs[name]; !ok {
					t.Errorf("$%s is not declared in substitutions", name)
				}
				used[name] = true
			case !slices.Contains(builtins, name):
				t.Errorf("$%s is neither a substitution nor a built-in Cloud Build replaces (escape shell variables as $$)", name)
			}
		}
		if strings.Contains(l, "sandbox") || strings.Contains(l, "production") {
			t.Errorf("cloudbuild.yaml names an environment outside comments: %q", l)
		}
	}
	for k := range subs {
		if !used[k] {
			t.Errorf("substitution %s is never used (Cloud Build rejects that)", k)
		}
	}

	// Step environments name only variables the backbone (or its tests) read.
	for _, s := range steps {
		for _, e := range s.env {
			k, _, _ := strings.Cut(e, "=")
			if !slices.Contains(config.Variables, k) && k != mysqltest.EnvServerDSN {
				t.Errorf("step %s sets %s, which neither config.Load nor mysqltest reads", s.id, k)
			}
		}
	}
	test := steps[3]
	if !strings.HasPrefix(test.name, "golang:") || !slices.Equal(test.args, []string{"deploy/ci-test.sh"}) ||
		!slices.Contains(test.env, mysqltest.EnvServerDSN+"=root@tcp(backbone-mariadb:3306)/") {
		t.Errorf("test step: %+v", test)
	}
	if !slices.Contains(steps[2].args, "--name=backbone-mariadb") || !slices.Contains(steps[2].args, "--network=cloudbuild") ||
		!slices.ContainsFunc(steps[2].args, func(a string) bool { return strings.HasPrefix(a, "mariadb:10.11") }) {
		t.Errorf("start-mariadb: %v", steps[2].args)
	}
}

// TestCloudbuildPipelineRuns runs every deploy script step of cloudbuild.yaml
// in order, with its arguments as Cloud Build would substitute them, against
// the fakes: the step arguments fit the scripts, and the steps hand each
// other the right files.
func TestCloudbuildPipelineRuns(t *testing.T) {
	t.Parallel()
	_, steps, _ := parseCloudbuild(t)
	for _, env := range config.Envs {
		f := newFake(t)
		f.respond(secretVersion)
		repl := strings.NewReplacer("$_ENV", string(env), "$PROJECT_ID", project, "$PROJECT_NUMBER", projectNumber, "$BUILD_ID", "b-42",
			"/workspace/", f.dir+"/")
		ran := 0
		for _, s := range steps {
			if s.entrypoint != "bash" || len(s.args) == 0 || s.args[0] == "deploy/ci-test.sh" {
				continue
			}
			script, ok := strings.CutPrefix(s.args[0], "deploy/")
			if !ok {
				t.Fatalf("step %s runs %s, not a deploy script", s.id, s.args[0])
			}
			var args []string
			for _, a := range s.args[1:] {
				if a == "bin/backbone" {
					a = f.backbone // built by the test step
				}
				args = append(args, repl.Replace(a))
			}
			if r := f.run(t, script, nil, args...); r.code != 0 {
				t.Fatalf("%s step %s: %s", env, s.id, r)
			}
			ran++
		}
		if ran != 7 {
			t.Errorf("%d script steps ran, want 7", ran)
		}
		// Order: migrate, deploy, provision with the deployed URLs, grants.
		var order []string
		for _, c := range f.calls(t) {
			switch {
			case c.is("backbone", "migrate"):
				order = append(order, "migrate")
			case c.is("gcloud", "run", "deploy"):
				if len(order) == 0 || order[len(order)-1] != "deploy" {
					order = append(order, "deploy")
				}
			case c.is("backbone", "provision"):
				order = append(order, "provision")
				eps, _ := c.flag("--endpoints")
				if !strings.Contains(eps, "Merge=https://"+serviceName(config.TargetMerge, env)+"-abc.a.run.app") {
					t.Errorf("provision got endpoints %q", eps)
				}
			case c.is("gcloud", "pubsub", "topics", "add-iam-policy-binding"):
				if order[len(order)-1] != "publishers" {
					order = append(order, "publishers")
				}
			}
		}
		if !slices.Equal(order, []string{"migrate", "deploy", "provision", "publishers"}) {
			t.Errorf("%s: order %v", env, order)
		}
	}
}
