package topology_test

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/iam/apiv1/iampb"
	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
	"github.com/backbone-sync/backbone/shared/topology"
)

const invoker = "bb-push@backbone-test.iam.gserviceaccount.com"

func endpoints(env config.Env) map[string]string {
	m := map[string]string{}
	for _, t := range config.Targets {
		m[t] = "https://backbone-" + strings.ToLower(t) + "-" + string(env) + "-abc.a.run.app"
	}
	return m
}

func desired(t *testing.T, env config.Env, push bool) topology.Topology {
	t.Helper()
	var eps map[string]string
	if push {
		eps = endpoints(env)
	}
	top, err := topology.Desired(env, eps, topology.Options{Invoker: invoker})
	if err != nil {
		t.Fatal(err)
	}
	return top
}

func apply(t *testing.T, c *pubsub.Client, top topology.Topology, mode topology.Mode) topology.Changes {
	t.Helper()
	cs, err := topology.Apply(context.Background(), c, top, mode)
	if err != nil {
		t.Fatalf("apply %s: %v", top.Env, err)
	}
	return cs
}

func listTopics(t *testing.T, c *pubsub.Client) []string {
	t.Helper()
	var out []string
	it := c.TopicAdminClient.ListTopics(context.Background(), &pubsubpb.ListTopicsRequest{Project: "projects/" + pubsubtest.Project})
	for {
		tp, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, strings.TrimPrefix(tp.Name, "projects/"+pubsubtest.Project+"/topics/"))
	}
	sort.Strings(out)
	return out
}

func listSubs(t *testing.T, c *pubsub.Client) map[string]*pubsubpb.Subscription {
	t.Helper()
	out := map[string]*pubsubpb.Subscription{}
	it := c.SubscriptionAdminClient.ListSubscriptions(context.Background(), &pubsubpb.ListSubscriptionsRequest{Project: "projects/" + pubsubtest.Project})
	for {
		s, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimPrefix(s.Name, "projects/"+pubsubtest.Project+"/subscriptions/")] = s
	}
	return out
}

// checkEnv compares every setting of env's subscriptions, as read back from
// the server, with SPEC §2 written out literally here (not taken from
// topology.Desired, so that a wrong spec in the package cannot pass).
func checkEnv(t *testing.T, subs map[string]*pubsubpb.Subscription, env config.Env, push bool) {
	t.Helper()
	e := string(env)
	topic := func(kind string) string { return "projects/" + pubsubtest.Project + "/topics/events." + kind + "." + e }
	want := map[string]struct{ topic, target string }{
		"events.raw." + e + "-merge-sub":       {topic("raw"), "Merge"},
		"events.merged." + e + "-netsuite-sub": {topic("merged"), "NetSuiteSink"},
		"events.merged." + e + "-suitex-sub":   {topic("merged"), "SuiteXSink"},
		"events.error." + e + "-retry-sub":     {topic("error"), "Retry"},
		"events.dlq." + e + "-sub":             {topic("dlq"), "DLQArchive"},
	}
	for name, w := range want {
		s := subs[name]
		if s == nil {
			t.Errorf("subscription %s missing", name)
			continue
		}
		if s.Topic != w.topic {
			t.Errorf("%s: topic %s, want %s", name, s.Topic, w.topic)
		}
		if !s.EnableMessageOrdering {
			t.Errorf("%s: message ordering off", name)
		}
		if s.AckDeadlineSeconds != 60 {
			t.Errorf("%s: ack deadline %ds, want 60s", name, s.AckDeadlineSeconds)
		}
		if got := s.MessageRetentionDuration.AsDuration(); got != 7*24*time.Hour {
			t.Errorf("%s: retention %s, want 7 days", name, got)
		}
		if s.ExpirationPolicy == nil || s.ExpirationPolicy.Ttl != nil {
			t.Errorf("%s: expiration %v, want never", name, s.ExpirationPolicy)
		}
		if s.Filter != "" || s.RetainAckedMessages || s.EnableExactlyOnceDelivery {
			t.Errorf("%s: filter %q retain %v exactly-once %v", name, s.Filter, s.RetainAckedMessages, s.EnableExactlyOnceDelivery)
		}
		pc := s.PushConfig
		if push {
			ep := endpoints(env)[w.target]
			oidc := pc.GetOidcToken()
			if pc.GetPushEndpoint() != ep || oidc == nil || oidc.ServiceAccountEmail != invoker || oidc.Audience != ep || pc.GetNoWrapper() != nil {
				t.Errorf("%s: push config %v, want %s with OIDC %s audience %s", name, pc, ep, invoker, ep)
			}
		} else if pc.GetPushEndpoint() != "" {
			t.Errorf("%s: push config %v, want pull", name, pc)
		}
		// Every subscription backs off 10s..600s (SPEC §2).
		if rp := s.RetryPolicy; rp == nil || rp.MinimumBackoff.AsDuration() != 10*time.Second || rp.MaximumBackoff.AsDuration() != 600*time.Second {
			t.Errorf("%s: retry policy %v, want 10s..600s", name, rp)
		}
		if w.target == "Retry" {
			dl := s.DeadLetterPolicy
			if dl == nil || dl.DeadLetterTopic != topic("dlq") || dl.MaxDeliveryAttempts != 5 {
				t.Errorf("%s: dead-letter policy %v, want %s after 5", name, dl, topic("dlq"))
			}
		} else if s.DeadLetterPolicy != nil {
			t.Errorf("%s: dead-letter %v, want none (only the retry subscription has one)", name, s.DeadLetterPolicy)
		}
	}
}

func TestApplyBothEnvironments(t *testing.T) {
	t.Parallel()
	for _, push := range []bool{false, true} {
		name := "pull"
		if push {
			name = "push"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := pubsubtest.New(t, config.Sandbox, false)
			for _, env := range config.Envs {
				cs := apply(t, srv.Client, desired(t, env, push), topology.Mode{})
				if cs.Count(topology.ActionCreate) != 9 {
					t.Errorf("%s: %d creations, want 4 topics + 5 subscriptions:\n%v", env, cs.Count(topology.ActionCreate), cs)
				}
				if cs.Count(topology.ActionSkipped) != 1 {
					t.Errorf("%s: the IAM grants must be reported skipped without a project number: %v", env, cs)
				}
			}
			topics := listTopics(t, srv.Client)
			var want []string
			for _, env := range config.Envs {
				want = append(want, env.Names().Topics()...)
			}
			sort.Strings(want)
			if !slices.Equal(topics, want) {
				t.Fatalf("topics = %v, want %v", topics, want)
			}
			subs := listSubs(t, srv.Client)
			if len(subs) != 10 {
				t.Fatalf("%d subscriptions, want 10", len(subs))
			}
			for _, env := range config.Envs {
				checkEnv(t, subs, env, push)
			}

			// Second run: nothing to do, and nothing written.
			for _, env := range config.Envs {
				cs := apply(t, srv.Client, desired(t, env, push), topology.Mode{})
				if cs.Pending() {
					t.Errorf("%s second run changed something: %v", env, cs)
				}
			}
			after := listSubs(t, srv.Client)
			for name, s := range subs {
				if !proto.Equal(s, after[name]) {
					t.Errorf("%s changed on the second run:\nbefore %v\nafter  %v", name, s, after[name])
				}
			}
		})
	}
}

func TestApplyRepairsDrift(t *testing.T) {
	t.Parallel()
	env := config.Production
	n := env.Names()
	srv := pubsubtest.New(t, env, false)
	top := desired(t, env, true)
	apply(t, srv.Client, top, topology.Mode{})

	ctx := context.Background()
	sa := srv.Client.SubscriptionAdminClient
	if _, err := sa.UpdateSubscription(ctx, &pubsubpb.UpdateSubscriptionRequest{
		Subscription: &pubsubpb.Subscription{
			Name:               pubsubtest.SubPath(n.RetrySub),
			AckDeadlineSeconds: 20,
			RetryPolicy:        &pubsubpb.RetryPolicy{MinimumBackoff: durationpb.New(time.Second), MaximumBackoff: durationpb.New(5 * time.Second)},
			DeadLetterPolicy:   &pubsubpb.DeadLetterPolicy{DeadLetterTopic: pubsubtest.TopicPath(n.DLQTopic), MaxDeliveryAttempts: 50},
		},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"ack_deadline_seconds", "retry_policy", "dead_letter_policy"}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := sa.UpdateSubscription(ctx, &pubsubpb.UpdateSubscriptionRequest{
		Subscription: &pubsubpb.Subscription{
			Name:                     pubsubtest.SubPath(n.MergeSub),
			PushConfig:               &pubsubpb.PushConfig{PushEndpoint: "https://stale.example"},
			MessageRetentionDuration: durationpb.New(time.Hour),
			ExpirationPolicy:         &pubsubpb.ExpirationPolicy{Ttl: durationpb.New(24 * time.Hour)},
		},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"push_config", "message_retention_duration", "expiration_policy"}},
	}); err != nil {
		t.Fatal(err)
	}
	drifted := listSubs(t, srv.Client)

	// A dry run reports every drifted field and writes nothing.
	cs, err := topology.Apply(ctx, srv.Client, top, topology.Mode{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string][]string{}
	for _, c := range cs {
		if c.Action == topology.ActionUpdate {
			for _, f := range c.Fields {
				fields[c.Name] = append(fields[c.Name], f.Field)
			}
		}
	}
	wantFields := map[string][]string{
		n.RetrySub: {"ack_deadline_seconds", "dead_letter_policy", "retry_policy"},
		n.MergeSub: {"message_retention_duration", "expiration_policy", "push_config"},
	}
	if len(fields) != 2 || !slices.Equal(fields[n.RetrySub], wantFields[n.RetrySub]) || !slices.Equal(fields[n.MergeSub], wantFields[n.MergeSub]) {
		t.Errorf("dry run fields = %v, want %v", fields, wantFields)
	}
	var report strings.Builder
	_ = cs.Write(&report)
	if !strings.Contains(report.String(), "ack_deadline_seconds: 20s -> 60s") || !strings.Contains(report.String(), "retry_policy: backoff 1s..5s -> backoff 10s..600s") {
		t.Errorf("dry-run report does not show the diff:\n%s", report.String())
	}
	for name, s := range listSubs(t, srv.Client) {
		if !proto.Equal(s, drifted[name]) {
			t.Errorf("dry run changed %s", name)
		}
	}

	// A real run repairs it; the next one finds nothing.
	cs = apply(t, srv.Client, top, topology.Mode{})
	if cs.Count(topology.ActionUpdate) != 2 {
		t.Errorf("want 2 updates, got %v", cs)
	}
	checkEnv(t, listSubs(t, srv.Client), env, true)
	if cs := apply(t, srv.Client, top, topology.Mode{}); cs.Pending() {
		t.Errorf("run after repair changed something: %v", cs)
	}
}

func TestApplyImmutableDriftNeedsRecreate(t *testing.T) {
	t.Parallel()
	env := config.Sandbox
	n := env.Names()
	srv := pubsubtest.New(t, env, false)
	ctx := context.Background()
	for _, tp := range n.Topics() {
		if _, err := srv.Client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: pubsubtest.TopicPath(tp)}); err != nil {
			t.Fatal(err)
		}
	}
	// The merge subscription was made without ordering (and a short ack
	// deadline); the suitex one hangs off the wrong topic.
	for _, s := range []*pubsubpb.Subscription{
		{Name: pubsubtest.SubPath(n.MergeSub), Topic: pubsubtest.TopicPath(n.RawTopic), AckDeadlineSeconds: 10},
		{Name: pubsubtest.SubPath(n.SuiteXSub), Topic: pubsubtest.TopicPath(n.RawTopic), EnableMessageOrdering: true, AckDeadlineSeconds: 60},
	} {
		if _, err := srv.Client.SubscriptionAdminClient.CreateSubscription(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	top := desired(t, env, false)

	cs, err := topology.Apply(ctx, srv.Client, top, topology.Mode{})
	if !errors.Is(err, topology.ErrNeedsRecreate) || !strings.Contains(err.Error(), n.MergeSub) || !strings.Contains(err.Error(), n.SuiteXSub) {
		t.Fatalf("err = %v, want ErrNeedsRecreate naming both subscriptions", err)
	}
	blocked := map[string]string{}
	for _, c := range cs {
		if c.Action == topology.ActionBlocked {
			for _, f := range c.Fields {
				blocked[c.Name] += f.Field
			}
		}
	}
	if blocked[n.MergeSub] != "enable_message_ordering" || blocked[n.SuiteXSub] != "topic" {
		t.Errorf("blocked = %v", blocked)
	}
	subs := listSubs(t, srv.Client)
	if s := subs[n.MergeSub]; s.EnableMessageOrdering || s.AckDeadlineSeconds != 60 {
		t.Errorf("without --recreate: ordering must stay off (got %v) and the mutable ack deadline be fixed (got %d)", s.EnableMessageOrdering, s.AckDeadlineSeconds)
	}
	if len(subs) != 5 {
		t.Errorf("the missing subscriptions must still be created: %d", len(subs))
	}

	cs = apply(t, srv.Client, top, topology.Mode{Recreate: true})
	if cs.Count(topology.ActionRecreate) != 2 {
		t.Errorf("want 2 recreations: %v", cs)
	}
	checkEnv(t, listSubs(t, srv.Client), env, false)
	if cs := apply(t, srv.Client, top, topology.Mode{}); cs.Pending() {
		t.Errorf("run after recreate changed something: %v", cs)
	}
}

func TestDryRunOnEmptyProject(t *testing.T) {
	t.Parallel()
	srv := pubsubtest.New(t, config.Production, false)
	top, err := topology.Desired(config.Production, nil, topology.Options{ProjectNumber: "42"})
	if err != nil {
		t.Fatal(err)
	}
	cs := apply(t, srv.Client, top, topology.Mode{DryRun: true})
	if cs.Count(topology.ActionCreate) != 9 || cs.Count(topology.ActionGrant) != 2 {
		t.Errorf("dry run report: %v", cs)
	}
	if got := listTopics(t, srv.Client); len(got) != 0 {
		t.Errorf("dry run created topics %v", got)
	}
	if got := listSubs(t, srv.Client); len(got) != 0 {
		t.Errorf("dry run created subscriptions %v", got)
	}
}

// TestDeadLetterAfterFiveNacks: the provisioned retry subscription hands a
// message nacked five times to the dead-letter topic, where the DLQ
// subscription holds it (pstest honours dead-letter policies).
func TestDeadLetterAfterFiveNacks(t *testing.T) {
	t.Parallel()
	for _, env := range config.Envs {
		t.Run(string(env), func(t *testing.T) {
			t.Parallel()
			n := env.Names()
			srv := pubsubtest.New(t, env, false)
			apply(t, srv.Client, desired(t, env, false), topology.Mode{})
			srv.Srv.PublishOrdered(pubsubtest.TopicPath(n.ErrorTopic), []byte(`{"stage":"netsuite"}`), map[string]string{"env": string(env)}, "customer:C-1")

			for attempt := 1; attempt <= 5; attempt++ {
				got := srv.Pull(t, n.RetrySub, 10, false)
				if len(got) != 1 || got[0].DeliveryAttempt != attempt {
					t.Fatalf("attempt %d: pulled %+v", attempt, got)
				}
				srv.Nack(t, n.RetrySub, got[0].AckID)
			}
			dead := srv.Pull(t, n.DLQSub, 10, false)
			if len(dead) == 0 {
				t.Fatal("nothing reached the dead-letter subscription after 5 nacks")
			}
			if string(dead[0].Data) != `{"stage":"netsuite"}` || dead[0].Attributes["env"] != string(env) || dead[0].OrderingKey != "customer:C-1" {
				t.Fatalf("dead letter = %+v", dead[0])
			}
			if got := srv.Pull(t, n.RetrySub, 10, false); len(got) != 0 {
				t.Fatalf("the retry subscription delivers a 6th time: %+v", got)
			}
			// Not drained: pstest v2.9.0 removes a dead-lettered message
			// from the source with its message id, which it ignores (a nack
			// has cleared the message's ack id), so it dead-letters the same
			// message again every 10ms, for as long as the server runs.
		})
	}
}

// fakeIAM is an in-memory IAM policy service registered on the pstest gRPC
// server (pstest has no IAM, and there is no IAM emulator): enough to drive
// the read-modify-write-verify loop, with knobs for an etag race and for a
// server that accepts a write but does not keep it.
type fakeIAM struct {
	iampb.UnimplementedIAMPolicyServer
	mu       sync.Mutex
	policies map[string]*iampb.Policy
	version  int
	sets     int
	raceOnce bool // the next SetIamPolicy fails with ABORTED, as on an etag race
	lossy    bool // SetIamPolicy succeeds but keeps nothing
}

func (f *fakeIAM) GetIamPolicy(_ context.Context, r *iampb.GetIamPolicyRequest) (*iampb.Policy, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.policies[r.Resource]; ok {
		return proto.Clone(p).(*iampb.Policy), nil
	}
	return &iampb.Policy{Etag: []byte("0")}, nil
}

func (f *fakeIAM) SetIamPolicy(_ context.Context, r *iampb.SetIamPolicyRequest) (*iampb.Policy, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sets++
	if f.raceOnce {
		f.raceOnce = false
		return nil, status.Error(codes.Aborted, "etag mismatch")
	}
	cur := []byte("0")
	if p, ok := f.policies[r.Resource]; ok {
		cur = p.Etag
	}
	if string(r.Policy.Etag) != string(cur) {
		return nil, status.Error(codes.Aborted, "etag mismatch")
	}
	if f.lossy {
		return r.Policy, nil
	}
	f.version++
	p := proto.Clone(r.Policy).(*iampb.Policy)
	p.Etag = []byte{byte('0' + f.version)}
	f.policies[r.Resource] = p
	return p, nil
}

func newIAMServer(t *testing.T, f *fakeIAM) *pubsub.Client {
	t.Helper()
	srv := pstest.NewServerWithCallback(0, func(s *grpc.Server) { iampb.RegisterIAMPolicyServer(s, f) })
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c, err := pubsub.NewClient(context.Background(), pubsubtest.Project, option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Close()
		_ = conn.Close()
		_ = srv.Close()
	})
	return c
}

func TestDeadLetterGrants(t *testing.T) {
	t.Parallel()
	env := config.Sandbox
	n := env.Names()
	agent := "serviceAccount:service-987654321@gcp-sa-pubsub.iam.gserviceaccount.com"
	dlqTopic := pubsubtest.TopicPath(n.DLQTopic)
	retrySub := pubsubtest.SubPath(n.RetrySub)
	top, err := topology.Desired(env, nil, topology.Options{ProjectNumber: "987654321"})
	if err != nil {
		t.Fatal(err)
	}

	// An existing binding of the same role must be kept.
	f := &fakeIAM{raceOnce: true, policies: map[string]*iampb.Policy{
		dlqTopic: {Etag: []byte("a"), Bindings: []*iampb.Binding{{Role: "roles/pubsub.publisher", Members: []string{"user:ops@example.com"}}}},
	}}
	c := newIAMServer(t, f)
	cs := apply(t, c, top, topology.Mode{})
	if cs.Count(topology.ActionGrant) != 2 {
		t.Fatalf("want 2 grants: %v", cs)
	}
	pub := f.policies[dlqTopic].GetBindings()
	if len(pub) != 1 || !slices.Equal(pub[0].Members, []string{"user:ops@example.com", agent}) {
		t.Errorf("dlq topic policy = %v", pub)
	}
	sub := f.policies[retrySub].GetBindings()
	if len(sub) != 1 || sub[0].Role != "roles/pubsub.subscriber" || !slices.Equal(sub[0].Members, []string{agent}) {
		t.Errorf("retry subscription policy = %v", sub)
	}

	// Second run: both verified, nothing written.
	sets := f.sets
	cs = apply(t, c, top, topology.Mode{})
	if cs.Pending() || cs.Count(topology.ActionVerified) != 2 || f.sets != sets {
		t.Errorf("second run: %v (SetIamPolicy calls %d -> %d)", cs, sets, f.sets)
	}

	// A grant that does not stick is an error, not a success.
	f2 := &fakeIAM{lossy: true, policies: map[string]*iampb.Policy{}}
	c2 := newIAMServer(t, f2)
	_, err = topology.Apply(context.Background(), c2, top, topology.Mode{})
	if err == nil || !strings.Contains(err.Error(), "does not hold it") {
		t.Fatalf("lossy IAM: err = %v", err)
	}
}
