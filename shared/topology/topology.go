// Package topology holds the Pub/Sub topology of one environment as data
// (SPEC §2: four topics, five subscriptions, the dead-letter wiring and the
// service agent's two roles), compares it with what a project has, and puts
// the project right. `backbone provision` applies it to Google Cloud;
// `backbone dev` applies it to pstest.
package topology

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/backbone-sync/backbone/shared/config"
)

// Settings fixed by SPEC §2.
const (
	// Retention is how long every subscription keeps unacked messages (the
	// Pub/Sub maximum).
	Retention = 7 * 24 * time.Hour
	// MaxDeliveryAttempts is the retry subscription's dead-letter threshold.
	MaxDeliveryAttempts = 5
	// MinBackoff and MaxBackoff bound every subscription's redelivery backoff.
	MinBackoff = 10 * time.Second
	MaxBackoff = 600 * time.Second
)

// DefaultAckDeadline is how long Pub/Sub waits for a handler before it
// redelivers. SPEC leaves it open; 60s is twice the NetSuite sink's default
// request timeout (NETSUITE_TIMEOUT, 30s), the slowest step, so a handler that
// is merely slow is not delivered twice in parallel. The deploy sets the Cloud
// Run request timeout to the same value, so a request never outlives its ack
// deadline. Pub/Sub accepts 10s to 600s.
const DefaultAckDeadline = 60 * time.Second

// Ack deadline bounds Pub/Sub accepts.
const (
	minAckDeadline = 10 * time.Second
	maxAckDeadline = 600 * time.Second
)

// Roles the Pub/Sub service agent needs for dead-lettering (SPEC §2).
const (
	RolePublisher  = "roles/pubsub.publisher"
	RoleSubscriber = "roles/pubsub.subscriber"
)

// Options are the choices Desired leaves to the caller.
type Options struct {
	// AckDeadline of every subscription; zero means DefaultAckDeadline.
	AckDeadline time.Duration
	// Invoker is the service account whose OIDC token Pub/Sub sends with each
	// push. Required when endpoints are given.
	Invoker string
	// ProjectNumber identifies the Pub/Sub service agent
	// (service-{N}@gcp-sa-pubsub.iam.gserviceaccount.com). Empty: the
	// dead-letter IAM grants are not managed (the emulator has no IAM).
	ProjectNumber string
	// Emulator is the address of the emulator the topology is for, if
	// any. It has no IAM: the grants are not managed whatever
	// ProjectNumber says, and IAMSkipped says what they would be in Google
	// Cloud.
	Emulator string
}

// Topology is the desired state of one environment.
type Topology struct {
	Env           config.Env
	Topics        []string // short names
	Subscriptions []Subscription
	// Grants are the IAM bindings the topology needs; empty when
	// IAMSkipped says why they are not managed.
	Grants     []Grant
	IAMSkipped string
}

// Subscription is the desired state of one subscription. Names are short
// (no projects/P/ prefix): Apply qualifies them with the client's project.
type Subscription struct {
	Name, Topic, Target string
	Ordering            bool
	AckDeadline         time.Duration
	Retention           time.Duration
	// Push is nil for a pull subscription.
	Push       *Push
	DeadLetter *DeadLetter
	Retry      *Retry
}

// Push is a push delivery with an OIDC token.
type Push struct {
	Endpoint       string
	ServiceAccount string
	// Audience of the OIDC token: the endpoint's origin, which is what a
	// Cloud Run service accepts whether or not the endpoint has a path.
	Audience string
}

// DeadLetter is a dead-letter policy.
type DeadLetter struct {
	Topic       string // short name
	MaxAttempts int
}

// Retry is a retry (backoff) policy.
type Retry struct {
	Min, Max time.Duration
}

// ResourceKind says whether a grant is on a topic or a subscription.
type ResourceKind string

// The two kinds of resource a grant can be on.
const (
	OnTopic        ResourceKind = "topic"
	OnSubscription ResourceKind = "subscription"
)

// Grant is one IAM binding the topology needs.
type Grant struct {
	Kind     ResourceKind
	Resource string // short name
	Role     string
	Member   string // e.g. serviceAccount:service-1@gcp-sa-pubsub.iam.gserviceaccount.com
}

// ServiceAgent returns the Pub/Sub service agent's email for a project number.
func ServiceAgent(projectNumber string) string {
	return "service-" + projectNumber + "@gcp-sa-pubsub.iam.gserviceaccount.com"
}

// Desired builds env's topology. endpoints maps each function target to its
// push endpoint; nil (or empty) gives pull subscriptions, as `backbone dev`
// uses them. Otherwise all five targets need an endpoint.
func Desired(env config.Env, endpoints map[string]string, opts Options) (Topology, error) {
	if _, err := config.ParseEnv(string(env)); err != nil {
		return Topology{}, err
	}
	ack := opts.AckDeadline
	if ack == 0 {
		ack = DefaultAckDeadline
	}
	if ack < minAckDeadline || ack > maxAckDeadline || ack%time.Second != 0 {
		return Topology{}, fmt.Errorf("ack deadline %s is not valid: Pub/Sub accepts whole seconds from %s to %s", ack, minAckDeadline, maxAckDeadline)
	}
	if err := checkEndpoints(endpoints, opts.Invoker); err != nil {
		return Topology{}, err
	}
	if opts.Emulator != "" {
		opts.ProjectNumber = ""
	}
	if opts.ProjectNumber != "" && !allDigits(opts.ProjectNumber) {
		return Topology{}, fmt.Errorf("project number %q is not valid: it is all digits (gcloud projects describe PROJECT --format='value(projectNumber)')", opts.ProjectNumber)
	}

	n := env.Names()
	t := Topology{Env: env, Topics: n.Topics()}
	for _, s := range n.Subscriptions() {
		sub := Subscription{
			Name: s.Name, Topic: s.Topic, Target: s.Target,
			Ordering:    true,
			AckDeadline: ack,
			Retention:   Retention,
		}
		if ep, ok := endpoints[s.Target]; ok {
			u, _ := url.Parse(ep) // checked by checkEndpoints
			sub.Push = &Push{Endpoint: ep, ServiceAccount: opts.Invoker, Audience: u.Scheme + "://" + u.Host}
		}
		// Every subscription backs off 10–600 s between redeliveries of a
		// nacked message (SPEC §2): a store outage nacks on merge-sub and the
		// sinks, and must not turn into a hot loop against the database.
		sub.Retry = &Retry{Min: MinBackoff, Max: MaxBackoff}
		if s.Name == n.RetrySub {
			sub.DeadLetter = &DeadLetter{Topic: n.DLQTopic, MaxAttempts: MaxDeliveryAttempts}
		}
		t.Subscriptions = append(t.Subscriptions, sub)
	}
	switch {
	case opts.Emulator != "":
		t.IAMSkipped = fmt.Sprintf("PUBSUB_EMULATOR_HOST=%s: the emulator has no IAM. In Google Cloud this step grants the Pub/Sub service agent %s on %s and %s on %s, and checks both",
			opts.Emulator, RolePublisher, n.DLQTopic, RoleSubscriber, n.RetrySub)
	case opts.ProjectNumber == "":
		t.IAMSkipped = "no project number given, so the Pub/Sub service agent is unknown"
	default:
		member := "serviceAccount:" + ServiceAgent(opts.ProjectNumber)
		t.Grants = []Grant{
			{Kind: OnTopic, Resource: n.DLQTopic, Role: RolePublisher, Member: member},
			{Kind: OnSubscription, Resource: n.RetrySub, Role: RoleSubscriber, Member: member},
		}
	}
	return t, nil
}

func checkEndpoints(endpoints map[string]string, invoker string) error {
	if len(endpoints) == 0 {
		return nil
	}
	var errs []error
	for target, ep := range endpoints {
		if !slices.Contains(config.Targets, target) {
			errs = append(errs, fmt.Errorf("endpoint for unknown function target %q: targets are %s", target, strings.Join(config.Targets, ", ")))
			continue
		}
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("endpoint %s=%q is not an absolute http(s) URL", target, ep))
		}
	}
	for _, target := range config.Targets {
		if _, ok := endpoints[target]; !ok {
			errs = append(errs, fmt.Errorf("no endpoint for %s: give all five targets or none (pull)", target))
		}
	}
	if invoker == "" {
		errs = append(errs, errors.New("push endpoints need an invoker service account for the OIDC token"))
	} else if !strings.Contains(invoker, "@") {
		errs = append(errs, fmt.Errorf("invoker %q is not a service account email", invoker))
	}
	return errors.Join(errs...)
}

func allDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// TopicPath returns projects/{project}/topics/{name}.
func TopicPath(project, name string) string { return "projects/" + project + "/topics/" + name }

// SubscriptionPath returns projects/{project}/subscriptions/{name}.
func SubscriptionPath(project, name string) string {
	return "projects/" + project + "/subscriptions/" + name
}

// Proto returns the subscription as a create request in project.
func (s Subscription) Proto(project string) *pubsubpb.Subscription {
	p := &pubsubpb.Subscription{
		Name:                     SubscriptionPath(project, s.Name),
		Topic:                    TopicPath(project, s.Topic),
		EnableMessageOrdering:    s.Ordering,
		AckDeadlineSeconds:       int32(s.AckDeadline / time.Second),
		MessageRetentionDuration: durationpb.New(s.Retention),
		// An empty policy means "never expire". The Pub/Sub default deletes a
		// subscription after 31 idle days, which would silently cut a quiet
		// environment (a sandbox over a holiday) out of the pipeline.
		ExpirationPolicy: &pubsubpb.ExpirationPolicy{},
		PushConfig:       s.pushProto(),
	}
	if s.DeadLetter != nil {
		p.DeadLetterPolicy = &pubsubpb.DeadLetterPolicy{
			DeadLetterTopic:     TopicPath(project, s.DeadLetter.Topic),
			MaxDeliveryAttempts: int32(s.DeadLetter.MaxAttempts),
		}
	}
	if s.Retry != nil {
		p.RetryPolicy = &pubsubpb.RetryPolicy{
			MinimumBackoff: durationpb.New(s.Retry.Min),
			MaximumBackoff: durationpb.New(s.Retry.Max),
		}
	}
	return p
}

// pushProto is the push config; an empty one means pull.
func (s Subscription) pushProto() *pubsubpb.PushConfig {
	if s.Push == nil {
		return &pubsubpb.PushConfig{}
	}
	return &pubsubpb.PushConfig{
		PushEndpoint: s.Push.Endpoint,
		AuthenticationMethod: &pubsubpb.PushConfig_OidcToken_{OidcToken: &pubsubpb.PushConfig_OidcToken{
			ServiceAccountEmail: s.Push.ServiceAccount,
			Audience:            s.Push.Audience,
		}},
		// The push envelope is what shared/message decodes, with
		// deliveryAttempt and orderingKey; "no wrapper" would lose them.
		Wrapper: &pubsubpb.PushConfig_PubsubWrapper_{PubsubWrapper: &pubsubpb.PushConfig_PubsubWrapper{}},
	}
}
