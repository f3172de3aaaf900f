package config

import (
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestInvalidEnvFailsNamingTheVariable(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"", "prod", "Sandbox", "PRODUCTION", "sandbox ", "staging", "production\n", "dev"} {
		_, err := Load(env(map[string]string{"BACKBONE_ENV": v}))
		if err == nil {
			t.Errorf("BACKBONE_ENV=%q: no error", v)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, "BACKBONE_ENV") || !strings.Contains(msg, "sandbox") || !strings.Contains(msg, "production") {
			t.Errorf("BACKBONE_ENV=%q: error %q does not name the variable and accepted values", v, msg)
		}
	}
}

func TestValidConfig(t *testing.T) {
	t.Parallel()
	c, err := Load(env(map[string]string{
		"BACKBONE_ENV":         "production",
		"GOOGLE_CLOUD_PROJECT": "p1",
		"EVENT_STORE_DSN":      "root@tcp(127.0.0.1:3306)/x",
		"BACKBONE_SOURCES":     "suitex, netsuite",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Env != Production || c.Project != "p1" || c.Port != "8080" || c.NetSuite.Auth != "tba" {
		t.Errorf("config = %+v", c)
	}
	if c.SourcePriority("suitex") != 0 || c.SourcePriority("netsuite") != 1 || c.SourcePriority("x") != 2 {
		t.Errorf("priority wrong: %v", c.Sources)
	}
	if err := c.RequireStore(); err != nil {
		t.Error(err)
	}
	if err := c.RequireSuiteX(); err == nil || !strings.Contains(err.Error(), "SUITEX_BASE_URL") || !strings.Contains(err.Error(), "SUITEX_SIGNING_SECRET") {
		t.Errorf("RequireSuiteX = %v", err)
	}
}

func TestEveryBadValueNamesItsVariable(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"PORT":               "http",
		"FUNCTION_TARGET":    "merge",
		"DB_IAM_AUTH":        "yes please",
		"DB_PRIVATE_IP":      "2",
		"DB_MAX_OPEN_CONNS":  "0",
		"CLOUD_SQL_INSTANCE": "just-a-name",
		"BACKBONE_SOURCES":   "netsuite,NetSuite",
		"NETSUITE_AUTH":      "oauth1",
		"NETSUITE_TIMEOUT":   "-1s",
		"NETSUITE_BASE_URL":  "ftp://x",
		"SUITEX_BASE_URL":    "not a url",
		"SUITEX_TIMEOUT":     "soon",
	}
	for k, v := range cases {
		_, err := Load(env(map[string]string{"BACKBONE_ENV": "sandbox", k: v}))
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%q: error %v does not name %s", k, v, err, k)
		}
	}
}

func TestNamesDeriveFromEnv(t *testing.T) {
	t.Parallel()
	want := map[Env][]string{
		Sandbox: {"events.raw.sandbox", "events.merged.sandbox", "events.error.sandbox", "events.dlq.sandbox",
			"events.raw.sandbox-merge-sub", "events.merged.sandbox-netsuite-sub", "events.merged.sandbox-suitex-sub",
			"events.error.sandbox-retry-sub", "events.dlq.sandbox-sub"},
		Production: {"events.raw.production", "events.merged.production", "events.error.production", "events.dlq.production",
			"events.raw.production-merge-sub", "events.merged.production-netsuite-sub", "events.merged.production-suitex-sub",
			"events.error.production-retry-sub", "events.dlq.production-sub"},
	}
	all := map[string]bool{}
	for e, names := range want {
		n := e.Names()
		got := append(n.Topics(), n.MergeSub, n.NetSuiteSub, n.SuiteXSub, n.RetrySub, n.DLQSub)
		if strings.Join(got, ",") != strings.Join(names, ",") {
			t.Errorf("%s names = %v", e, got)
		}
		for _, g := range got {
			all[g] = true
		}
		if len(n.Subscriptions()) != 5 {
			t.Errorf("%s: %d subscriptions", e, len(n.Subscriptions()))
		}
	}
	if len(all) != 18 {
		t.Errorf("two environments give %d names, want 8 topics + 10 subscriptions", len(all))
	}
	if Sandbox.OwnsTopic("events.raw.production") || !Sandbox.OwnsTopic("projects/x/topics/events.dlq.sandbox") {
		t.Error("OwnsTopic wrong")
	}
}
