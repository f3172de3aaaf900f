package topology

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"cloud.google.com/go/iam/apiv1/iampb"
	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// Action is what Apply did, or in a dry run would do, to one resource.
type Action string

// Actions. Verified and Skipped are reports, not changes.
const (
	ActionCreate   Action = "create"
	ActionUpdate   Action = "update"
	ActionRecreate Action = "recreate"
	// ActionBlocked: settings that cannot change in place differ, and the
	// Recreate mode was not given. Apply then returns ErrNeedsRecreate.
	ActionBlocked  Action = "needs-recreate"
	ActionGrant    Action = "grant"
	ActionVerified Action = "verified"
	ActionSkipped  Action = "skipped"
)

// Resource kinds in a Change.
const (
	KindTopic        = "topic"
	KindSubscription = "subscription"
	KindIAM          = "iam"
)

// Change is one line of Apply's report.
type Change struct {
	Action Action
	Kind   string // KindTopic, KindSubscription or KindIAM
	Name   string
	Fields []FieldDiff // for updates, recreations and blocked subscriptions
	Detail string
}

// Changes is Apply's report, in the order it worked.
type Changes []Change

// Pending reports whether anything differed from the spec (changed, or in a
// dry run would change, or needs --recreate).
func (cs Changes) Pending() bool {
	for _, c := range cs {
		if c.Action != ActionVerified && c.Action != ActionSkipped {
			return true
		}
	}
	return false
}

// Count returns how many changes have action a.
func (cs Changes) Count(a Action) int {
	n := 0
	for _, c := range cs {
		if c.Action == a {
			n++
		}
	}
	return n
}

// Write prints the report, one resource a line, differing fields below it.
func (cs Changes) Write(w io.Writer) error {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString(c.String())
		b.WriteByte('\n')
		for _, f := range c.Fields {
			b.WriteString("    " + f.String())
			if f.Immutable {
				b.WriteString("   (cannot change in place)")
			}
			b.WriteByte('\n')
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Summary is the report's last line: how many changes Apply made, or in a
// dry run would make, to want.
func (cs Changes) Summary(want Topology, dryRun bool) string {
	n := len(cs) - cs.Count(ActionVerified) - cs.Count(ActionSkipped)
	switch {
	case n == 0:
		return fmt.Sprintf("no changes: the %d topics and %d subscriptions of %s match the spec", len(want.Topics), len(want.Subscriptions), want.Env)
	case dryRun:
		return fmt.Sprintf("%d change(s) would be made; nothing was changed (dry run)", n)
	}
	return fmt.Sprintf("%d change(s) made", n)
}

func (c Change) String() string {
	var s string
	switch c.Action {
	case ActionCreate:
		s = "+ " + c.Kind + " " + c.Name
	case ActionUpdate:
		s = "~ " + c.Kind + " " + c.Name
	case ActionRecreate:
		s = "-+ " + c.Kind + " " + c.Name + ": deleted and created again (its unacked messages are dropped)"
	case ActionBlocked:
		s = "! " + c.Kind + " " + c.Name + ": differs in settings Pub/Sub cannot change in place; rerun with --recreate to delete and create it again (its unacked messages are lost)"
	case ActionGrant:
		s = "+ " + c.Kind + " " + c.Name
	case ActionVerified:
		s = "= " + c.Kind + " " + c.Name
	case ActionSkipped:
		s = "- " + c.Kind + " " + c.Name + ": skipped"
	default:
		s = string(c.Action) + " " + c.Kind + " " + c.Name
	}
	if c.Detail != "" {
		s += " (" + c.Detail + ")"
	}
	return s
}

// Mode says how Apply may act.
type Mode struct {
	// DryRun reads and compares only; the report says what would change.
	DryRun bool
	// Recreate deletes and recreates a subscription whose immutable settings
	// (message ordering, topic, filter) differ. Its unacked messages are lost,
	// so this is never done without being asked.
	Recreate bool
}

// ErrNeedsRecreate is returned (wrapped) when a subscription differs in a
// setting that cannot change in place and Mode.Recreate was not given.
var ErrNeedsRecreate = errors.New("a subscription differs in settings that cannot change in place")

// Apply makes client's project match want: it creates missing topics and
// subscriptions, puts drifted settings back with field-masked updates, and
// grants and verifies the dead-letter roles. It is idempotent: on a project
// that matches, the report holds only verifications and nothing is written.
// Everything that can be fixed is fixed even when a subscription is blocked;
// the error then wraps ErrNeedsRecreate.
func Apply(ctx context.Context, client *pubsub.Client, want Topology, mode Mode) (Changes, error) {
	if len(want.Topics) == 0 || len(want.Subscriptions) == 0 {
		return nil, errors.New("apply topology: empty spec (build it with topology.Desired)")
	}
	project := client.Project()
	var cs Changes
	missing := map[string]bool{} // resources a dry run would create

	for _, name := range want.Topics {
		path := TopicPath(project, name)
		_, err := client.TopicAdminClient.GetTopic(ctx, &pubsubpb.GetTopicRequest{Topic: path})
		if err == nil {
			continue
		}
		if status.Code(err) != codes.NotFound {
			return cs, fmt.Errorf("read topic %s: %w", path, err)
		}
		cs = append(cs, Change{Action: ActionCreate, Kind: KindTopic, Name: name})
		missing[path] = true
		if mode.DryRun {
			continue
		}
		if _, err := client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: path}); err != nil && status.Code(err) != codes.AlreadyExists {
			return cs, fmt.Errorf("create topic %s: %w", path, err)
		}
	}

	var blocked []string
	for _, s := range want.Subscriptions {
		c, err := applySubscription(ctx, client, project, s, mode)
		if err != nil {
			return cs, err
		}
		for _, ch := range c {
			if ch.Action == ActionCreate {
				missing[SubscriptionPath(project, s.Name)] = true
			}
			if ch.Action == ActionBlocked {
				blocked = append(blocked, s.Name)
			}
		}
		cs = append(cs, c...)
	}

	if len(want.Grants) == 0 {
		cs = append(cs, Change{Action: ActionSkipped, Kind: KindIAM, Name: "dead-letter grants for the Pub/Sub service agent", Detail: want.IAMSkipped})
	}
	for _, g := range want.Grants {
		c, err := ensureGrant(ctx, client, project, g, mode.DryRun, missing)
		if err != nil {
			return cs, err
		}
		cs = append(cs, c)
	}

	if len(blocked) > 0 {
		return cs, fmt.Errorf("%w: %s (rerun with --recreate)", ErrNeedsRecreate, strings.Join(blocked, ", "))
	}
	return cs, nil
}

func applySubscription(ctx context.Context, client *pubsub.Client, project string, s Subscription, mode Mode) (Changes, error) {
	sa := client.SubscriptionAdminClient
	path := SubscriptionPath(project, s.Name)
	have, err := sa.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: path})
	if status.Code(err) == codes.NotFound {
		if !mode.DryRun {
			if _, err := sa.CreateSubscription(ctx, s.Proto(project)); err != nil {
				return nil, fmt.Errorf("create subscription %s: %w", path, err)
			}
		}
		return Changes{{Action: ActionCreate, Kind: KindSubscription, Name: s.Name, Detail: s.summary()}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read subscription %s: %w", path, err)
	}

	diffs := DiffSubscription(project, s, have)
	var mask []string
	immutable := false
	for _, d := range diffs {
		if d.Immutable {
			immutable = true
		} else {
			mask = append(mask, d.Field)
		}
	}
	switch {
	case len(diffs) == 0:
		return nil, nil
	case immutable && mode.Recreate:
		if !mode.DryRun {
			if err := sa.DeleteSubscription(ctx, &pubsubpb.DeleteSubscriptionRequest{Subscription: path}); err != nil && status.Code(err) != codes.NotFound {
				return nil, fmt.Errorf("delete subscription %s to recreate it: %w", path, err)
			}
			if _, err := sa.CreateSubscription(ctx, s.Proto(project)); err != nil {
				return nil, fmt.Errorf("recreate subscription %s: %w", path, err)
			}
		}
		return Changes{{Action: ActionRecreate, Kind: KindSubscription, Name: s.Name, Fields: diffs}}, nil
	}

	var out Changes
	if immutable {
		var fixed []FieldDiff
		for _, d := range diffs {
			if d.Immutable {
				fixed = append(fixed, d)
			}
		}
		out = append(out, Change{Action: ActionBlocked, Kind: KindSubscription, Name: s.Name, Fields: fixed})
	}
	if len(mask) > 0 {
		var upd []FieldDiff
		for _, d := range diffs {
			if !d.Immutable {
				upd = append(upd, d)
			}
		}
		if !mode.DryRun {
			_, err := sa.UpdateSubscription(ctx, &pubsubpb.UpdateSubscriptionRequest{
				Subscription: s.Proto(project),
				UpdateMask:   &fieldmaskpb.FieldMask{Paths: mask},
			})
			if err != nil {
				return nil, fmt.Errorf("update subscription %s (%s): %w", path, strings.Join(mask, ", "), err)
			}
		}
		out = append(out, Change{Action: ActionUpdate, Kind: KindSubscription, Name: s.Name, Fields: upd})
	}
	return out, nil
}

// summary describes a subscription being created.
func (s Subscription) summary() string {
	parts := []string{"topic " + s.Topic}
	if s.Push == nil {
		parts = append(parts, "pull")
	} else {
		parts = append(parts, "push "+s.Push.Endpoint+" as "+s.Push.ServiceAccount)
	}
	if s.Ordering {
		parts = append(parts, "ordered")
	}
	parts = append(parts, "ack "+fmtDuration(s.AckDeadline), "retention "+fmtDuration(s.Retention))
	if s.DeadLetter != nil {
		parts = append(parts, fmt.Sprintf("dead-letter to %s after %d attempts", s.DeadLetter.Topic, s.DeadLetter.MaxAttempts))
	}
	if s.Retry != nil {
		parts = append(parts, fmt.Sprintf("backoff %s..%s", fmtDuration(s.Retry.Min), fmtDuration(s.Retry.Max)))
	}
	return strings.Join(parts, ", ")
}

// iamPolicy reads and writes one resource's policy; the topic and the
// subscription admin clients both have these two methods.
type iamPolicy struct {
	get func(context.Context, *iampb.GetIamPolicyRequest) (*iampb.Policy, error)
	set func(context.Context, *iampb.SetIamPolicyRequest) (*iampb.Policy, error)
}

func policyOf(client *pubsub.Client, kind ResourceKind) iamPolicy {
	if kind == OnTopic {
		return iamPolicy{
			get: func(ctx context.Context, r *iampb.GetIamPolicyRequest) (*iampb.Policy, error) {
				return client.TopicAdminClient.GetIamPolicy(ctx, r)
			},
			set: func(ctx context.Context, r *iampb.SetIamPolicyRequest) (*iampb.Policy, error) {
				return client.TopicAdminClient.SetIamPolicy(ctx, r)
			},
		}
	}
	return iamPolicy{
		get: func(ctx context.Context, r *iampb.GetIamPolicyRequest) (*iampb.Policy, error) {
			return client.SubscriptionAdminClient.GetIamPolicy(ctx, r)
		},
		set: func(ctx context.Context, r *iampb.SetIamPolicyRequest) (*iampb.Policy, error) {
			return client.SubscriptionAdminClient.SetIamPolicy(ctx, r)
		},
	}
}

// maxPolicyWrites bounds the read-modify-write loop when someone else
// changes the policy at the same time (the etag then no longer matches).
const maxPolicyWrites = 5

func ensureGrant(ctx context.Context, client *pubsub.Client, project string, g Grant, dryRun bool, missing map[string]bool) (Change, error) {
	resource := TopicPath(project, g.Resource)
	if g.Kind == OnSubscription {
		resource = SubscriptionPath(project, g.Resource)
	}
	name := fmt.Sprintf("%s on %s %s for %s", g.Role, g.Kind, g.Resource, g.Member)
	granted := Change{Action: ActionGrant, Kind: KindIAM, Name: name}
	if dryRun && missing[resource] {
		return granted, nil // the resource itself would be created first
	}
	p := policyOf(client, g.Kind)
	for attempt := 1; ; attempt++ {
		pol, err := p.get(ctx, &iampb.GetIamPolicyRequest{Resource: resource})
		if err != nil {
			return Change{}, fmt.Errorf("read IAM policy of %s: %w", resource, err)
		}
		if hasMember(pol, g.Role, g.Member) {
			return Change{Action: ActionVerified, Kind: KindIAM, Name: name}, nil
		}
		if dryRun {
			return granted, nil
		}
		addMember(pol, g.Role, g.Member)
		_, err = p.set(ctx, &iampb.SetIamPolicyRequest{Resource: resource, Policy: pol})
		if c := status.Code(err); (c == codes.Aborted || c == codes.FailedPrecondition) && attempt < maxPolicyWrites {
			continue // concurrent policy change: read again and retry
		}
		if err != nil {
			return Change{}, fmt.Errorf("grant %s: %w", name, err)
		}
		// Verify by reading back: SPEC §2 requires the provisioner to check
		// the roles, not only to ask for them.
		pol, err = p.get(ctx, &iampb.GetIamPolicyRequest{Resource: resource})
		if err != nil {
			return Change{}, fmt.Errorf("verify %s: read IAM policy of %s: %w", name, resource, err)
		}
		if !hasMember(pol, g.Role, g.Member) {
			return Change{}, fmt.Errorf("verify %s: the policy read back from %s does not hold it", name, resource)
		}
		return granted, nil
	}
}

func hasMember(p *iampb.Policy, role, member string) bool {
	for _, b := range p.GetBindings() {
		if b.GetRole() != role || b.GetCondition() != nil {
			continue
		}
		for _, m := range b.GetMembers() {
			if m == member {
				return true
			}
		}
	}
	return false
}

func addMember(p *iampb.Policy, role, member string) {
	for _, b := range p.Bindings {
		if b.Role == role && b.Condition == nil {
			b.Members = append(b.Members, member)
			return
		}
	}
	p.Bindings = append(p.Bindings, &iampb.Binding{Role: role, Members: []string{member}})
}
