package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
)

type provisionRun struct {
	code        int
	stdout, err string
}

func runProvisionVerb(t *testing.T, env map[string]string, args ...string) provisionRun {
	t.Helper()
	var out, errb bytes.Buffer
	c := &cli{stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }}
	code := run(context.Background(), c, append([]string{"provision"}, args...))
	return provisionRun{code, out.String(), errb.String()}
}

func TestProvisionVerbOnEmulator(t *testing.T) {
	t.Parallel()
	ps := pubsubtest.New(t, config.Production, false)
	n := ps.Names
	env := map[string]string{"PUBSUB_EMULATOR_HOST": ps.Addr(), "GCP_PROJECT": pubsubtest.Project}
	base := []string{"--env", "production", "--endpoint-base", "http://localhost:8080/", "--invoker", "push@backbone-test.iam.gserviceaccount.com"}

	// Dry run: the diff, nothing created.
	r := runProvisionVerb(t, env, append(base, "--dry-run")...)
	if r.code != 0 || !strings.Contains(r.stdout, "dry run") || !strings.Contains(r.stdout, "+ topic "+n.DLQTopic) ||
		!strings.Contains(r.stdout, "+ subscription "+n.RetrySub) || !strings.Contains(r.stdout, "would be made") {
		t.Fatalf("dry run: exit %d\n%s%s", r.code, r.stdout, r.err)
	}
	if _, err := ps.Client.TopicAdminClient.GetTopic(context.Background(), &pubsubpb.GetTopicRequest{Topic: pubsubtest.TopicPath(n.RawTopic)}); err == nil {
		t.Fatal("dry run created a topic")
	}

	// Real run; the IAM step says it was skipped, and why.
	r = runProvisionVerb(t, env, base...)
	if r.code != 0 || !strings.Contains(r.stdout, "9 change(s) made") || !strings.Contains(r.stdout, "skipped") ||
		!strings.Contains(r.stdout, "the emulator has no IAM") {
		t.Fatalf("provision: exit %d\n%s%s", r.code, r.stdout, r.err)
	}
	sub, err := ps.Client.SubscriptionAdminClient.GetSubscription(context.Background(), &pubsubpb.GetSubscriptionRequest{Subscription: pubsubtest.SubPath(n.MergeSub)})
	if err != nil || sub.PushConfig.GetPushEndpoint() != "http://localhost:8080/Merge" || !sub.EnableMessageOrdering {
		t.Fatalf("merge subscription: %v %v", sub, err)
	}

	// Second run: nothing changed, and it says so.
	r = runProvisionVerb(t, env, base...)
	if r.code != 0 || !strings.Contains(r.stdout, "no changes") {
		t.Fatalf("second run: exit %d\n%s%s", r.code, r.stdout, r.err)
	}

	// Ordering drift: reported, exit 1, fixed only with --recreate.
	ctx := context.Background()
	if err := ps.Client.SubscriptionAdminClient.DeleteSubscription(ctx, &pubsubpb.DeleteSubscriptionRequest{Subscription: pubsubtest.SubPath(n.DLQSub)}); err != nil {
		t.Fatal(err)
	}
	if _, err := ps.Client.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{Name: pubsubtest.SubPath(n.DLQSub), Topic: pubsubtest.TopicPath(n.DLQTopic), AckDeadlineSeconds: 60}); err != nil {
		t.Fatal(err)
	}
	r = runProvisionVerb(t, env, base...)
	if r.code != 1 || !strings.Contains(r.stdout, "! subscription "+n.DLQSub) || !strings.Contains(r.stdout, "enable_message_ordering: false -> true") ||
		!strings.Contains(r.err, "--recreate") {
		t.Fatalf("ordering drift: exit %d\n%s%s", r.code, r.stdout, r.err)
	}
	r = runProvisionVerb(t, env, append(base, "--recreate")...)
	if r.code != 0 || !strings.Contains(r.stdout, "-+ subscription "+n.DLQSub) {
		t.Fatalf("recreate: exit %d\n%s%s", r.code, r.stdout, r.err)
	}
	if r = runProvisionVerb(t, env, base...); r.code != 0 || !strings.Contains(r.stdout, "no changes") {
		t.Fatalf("after recreate: exit %d\n%s%s", r.code, r.stdout, r.err)
	}
}

func TestProvisionVerbUsage(t *testing.T) {
	t.Parallel()
	real := map[string]string{"GCP_PROJECT": "p"} // no emulator: real Pub/Sub rules apply
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no env", real, nil, "--env is required"},
		{"bad env", real, []string{"--env", "staging"}, `--env="staging" is not valid`},
		{"no project", map[string]string{}, []string{"--env", "sandbox", "--pull", "--project-number", "1"}, "no project"},
		{"forgotten endpoints", real, []string{"--env", "sandbox", "--project-number", "1"}, "--pull"},
		{"no project number", real, []string{"--env", "sandbox", "--pull"}, "--project-number is required"},
		{"http endpoint", real, []string{"--env", "sandbox", "--endpoint-base", "http://x", "--invoker", "a@b", "--project-number", "1"}, "https"},
		{"both endpoint flags", real, []string{"--env", "sandbox", "--endpoint-base", "https://x", "--endpoints", "Merge=https://x"}, "exclude each other"},
		{"unknown target", real, []string{"--env", "sandbox", "--endpoints", "Merger=https://x"}, `unknown target "Merger"`},
		{"partial endpoints", real, []string{"--env", "sandbox", "--endpoints", "Merge=https://x", "--invoker", "a@b", "--project-number", "1"}, "no endpoint for NetSuiteSink"},
		{"no invoker", real, []string{"--env", "sandbox", "--endpoint-base", "https://x", "--project-number", "1"}, "invoker"},
		{"pull and endpoints", real, []string{"--env", "sandbox", "--endpoint-base", "https://x", "--pull"}, "exclude each other"},
		{"bad ack deadline", real, []string{"--env", "sandbox", "--pull", "--project-number", "1", "--ack-deadline", "1h"}, "ack deadline"},
	}
	for _, c := range cases {
		r := runProvisionVerb(t, c.env, c.args...)
		if r.code != 2 || !strings.Contains(r.err, c.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit 2 mentioning %q", c.name, r.code, r.err, c.want)
		}
	}
}
