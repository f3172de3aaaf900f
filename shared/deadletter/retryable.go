package deadletter

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/merge"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/store"
)

// transientReasons are the reason codes of failures that clear up by
// themselves once their cause has: the target was down or slow, the store or
// Pub/Sub was unreachable, or an earlier version was still in flight (a gap
// left by a dead-lettered predecessor closes once that one is redriven; the
// redrive replays oldest version first). Every other code, known or not, is
// treated as permanent: an automatic redrive must never resend something a
// system refused for its content.
var transientReasons = map[string]bool{
	failure.ReasonStoreUnavailable: true,
	// merge
	merge.ReasonVersionGap:    true,
	merge.ReasonPublishFailed: true,
	// sinks' transport failures
	sink.ReasonTimeout:           true,
	sink.ReasonConnectionRefused: true,
	sink.ReasonConnectionReset:   true,
	sink.ReasonDNS:               true,
	sink.ReasonNetwork:           true,
	sink.ReasonCanceled:          true,
	// NetSuite's account-wide concurrency limit (SPEC §7: retryable), in
	// NetSuite's own spelling
	"CONCURRENCY_LIMIT_EXCEEDED": true,
	// a target asking for time: 408 and 429 (the 5xx are matched below)
	sink.StatusReason(http.StatusRequestTimeout):  true,
	sink.StatusReason(http.StatusTooManyRequests): true,
}

// TransientReason reports whether a reason code names a transient failure:
// one of transientReasons or a 5xx status (http_5NN).
func TransientReason(reason string) bool {
	if transientReasons[reason] {
		return true
	}
	code, ok := strings.CutPrefix(reason, "http_5")
	return ok && len(code) == 2 && strings.Trim(code, "0123456789") == ""
}

// DefaultMaxAutoRedrives bounds how often one failure is redriven
// automatically: each redrive that fails again comes back as a new dead
// letter with the redrive counter one higher.
const DefaultMaxAutoRedrives = 5

// Transient reports whether d may be redriven automatically (`dlq redrive
// --retryable`): its data is an error message that was still retryable when
// Pub/Sub gave up on it, Retry did not park it for a reason of its own
// (not_retryable, failed_permanently, wrong_env, ...), its reason is a
// transient one, it is not a stress record, and it has been redriven fewer
// than maxRedrives times. When it may not, why says why.
func Transient(d store.DeadLetter, maxRedrives int) (ok bool, why string) {
	e, err := failure.Decode(d.Data)
	if err != nil {
		return false, "its data is not an error message"
	}
	switch {
	case d.Attributes[AttrDeadLetterReason] != "":
		return false, "Retry parked it (" + d.Attributes[AttrDeadLetterReason] + ")"
	case !e.Retryable:
		return false, "its error was not retryable"
	case !TransientReason(e.Reason):
		return false, fmt.Sprintf("reason %s is not a transient failure", e.Reason)
	case event.Reserved(d.RecordType) || event.Reserved(e.RecordType):
		return false, "a stress record never goes back into the pipeline"
	case e.Redrive >= maxRedrives:
		return false, fmt.Sprintf("already redriven %d time(s) (the automatic limit is %d)", e.Redrive, maxRedrives)
	}
	return true, ""
}

// Version is the record version a dead letter concerns, read from its
// original message: a merged event's version, or the version a raw event
// would create (base_version + 1). 0 when unknown.
func Version(d store.DeadLetter) uint64 {
	e, err := failure.Decode(d.Data)
	if err != nil {
		return 0
	}
	var v struct {
		Version     *uint64 `json:"version"`
		BaseVersion *uint64 `json:"base_version"`
	}
	if json.Unmarshal(e.Original.Data, &v) != nil {
		return 0
	}
	switch {
	case v.Version != nil:
		return *v.Version
	case v.BaseVersion != nil:
		return *v.BaseVersion + 1
	}
	return 0
}

// Order puts each record's dead letters in version order, oldest first (a
// redrive of v2 before v1 makes v1 stale, or v2 a version gap), over the
// positions that record's letters hold: the interleaving of records and the
// place of letters of no known record stay as given. Ties keep their order.
// The slice is reordered in place and returned.
func Order(letters []store.DeadLetter) []store.DeadLetter {
	slots := map[string][]int{}
	var records []string
	for i, d := range letters {
		r := recordKey(d)
		if r == "" {
			continue
		}
		if _, ok := slots[r]; !ok {
			records = append(records, r)
		}
		slots[r] = append(slots[r], i)
	}
	for _, r := range records {
		type versioned struct {
			d store.DeadLetter
			v uint64
		}
		idx := slots[r]
		group := make([]versioned, len(idx))
		for k, i := range idx {
			group[k] = versioned{letters[i], Version(letters[i])}
		}
		slices.SortStableFunc(group, func(a, b versioned) int { return cmp.Compare(a.v, b.v) })
		for k, i := range idx {
			letters[i] = group[k].d
		}
	}
	return letters
}

func recordKey(d store.DeadLetter) string {
	if d.RecordType == "" || d.RecordID == "" {
		return ""
	}
	return d.RecordType + ":" + d.RecordID
}

// HealthCheck says whether a stage's dependency is back; nil means healthy.
type HealthCheck func(ctx context.Context) error

// HTTPReachable is the health check of a delivery target: a GET of baseURL
// must get an HTTP answer that is neither 5xx nor 429 within timeout. Any
// other status (401, 404 on the bare base URL) means the server is up and
// answering, which is all a redrive needs to know.
func HTTPReachable(client *http.Client, baseURL string, timeout time.Duration) HealthCheck {
	return func(ctx context.Context) error {
		if baseURL == "" {
			return errors.New("no base URL configured: cannot probe the target")
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL, nil)
		if err != nil {
			return fmt.Errorf("probe %s: %w", baseURL, err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("probe %s: %w", baseURL, err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			return fmt.Errorf("probe %s: HTTP %d", baseURL, resp.StatusCode)
		}
		return nil
	}
}

// HealthChecks probe what each stage's redrive depends on: the target's base
// URL for a sink (its error names the variable that sets it), the event store
// for the merge. A stage without a check (unknown) is held back.
func HealthChecks(suitexURL, netsuiteURL string, s store.Store, timeout time.Duration) map[string]HealthCheck {
	client := &http.Client{Timeout: timeout}
	return map[string]HealthCheck{
		store.StageSuiteX:   named("SUITEX_BASE_URL", HTTPReachable(client, suitexURL, timeout)),
		store.StageNetSuite: named("NETSUITE_BASE_URL", HTTPReachable(client, netsuiteURL, timeout)),
		store.StageMerge: func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			return s.Ping(ctx)
		},
	}
}

// named prefixes a check's error with the variable it probes.
func named(variable string, check HealthCheck) HealthCheck {
	return func(ctx context.Context) error {
		if err := check(ctx); err != nil {
			return fmt.Errorf("%s: %w", variable, err)
		}
		return nil
	}
}

// Held is a stage whose letters were held back because its health check
// failed.
type Held struct {
	Stage string `json:"stage"`
	Count int    `json:"count"`
	Error string `json:"error"`
}

// Plan is what `dlq redrive --retryable` will do with a selection.
type Plan struct {
	// Ready are the letters to redrive, in the order given.
	Ready []store.DeadLetter
	// Permanent counts letters left out because Transient refused them.
	Permanent int
	// Redriven counts letters left out because they were redriven before:
	// each dead letter is redriven automatically at most once (a redrive
	// that fails again comes back as a new dead letter, and the scheduled
	// run must not replay a record that has since converged).
	Redriven int
	// Held are the stages whose health check failed; their letters wait
	// for the next run.
	Held []Held
}

// PlanRetryable narrows letters to those Transient allows and that were
// never redriven, then holds back the letters of every stage whose health
// check fails (or that has none).
func PlanRetryable(ctx context.Context, s store.Store, letters []store.DeadLetter, maxRedrives int, checks map[string]HealthCheck) (Plan, error) {
	var (
		p       Plan
		byStage = map[string]int{}
		stages  []string
		keep    []store.DeadLetter
	)
	for _, d := range letters {
		if ok, _ := Transient(d, maxRedrives); !ok {
			p.Permanent++
			continue
		}
		before, err := Redrives(ctx, s, d)
		if err != nil {
			return p, err
		}
		if len(before) > 0 {
			p.Redriven++
			continue
		}
		if _, seen := byStage[d.Stage]; !seen {
			stages = append(stages, d.Stage)
		}
		byStage[d.Stage]++
		keep = append(keep, d)
	}
	healthy := map[string]bool{}
	for _, st := range stages {
		check, ok := checks[st]
		var err error
		if !ok {
			err = errors.New("no health check for stage " + st)
		} else {
			err = check(ctx)
		}
		if err != nil {
			p.Held = append(p.Held, Held{Stage: st, Count: byStage[st], Error: err.Error()})
			continue
		}
		healthy[st] = true
	}
	for _, d := range keep {
		if healthy[d.Stage] {
			p.Ready = append(p.Ready, d)
		}
	}
	return p, nil
}
