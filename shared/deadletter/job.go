package deadletter

import (
	"context"
	"fmt"
	"io"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/store"
)

// Job is one redrive run as `backbone dlq redrive` does it, by hand or as
// the scheduled job (--retryable): select the letters, keep the retryable
// ones whose target is healthy, check that the error topic takes publishes,
// redrive, and say what happened.
type Job struct {
	Store   store.Store
	Env     config.Env
	Limiter Limiter
	// IDs name the letters (MESSAGE_ID or MESSAGE_ID@DIGEST); without any,
	// Filter selects them, the oldest first.
	IDs    []string
	Filter store.DeadLetterFilter
	// Retryable, when set, keeps only what PlanRetryable lets through.
	Retryable *Retryable
	DryRun    bool
	// Connect opens the error topic once there is something to redrive:
	// it checks that the topic takes publishes and returns a guarded
	// publisher (unused in a dry run), what the check found, and how to
	// close it.
	Connect func(ctx context.Context) (pub publish.Publisher, checked string, closeFn func(), err error)
	// Each sees every outcome as it happens. Stdout gets the line saying
	// that nothing matched, Stderr the progress.
	Each           func(Outcome)
	Stdout, Stderr io.Writer
}

// Retryable are PlanRetryable's settings.
type Retryable struct {
	MaxRedrives int
	Checks      map[string]HealthCheck
}

// Run runs the job. Its error counts what was not redriven (skipped, failed,
// held back), after everything else was, or says why nothing could be.
func (j Job) Run(ctx context.Context) error {
	// The oldest matches: a redrive replays in version order, and leaving
	// out the oldest of a record would turn its newer ones into gaps.
	f := j.Filter
	f.OldestFirst = true
	letters, err := Select(ctx, j.Store, j.IDs, f)
	if err != nil {
		return err
	}
	if len(j.IDs) == 0 && len(letters) == f.Limit {
		fmt.Fprintf(j.Stderr, "taking the oldest %d matches; more may match (raise --limit, or run again)\n", f.Limit)
	}
	var held []Held
	if j.Retryable != nil {
		plan, err := PlanRetryable(ctx, j.Store, letters, j.Retryable.MaxRedrives, j.Retryable.Checks)
		if err != nil {
			return err
		}
		fmt.Fprintf(j.Stderr, "retryable: %d to redrive; left alone: %d permanent or past the limit, %d redriven before\n",
			len(plan.Ready)+heldCount(plan.Held), plan.Permanent, plan.Redriven)
		for _, h := range plan.Held {
			fmt.Fprintf(j.Stderr, "holding back %d %s dead letter(s) until their target is healthy: %s\n", h.Count, Printable(h.Stage), Printable(h.Error))
		}
		letters, held = plan.Ready, plan.Held
	}
	if len(letters) == 0 {
		if len(held) > 0 {
			return fmt.Errorf("%d dead letter(s) held back: their target is not healthy yet (see above)", heldCount(held))
		}
		fmt.Fprintln(j.Stdout, "no dead letters match: nothing to redrive")
		return nil
	}

	r := &Redriver{Store: j.Store, Env: j.Env, Limiter: j.Limiter}
	if j.Retryable != nil {
		r.Note = "automatic redrive of a transient failure (--retryable)"
	}
	// Checked before anything is published, dry run or not: a redrive that
	// cannot publish must fail here, not after reporting success.
	pub, checked, closeFn, err := j.Connect(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	topic := j.Env.Names().ErrorTopic
	fmt.Fprintf(j.Stderr, "topic %s: %s\n", topic, checked)
	if !j.DryRun {
		r.Pub = pub
	}
	res, err := r.Redrive(ctx, letters, j.DryRun, j.Each)
	if j.DryRun {
		fmt.Fprintf(j.Stderr, "dry run: %d would be redriven to %s, %d skipped, %d failed; nothing published\n", res.WouldRedrive, topic, res.Skipped, res.Failed)
	} else {
		fmt.Fprintf(j.Stderr, "redrive: %d redriven to %s, %d skipped, %d failed\n", res.Redriven, topic, res.Skipped, res.Failed)
	}
	if err != nil {
		return err
	}
	if res.Failed > 0 || res.Skipped > 0 {
		return fmt.Errorf("%d dead letter(s) not redriven (%d skipped, %d failed): see above", res.Skipped+res.Failed, res.Skipped, res.Failed)
	}
	if len(held) > 0 {
		return fmt.Errorf("%d dead letter(s) held back: their target is not healthy yet (see above)", heldCount(held))
	}
	return nil
}

func heldCount(held []Held) int {
	n := 0
	for _, h := range held {
		n += h.Count
	}
	return n
}
