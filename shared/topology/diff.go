package topology

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// FieldDiff is one subscription setting that differs from the spec.
type FieldDiff struct {
	// Field is the Pub/Sub field name, which is also its update-mask path.
	Field      string
	Have, Want string
	// Immutable settings cannot be changed in place: the subscription has to
	// be deleted and created again (Apply does so only in Recreate mode).
	Immutable bool
}

func (d FieldDiff) String() string {
	return fmt.Sprintf("%s: %s -> %s", d.Field, d.Have, d.Want)
}

// DiffSubscription compares the subscription have, as read from project,
// with want. It returns nil when every managed setting matches.
func DiffSubscription(project string, want Subscription, have *pubsubpb.Subscription) []FieldDiff {
	var out []FieldDiff
	add := func(field, h, w string, immutable bool) {
		out = append(out, FieldDiff{Field: field, Have: h, Want: w, Immutable: immutable})
	}

	// Immutable: Pub/Sub refuses to change these on an existing subscription.
	if wt := TopicPath(project, want.Topic); have.GetTopic() != wt {
		add("topic", shortName(project, have.GetTopic()), want.Topic, true)
	}
	if have.GetEnableMessageOrdering() != want.Ordering {
		add("enable_message_ordering", strconv.FormatBool(have.GetEnableMessageOrdering()), strconv.FormatBool(want.Ordering), true)
	}
	if have.GetFilter() != "" {
		// A filter silently drops (acks) every message it does not match.
		add("filter", strconv.Quote(have.GetFilter()), "none", true)
	}
	if have.GetDetached() {
		add("detached", "true", "false", true)
	}

	// Mutable: fixed with UpdateSubscription and a field mask.
	if h, w := time.Duration(have.GetAckDeadlineSeconds())*time.Second, want.AckDeadline; h != w {
		add("ack_deadline_seconds", fmtDuration(h), fmtDuration(w), false)
	}
	if h := asDuration(have.GetMessageRetentionDuration()); h != want.Retention {
		add("message_retention_duration", fmtDuration(h), fmtDuration(want.Retention), false)
	}
	if have.GetRetainAckedMessages() {
		add("retain_acked_messages", "true", "false", false)
	}
	if !neverExpires(have.GetExpirationPolicy()) {
		add("expiration_policy", describeExpiration(have.GetExpirationPolicy()), "never", false)
	}
	if !pushEqual(want.Push, have.GetPushConfig()) {
		add("push_config", describePush(project, have.GetPushConfig()), describeWantPush(want.Push), false)
	}
	if !deadLetterEqual(project, want.DeadLetter, have.GetDeadLetterPolicy()) {
		add("dead_letter_policy", describeDeadLetter(project, have.GetDeadLetterPolicy()), describeWantDeadLetter(want.DeadLetter), false)
	}
	if !retryEqual(want.Retry, have.GetRetryPolicy()) {
		add("retry_policy", describeRetry(have.GetRetryPolicy()), describeWantRetry(want.Retry), false)
	}
	if have.GetEnableExactlyOnceDelivery() {
		// Push subscriptions do not support it, and the handlers are
		// idempotent by design (dedup on fingerprint, idempotent archive).
		add("enable_exactly_once_delivery", "true", "false", false)
	}
	return out
}

// fmtDuration prints whole days as "7d" and anything else in seconds
// ("60s", "600s"), the units Pub/Sub's console and gcloud use.
func fmtDuration(d time.Duration) string {
	if d != 0 && d%(24*time.Hour) == 0 {
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return d.String()
}

func asDuration(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}

func shortName(project, path string) string {
	for _, prefix := range []string{"projects/" + project + "/topics/", "projects/" + project + "/subscriptions/"} {
		if s, ok := strings.CutPrefix(path, prefix); ok {
			return s
		}
	}
	if path == "" {
		return "none"
	}
	return path
}

// neverExpires: an empty policy (no ttl) means never; no policy at all means
// Pub/Sub's default of 31 idle days.
func neverExpires(p *pubsubpb.ExpirationPolicy) bool {
	return p != nil && asDuration(p.GetTtl()) == 0
}

func describeExpiration(p *pubsubpb.ExpirationPolicy) string {
	if p == nil {
		return "default (after 31 idle days)"
	}
	return "after " + fmtDuration(asDuration(p.GetTtl())) + " idle"
}

func pushEqual(want *Push, have *pubsubpb.PushConfig) bool {
	if want == nil {
		return have.GetPushEndpoint() == ""
	}
	oidc := have.GetOidcToken()
	return have.GetPushEndpoint() == want.Endpoint &&
		oidc != nil &&
		oidc.GetServiceAccountEmail() == want.ServiceAccount &&
		oidc.GetAudience() == want.Audience &&
		have.GetNoWrapper() == nil // nil wrapper is the Pub/Sub envelope
}

func describePush(project string, p *pubsubpb.PushConfig) string {
	if p.GetPushEndpoint() == "" {
		return "pull"
	}
	s := "push " + p.GetPushEndpoint()
	if o := p.GetOidcToken(); o != nil {
		s += fmt.Sprintf(" (oidc %s, audience %s)", o.GetServiceAccountEmail(), o.GetAudience())
	} else {
		s += " (no authentication)"
	}
	if p.GetNoWrapper() != nil {
		s += " without the Pub/Sub envelope"
	}
	return s
}

func describeWantPush(p *Push) string {
	if p == nil {
		return "pull"
	}
	return fmt.Sprintf("push %s (oidc %s, audience %s)", p.Endpoint, p.ServiceAccount, p.Audience)
}

func deadLetterEqual(project string, want *DeadLetter, have *pubsubpb.DeadLetterPolicy) bool {
	if want == nil {
		return have == nil || have.GetDeadLetterTopic() == ""
	}
	return have.GetDeadLetterTopic() == TopicPath(project, want.Topic) &&
		int(have.GetMaxDeliveryAttempts()) == want.MaxAttempts
}

func describeDeadLetter(project string, p *pubsubpb.DeadLetterPolicy) string {
	if p.GetDeadLetterTopic() == "" {
		return "none"
	}
	return fmt.Sprintf("%s after %d attempts", shortName(project, p.GetDeadLetterTopic()), p.GetMaxDeliveryAttempts())
}

func describeWantDeadLetter(d *DeadLetter) string {
	if d == nil {
		return "none"
	}
	return fmt.Sprintf("%s after %d attempts", d.Topic, d.MaxAttempts)
}

func retryEqual(want *Retry, have *pubsubpb.RetryPolicy) bool {
	if want == nil {
		return asDuration(have.GetMinimumBackoff()) == 0 && asDuration(have.GetMaximumBackoff()) == 0
	}
	return have != nil &&
		asDuration(have.GetMinimumBackoff()) == want.Min &&
		asDuration(have.GetMaximumBackoff()) == want.Max
}

func describeRetry(p *pubsubpb.RetryPolicy) string {
	if asDuration(p.GetMinimumBackoff()) == 0 && asDuration(p.GetMaximumBackoff()) == 0 {
		return "none (redeliver at once)"
	}
	return fmt.Sprintf("backoff %s..%s", fmtDuration(asDuration(p.GetMinimumBackoff())), fmtDuration(asDuration(p.GetMaximumBackoff())))
}

func describeWantRetry(r *Retry) string {
	if r == nil {
		return "none (redeliver at once)"
	}
	return fmt.Sprintf("backoff %s..%s", fmtDuration(r.Min), fmtDuration(r.Max))
}
