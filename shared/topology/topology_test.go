package topology

import (
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/backbone-sync/backbone/shared/config"
)

func allEndpoints(base string) map[string]string {
	m := map[string]string{}
	for _, t := range config.Targets {
		m[t] = base + "/" + t
	}
	return m
}

func TestDesiredFollowsSpec(t *testing.T) {
	t.Parallel()
	for _, env := range config.Envs {
		t.Run(string(env), func(t *testing.T) {
			t.Parallel()
			n := env.Names()
			top, err := Desired(env, nil, Options{ProjectNumber: "123456789012"})
			if err != nil {
				t.Fatal(err)
			}
			wantTopics := []string{"events.raw." + string(env), "events.merged." + string(env), "events.error." + string(env), "events.dlq." + string(env)}
			if strings.Join(top.Topics, " ") != strings.Join(wantTopics, " ") {
				t.Errorf("topics = %v, want %v", top.Topics, wantTopics)
			}
			if len(top.Subscriptions) != 5 {
				t.Fatalf("%d subscriptions, want 5", len(top.Subscriptions))
			}
			for _, s := range top.Subscriptions {
				if !s.Ordering || s.AckDeadline != 60*time.Second || s.Retention != 7*24*time.Hour || s.Push != nil {
					t.Errorf("%s: ordering=%v ack=%s retention=%s push=%v", s.Name, s.Ordering, s.AckDeadline, s.Retention, s.Push)
				}
				if !strings.HasSuffix(s.Topic, "."+string(env)) || !strings.HasPrefix(s.Name, s.Topic+"-") {
					t.Errorf("%s on %s: not derived from the environment", s.Name, s.Topic)
				}
				// Every subscription backs off 10–600 s (SPEC §2).
				if s.Retry == nil || s.Retry.Min != 10*time.Second || s.Retry.Max != 600*time.Second {
					t.Errorf("%s: retry policy = %+v, want 10s..600s", s.Name, s.Retry)
				}
				isRetry := s.Name == n.RetrySub
				if isRetry {
					if s.DeadLetter == nil || s.DeadLetter.Topic != n.DLQTopic || s.DeadLetter.MaxAttempts != 5 {
						t.Errorf("retry sub dead letter = %+v", s.DeadLetter)
					}
				} else if s.DeadLetter != nil {
					t.Errorf("%s: dead letter %+v; only the retry subscription has one", s.Name, s.DeadLetter)
				}
			}
			agent := "serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com"
			want := []Grant{
				{OnTopic, n.DLQTopic, "roles/pubsub.publisher", agent},
				{OnSubscription, n.RetrySub, "roles/pubsub.subscriber", agent},
			}
			if len(top.Grants) != 2 || top.Grants[0] != want[0] || top.Grants[1] != want[1] {
				t.Errorf("grants = %+v, want %+v", top.Grants, want)
			}
		})
	}
}

func TestDesiredPush(t *testing.T) {
	t.Parallel()
	eps := map[string]string{}
	for _, tg := range config.Targets {
		eps[tg] = "https://backbone-" + strings.ToLower(tg) + "-x.a.run.app"
	}
	eps[config.TargetMerge] = "https://host.example:8443/base/Merge" // a path: audience is the origin
	top, err := Desired(config.Sandbox, eps, Options{Invoker: "push@p.iam.gserviceaccount.com"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range top.Subscriptions {
		if s.Push == nil || s.Push.Endpoint != eps[s.Target] || s.Push.ServiceAccount != "push@p.iam.gserviceaccount.com" {
			t.Fatalf("%s push = %+v", s.Name, s.Push)
		}
		wantAud := eps[s.Target]
		if s.Target == config.TargetMerge {
			wantAud = "https://host.example:8443"
		}
		if s.Push.Audience != wantAud {
			t.Errorf("%s audience %q, want %q", s.Name, s.Push.Audience, wantAud)
		}
	}
	if len(top.Grants) != 0 || top.IAMSkipped == "" {
		t.Errorf("without a project number the grants must be skipped with a reason: %+v %q", top.Grants, top.IAMSkipped)
	}
}

func TestDesiredRejects(t *testing.T) {
	t.Parallel()
	partial := allEndpoints("https://x")
	delete(partial, config.TargetRetry)
	unknown := allEndpoints("https://x")
	unknown["Nope"] = "https://x/Nope"
	badURL := allEndpoints("https://x")
	badURL[config.TargetMerge] = "run.app/Merge"
	cases := []struct {
		name      string
		env       config.Env
		endpoints map[string]string
		opts      Options
		want      string
	}{
		{"unknown env", "staging", nil, Options{}, "BACKBONE_ENV"},
		{"empty env", "", nil, Options{}, "BACKBONE_ENV"},
		{"partial endpoints", config.Sandbox, partial, Options{Invoker: "a@b"}, "no endpoint for Retry"},
		{"unknown target", config.Sandbox, unknown, Options{Invoker: "a@b"}, `unknown function target "Nope"`},
		{"bad url", config.Sandbox, badURL, Options{Invoker: "a@b"}, "not an absolute http(s) URL"},
		{"no invoker", config.Sandbox, allEndpoints("https://x"), Options{}, "invoker service account"},
		{"ack too long", config.Sandbox, nil, Options{AckDeadline: 601 * time.Second}, "ack deadline"},
		{"ack too short", config.Sandbox, nil, Options{AckDeadline: 5 * time.Second}, "ack deadline"},
		{"project number", config.Sandbox, nil, Options{ProjectNumber: "my-project"}, "project number"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Desired(c.env, c.endpoints, c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}

// TestDiffSubscription drifts one setting at a time away from the spec and
// checks that exactly that field is reported, with the right mutability.
func TestDiffSubscription(t *testing.T) {
	t.Parallel()
	const project = "p"
	top, err := Desired(config.Production, allEndpoints("https://svc"), Options{Invoker: "push@p.iam.gserviceaccount.com"})
	if err != nil {
		t.Fatal(err)
	}
	n := config.Production.Names()
	var retry Subscription
	for _, s := range top.Subscriptions {
		if s.Name == n.RetrySub {
			retry = s
		}
	}
	if d := DiffSubscription(project, retry, retry.Proto(project)); len(d) != 0 {
		t.Fatalf("spec against itself: %v", d)
	}
	cases := []struct {
		field     string
		immutable bool
		drift     func(p *pubsubpb.Subscription)
	}{
		{"topic", true, func(p *pubsubpb.Subscription) { p.Topic = "_deleted-topic_" }},
		{"enable_message_ordering", true, func(p *pubsubpb.Subscription) { p.EnableMessageOrdering = false }},
		{"filter", true, func(p *pubsubpb.Subscription) { p.Filter = `attributes.env = "x"` }},
		{"detached", true, func(p *pubsubpb.Subscription) { p.Detached = true }},
		{"ack_deadline_seconds", false, func(p *pubsubpb.Subscription) { p.AckDeadlineSeconds = 10 }},
		{"message_retention_duration", false, func(p *pubsubpb.Subscription) { p.MessageRetentionDuration = durationpb.New(time.Hour) }},
		{"retain_acked_messages", false, func(p *pubsubpb.Subscription) { p.RetainAckedMessages = true }},
		{"expiration_policy", false, func(p *pubsubpb.Subscription) { p.ExpirationPolicy = nil }},
		{"expiration_policy", false, func(p *pubsubpb.Subscription) {
			p.ExpirationPolicy = &pubsubpb.ExpirationPolicy{Ttl: durationpb.New(31 * 24 * time.Hour)}
		}},
		{"push_config", false, func(p *pubsubpb.Subscription) { p.PushConfig = &pubsubpb.PushConfig{} }},
		{"push_config", false, func(p *pubsubpb.Subscription) { p.PushConfig.PushEndpoint = "https://elsewhere" }},
		{"push_config", false, func(p *pubsubpb.Subscription) { p.PushConfig.AuthenticationMethod = nil }},
		{"push_config", false, func(p *pubsubpb.Subscription) { p.PushConfig.GetOidcToken().Audience = "https://other" }},
		{"push_config", false, func(p *pubsubpb.Subscription) {
			p.PushConfig.Wrapper = &pubsubpb.PushConfig_NoWrapper_{NoWrapper: &pubsubpb.PushConfig_NoWrapper{}}
		}},
		{"dead_letter_policy", false, func(p *pubsubpb.Subscription) { p.DeadLetterPolicy = nil }},
		{"dead_letter_policy", false, func(p *pubsubpb.Subscription) { p.DeadLetterPolicy.MaxDeliveryAttempts = 10 }},
		{"dead_letter_policy", false, func(p *pubsubpb.Subscription) {
			p.DeadLetterPolicy.DeadLetterTopic = TopicPath(project, config.Sandbox.Names().DLQTopic)
		}},
		{"retry_policy", false, func(p *pubsubpb.Subscription) { p.RetryPolicy = nil }},
		{"retry_policy", false, func(p *pubsubpb.Subscription) { p.RetryPolicy.MaximumBackoff = durationpb.New(60 * time.Second) }},
		{"enable_exactly_once_delivery", false, func(p *pubsubpb.Subscription) { p.EnableExactlyOnceDelivery = true }},
	}
	for i, c := range cases {
		p := proto.Clone(retry.Proto(project)).(*pubsubpb.Subscription)
		c.drift(p)
		d := DiffSubscription(project, retry, p)
		if len(d) != 1 || d[0].Field != c.field || d[0].Immutable != c.immutable || d[0].Have == d[0].Want {
			t.Errorf("case %d (%s): diff = %+v", i, c.field, d)
		}
	}

	// A pull spec: any push config is drift; a wrapper-less read-back of
	// the push envelope (nil wrapper) is not.
	pull, _ := Desired(config.Production, nil, Options{})
	merge := pull.Subscriptions[0]
	p := merge.Proto(project)
	p.PushConfig = &pubsubpb.PushConfig{PushEndpoint: "https://x"}
	if d := DiffSubscription(project, merge, p); len(d) != 1 || d[0].Field != "push_config" || d[0].Want != "pull" {
		t.Errorf("pull spec vs push: %+v", d)
	}
	pushSpec := top.Subscriptions[0]
	p = pushSpec.Proto(project)
	p.PushConfig.Wrapper = nil
	if d := DiffSubscription(project, pushSpec, p); len(d) != 0 {
		t.Errorf("nil wrapper is the Pub/Sub envelope, not drift: %+v", d)
	}
}

func TestChangesWrite(t *testing.T) {
	t.Parallel()
	cs := Changes{
		{Action: ActionCreate, Kind: KindTopic, Name: "t"},
		{Action: ActionBlocked, Kind: KindSubscription, Name: "s", Fields: []FieldDiff{{Field: "enable_message_ordering", Have: "false", Want: "true", Immutable: true}}},
		{Action: ActionVerified, Kind: KindIAM, Name: "g"},
	}
	var b strings.Builder
	if err := cs.Write(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"+ topic t\n", "! subscription s:", "--recreate", "    enable_message_ordering: false -> true   (cannot change in place)\n", "= iam g\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if !cs.Pending() || (Changes{{Action: ActionVerified}, {Action: ActionSkipped}}).Pending() {
		t.Error("Pending: verified and skipped lines are not changes; everything else is")
	}
}

// TestDesiredOnTheEmulator: no grants on an emulator, even with a project
// number, and the skipped step says what it would grant.
func TestDesiredOnTheEmulator(t *testing.T) {
	top, err := Desired(config.Sandbox, nil, Options{ProjectNumber: "123", Emulator: "127.0.0.1:8085"})
	if err != nil {
		t.Fatal(err)
	}
	n := config.Sandbox.Names()
	if len(top.Grants) != 0 || !strings.Contains(top.IAMSkipped, "PUBSUB_EMULATOR_HOST=127.0.0.1:8085") ||
		!strings.Contains(top.IAMSkipped, RolePublisher+" on "+n.DLQTopic) || !strings.Contains(top.IAMSkipped, RoleSubscriber+" on "+n.RetrySub) {
		t.Errorf("grants %+v, skipped %q", top.Grants, top.IAMSkipped)
	}
	if top, err := Desired(config.Sandbox, nil, Options{ProjectNumber: "123"}); err != nil || len(top.Grants) != 2 {
		t.Errorf("on Google Cloud: grants %+v, %v", top.Grants, err)
	}
}

// TestChangesSummary: the last line counts changes, not verifications or
// skipped steps.
func TestChangesSummary(t *testing.T) {
	top, err := Desired(config.Production, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	same := Changes{{Action: ActionVerified}, {Action: ActionSkipped}}
	two := append(Changes{{Action: ActionCreate}, {Action: ActionUpdate}}, same...)
	for _, c := range []struct {
		cs     Changes
		dryRun bool
		want   string
	}{
		{same, false, "no changes: the 4 topics and 5 subscriptions of production match the spec"},
		{same, true, "no changes: the 4 topics and 5 subscriptions of production match the spec"},
		{two, true, "2 change(s) would be made; nothing was changed (dry run)"},
		{two, false, "2 change(s) made"},
	} {
		if got := c.cs.Summary(top, c.dryRun); got != c.want {
			t.Errorf("%d changes, dry run %v: %q, want %q", len(c.cs), c.dryRun, got, c.want)
		}
	}
}
